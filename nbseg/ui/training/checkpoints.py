"""`CheckpointView`: the checkpoint cache after training — choose an epoch, load its weights
into the model or save a copy of the model with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ...errors import InputError
from ...training.callbacks import CheckpointCache, history_until
from ...training.run import TrainingResult
from ..state import Workspace
from ..style import MessageBox, section
from .common import NeedResult, reporting_button, target, with_epoch


class CheckpointView:
    """The states in the checkpoint cache — of every run of the session — named by run and
    epoch ("run 2 · epoch 3 — best, val_loss 0.4534"), the best of them chosen.

    Attributes: ``checkpoint_select`` (Dropdown whose values are ``(run, epoch)``),
    ``load_checkpoint_button``, ``save_copy_path``, ``save_copy_button``, ``widget`` (the
    section).
    """

    def __init__(self, message: MessageBox, need_result: NeedResult, workspace: Workspace) -> None:
        self.message = message
        self.workspace = workspace
        self._need_result = need_result
        self.checkpoint_select = widgets.Dropdown(options=[], layout=widgets.Layout(width="300px"))
        self.checkpoint_select.observe(self._on_choice, "value")
        self.load_checkpoint_button = reporting_button(
            message, "Load checkpoint", "upload", self.load, "Put these weights in the model"
        )
        self.save_copy_path = widgets.Text("checkpoint.nbseg", layout=widgets.Layout(width="220px"))
        self.save_copy_button = reporting_button(
            message,
            "Save copy",
            "copy",
            self.save_copy,
            "Save a copy of the model with these weights",
        )
        self.widget = section(
            "Checkpoint cache",
            widgets.HBox([self.checkpoint_select, self.load_checkpoint_button]),
            widgets.HBox([self.save_copy_path, self.save_copy_button]),
        )

    def clear(self) -> None:
        self.checkpoint_select.options = []

    def fill(self, result: TrainingResult) -> None:
        """List the states in ``result``'s checkpoint cache (with the monitored value), the
        best chosen."""
        cache = result.checkpoints
        options: list[tuple[str, tuple[int, int]]] = []
        chosen = None
        if cache is not None:
            for row in cache.list():
                value = row.get(cache.monitor)
                shown = "" if value is None else f", {cache.monitor} {value:.4g}"
                key = (int(row["run"]), int(row["epoch"]))
                options.append((f"{row['name']} — {row['reason']}{shown}", key))
                if row["best"]:
                    chosen = key
        self.checkpoint_select.options = options
        if options:
            self.checkpoint_select.value = chosen or options[-1][1]

    def set_enabled(self, enabled: bool) -> None:
        self.load_checkpoint_button.disabled = not enabled
        self.save_copy_button.disabled = not enabled
        self.checkpoint_select.disabled = not enabled

    def _on_choice(self, _: Any) -> None:
        key = self.checkpoint_select.value
        if key is not None:
            self.save_copy_path.value = with_epoch(self.save_copy_path.value, key[1], ".nbseg")

    def _chosen(self) -> tuple[TrainingResult, CheckpointCache, int, int]:
        result = self._need_result("using the checkpoint cache")
        cache = result.checkpoints
        if cache is None or not cache.entries:
            raise InputError(
                "The checkpoint cache is empty (TrainingParams.checkpoint_cache_mb = 0 or no "
                "epoch finished); raise the cache size in 'Training parameters' and train again."
            )
        key = self.checkpoint_select.value
        if key is None:
            raise InputError("Choose a checkpoint in the list first.")
        return result, cache, int(key[0]), int(key[1])

    def load(self) -> None:
        """Put the chosen state's weights in the model (and its history up to that epoch)."""
        result, cache, run, epoch = self._chosen()
        model = result.model
        cache.load_into(model, epoch, run)
        model.history = history_until(result.history, epoch, run)
        self.workspace.set_model(model)
        self.message.show(
            f"Loaded the weights of run {run} · epoch {epoch} into model {model.name!r}; save "
            "it with 'Save model' to keep them.",
            "info",
        )

    def save_copy(self) -> Path:
        """Save a copy of the model with the chosen state's weights."""
        result, cache, run, epoch = self._chosen()
        path = target(self.save_copy_path.value, "the model copy", ".nbseg")
        model = result.model.copy()
        model.history = history_until(result.history, epoch, run)
        out = cache.save_copy(model, epoch, path, run)
        self.message.show(
            f"Saved a copy of the model with the weights of run {run} · epoch {epoch} to {out}."
        )
        return out
