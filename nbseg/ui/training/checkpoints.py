"""`CheckpointView`: the checkpoint cache after training — choose an epoch, load its weights
into the model or save a copy of the model with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ...errors import InputError
from ...training.callbacks import CheckpointCache
from ...training.run import TrainingResult
from ..state import Workspace
from ..style import MessageBox, section
from .common import NeedResult, reporting_button, target, with_epoch


class CheckpointView:
    """The cached epochs of the last training (best first chosen).

    Attributes: ``checkpoint_select`` (Dropdown of epochs), ``load_checkpoint_button``,
    ``save_copy_path``, ``save_copy_button``, ``widget`` (the section).
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
        """List the cached epochs of ``result`` (with the monitored value), the best chosen."""
        cache = result.checkpoints
        options: list[tuple[str, int]] = []
        if cache is not None:
            for row in cache.list():
                value = row.get(cache.monitor)
                shown = "" if value is None else f", {cache.monitor} {value:.4g}"
                options.append((f"epoch {row['epoch']} ({row['reason']}{shown})", row["epoch"]))
        self.checkpoint_select.options = options
        if options:
            best = cache.best_epoch if cache is not None else None
            values = [v for _, v in options]
            self.checkpoint_select.value = best if best in values else values[-1]

    def set_enabled(self, enabled: bool) -> None:
        self.load_checkpoint_button.disabled = not enabled
        self.save_copy_button.disabled = not enabled
        self.checkpoint_select.disabled = not enabled

    def _on_choice(self, _: Any) -> None:
        epoch = self.checkpoint_select.value
        if epoch is not None:
            self.save_copy_path.value = with_epoch(self.save_copy_path.value, epoch, ".nbseg")

    def _chosen(self) -> tuple[TrainingResult, CheckpointCache, int]:
        result = self._need_result("using the checkpoint cache")
        cache = result.checkpoints
        if cache is None or not cache.entries:
            raise InputError(
                "The checkpoint cache is empty (TrainingParams.checkpoint_cache_mb = 0 or no "
                "epoch finished); raise the cache size in 'Training parameters' and train again."
            )
        epoch = self.checkpoint_select.value
        if epoch is None:
            raise InputError("Choose a checkpoint in the list first.")
        return result, cache, int(epoch)

    def load(self) -> None:
        """Put the chosen epoch's weights in the model (and its history up to that epoch)."""
        result, cache, epoch = self._chosen()
        model = result.model
        cache.load_into(model, epoch)
        model.history = [dict(h) for h in result.history if int(h.get("epoch", 0)) <= epoch]
        self.workspace.set_model(model)
        self.message.show(
            f"Loaded the weights of epoch {epoch} into model {model.name!r}; save it with "
            "'Save model' to keep them.",
            "info",
        )

    def save_copy(self) -> Path:
        """Save a copy of the model with the chosen epoch's weights."""
        result, cache, epoch = self._chosen()
        path = target(self.save_copy_path.value, "the model copy", ".nbseg")
        out = cache.save_copy(result.model, epoch, path)
        self.message.show(f"Saved a copy of the model with the weights of epoch {epoch} to {out}.")
        return out
