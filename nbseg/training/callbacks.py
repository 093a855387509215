"""Live feedback during training: listeners, the feedback region, the checkpoint cache, Stop.

Listeners (:class:`TrainingListener`) are what widgets and scripts subscribe to. They are
called on the training thread with *copies* (floats, small uint8 arrays), never the model,
so a listener must only store values or set events (widgets coalesce and draw elsewhere).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch

from .._files import atomic_write_bytes
from .._png import encode_png
from ..errors import InputError
from ..inference.predictor import VolumePredictor
from ..inference.tiling import default_window, pad_to_window
from ..models.registry import size_divisor
from ..progress import Progress
from ..render import legend_strip, render_overlay, upscale_nearest

if TYPE_CHECKING:
    from ..data.patches import PreparedSet
    from ..model import Model
    from .run import TrainingResult


# -- listener protocol -------------------------------------------------------------------
class TrainingListener:
    """Base class of training listeners; override the events you need.

    Events (all on the training thread):
    ``on_train_start(info)``, ``on_batch_end(progress)``, ``on_epoch_end(record, feedback)``,
    ``on_train_end(result)``, ``on_error(error)``.
    """

    def on_train_start(self, info: dict[str, Any]) -> None:
        """``info``: epochs, steps_per_epoch, class_names, class_colors, feedback input."""

    def on_batch_end(self, progress: Progress) -> None:
        """``progress``: a :class:`~nbseg.progress.Progress` record (unit ``"batch"``: done
        and total batches of the run, rate, ``eta_s``, ``elapsed_s``, ``stage`` "epoch 3/20")
        whose ``extra`` holds ``epoch``, ``epochs``, ``batch``, ``batches`` and ``loss``
        (``progress["epoch"]`` reads them)."""

    def on_epoch_end(self, record: dict[str, Any], feedback: np.ndarray | None) -> None:
        """``record``: this epoch's metrics (see :func:`nbseg.train`); ``feedback``: the
        feedback region's predicted class ids (uint8, H × W) or None."""

    def on_train_end(self, result: TrainingResult) -> None:
        """``result``: the :class:`TrainingResult`."""

    def on_error(self, error: BaseException) -> None:
        """Training failed with ``error``."""


# -- feedback region ---------------------------------------------------------------------
@dataclass
class FeedbackRegion:
    """Dragonfly's *visual feedback* region: a rectangle on one slice of a training set.

    ``box`` is ``(y0, y1, x0, x1)`` in voxels (end exclusive); ``None`` = a central square
    of at most 256 × 256. ``slice_index`` defaults to the middle labelled slice.
    """

    training_set: int = 0
    slice_index: int | None = None
    box: tuple[int, int, int, int] | None = None

    def resolve(self, ps: PreparedSet) -> tuple[int, tuple[int, int, int, int]]:
        nz, ny, nx = ps.shape
        z = self.slice_index
        if z is None:
            labelled = np.flatnonzero((ps.labels >= 0).any(axis=(1, 2)))
            z = int(labelled[len(labelled) // 2]) if len(labelled) else nz // 2
        if not 0 <= z < nz:
            raise InputError(f"Feedback slice {z} is outside 0 … {nz - 1}.")
        if self.box is None:
            h, w = min(ny, 256), min(nx, 256)
            y0, x0 = (ny - h) // 2, (nx - w) // 2
            box = (y0, y0 + h, x0, x0 + w)
        else:
            y0, y1, x0, x1 = (int(v) for v in self.box)
            y0, x0 = max(0, y0), max(0, x0)
            y1, x1 = min(ny, y1), min(nx, x1)
            if y1 - y0 < 4 or x1 - x0 < 4:
                raise InputError(
                    f"Feedback box {self.box} is empty or smaller than 4 × 4 inside a slice of "
                    f"{ny} × {nx}; drag a larger rectangle."
                )
            box = (y0, y1, x0, x1)
        return z, box


@dataclass
class FeedbackHistory:
    """The feedback region's input (uint8 grey) and its prediction after every epoch of one
    training run (``run``; ``class_names`` name the colours in exported images)."""

    slice_index: int
    box: tuple[int, int, int, int]
    image: np.ndarray
    truth: np.ndarray
    class_colors: list[str]
    predictions: dict[int, np.ndarray] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    run: int = 1

    #: the long side, in pixels, that exported images are enlarged to at least
    EXPORT_SIDE = 512

    @property
    def epochs(self) -> list[int]:
        return sorted(self.predictions)

    def rgb(self, epoch: int | None = None, opacity: float = 0.5) -> np.ndarray:
        """Overlay of the prediction of ``epoch`` (default: latest) on the input."""
        if not self.predictions:
            return render_overlay(self.image, None, self.class_colors)
        epoch = self.epochs[-1] if epoch is None else epoch
        if epoch not in self.predictions:
            raise InputError(f"No feedback image for epoch {epoch}; epochs: {self.epochs}.")
        pred = self.predictions[epoch].astype(np.int16)
        return render_overlay(self.image, pred, self.class_colors, opacity)

    def png(self, epoch: int | None = None, opacity: float = 0.5) -> bytes:
        """The overlay of :meth:`rgb` as PNG, one pixel per voxel."""
        return encode_png(self.rgb(epoch, opacity))

    def figure(
        self,
        epoch: int | None = None,
        opacity: float = 0.5,
        min_side: int | None = None,
        legend: bool = True,
    ) -> np.ndarray:
        """The overlay of ``epoch`` for a report: enlarged (nearest neighbour, a whole factor)
        to a long side of at least ``min_side`` pixels (default :attr:`EXPORT_SIDE`; native
        resolution when that is larger), with a legend below it naming the run, the epoch,
        the slice and each class's colour (uint8 ``(H, W, 3)``)."""
        rgb = upscale_nearest(
            self.rgb(epoch, opacity), self.EXPORT_SIDE if min_side is None else min_side
        )
        if not legend:
            return rgb
        shown = (self.epochs[-1] if self.predictions else None) if epoch is None else epoch
        title = f"run {self.run}" + ("" if shown is None else f" · epoch {shown}")
        title += f" · slice {self.slice_index}"
        names = list(self.class_names) or [f"class {i}" for i in range(len(self.class_colors))]
        scale = 2 if rgb.shape[1] >= 400 else 1
        strip = legend_strip(rgb.shape[1], names, self.class_colors, title, scale)
        return np.concatenate([rgb, strip], axis=0)

    def export_png(
        self,
        path: str | Path,
        epoch: int | None = None,
        opacity: float = 0.5,
        min_side: int | None = None,
        legend: bool = True,
    ) -> Path:
        """Write the feedback image of ``epoch`` as PNG (Dragonfly: *Export epoch image*):
        :meth:`figure`, at least :attr:`EXPORT_SIDE` pixels on the long side with a legend;
        ``min_side=1, legend=False`` writes one pixel per voxel."""
        image = self.figure(epoch, opacity, min_side, legend)
        return atomic_write_bytes(path, encode_png(image))


#: 2D / 2.5D feedback regions up to this many pixels are predicted in a single pass (an eval
#: pass over 512² holds fewer activations than a training step of 8 × 128² patches)
SINGLE_PASS_PIXELS = 512 * 512


def feedback_prediction(
    model: Model,
    ps: PreparedSet,
    z: int,
    box: tuple[int, int, int, int],
    autocast: torch.dtype | None = None,
) -> np.ndarray:
    """Predict the feedback box of slice ``z`` (uint8 class ids), through the segment path.

    A 2D / 2.5D box of up to :data:`SINGLE_PASS_PIXELS` is predicted in one window covering it
    (about half the cost of overlapping training-size tiles, and more context per pixel); a
    larger box, and 3D, use :func:`~nbseg.segment`'s sliding window.

    ``autocast``: the reduced precision the network trains in (``torch.bfloat16`` under
    ``bf16-mixed``), used for this preview too — it shows what the training computes, at
    about half the cost of a float32 pass.
    """

    y0, y1, x0, x1 = box
    spec = model.spec
    window = default_window(model, ps.shape)
    if spec.input_dimension == "3D":
        wz = min(window[0], ps.shape[0])
        lo = max(0, min(z - wz // 2, ps.shape[0] - wz))
        vol = ps.image[:, lo : lo + wz, y0:y1, x0:x1]
        window = (vol.shape[1], *window[1:]) if vol.shape[1] < window[0] else window
        zi = None
        row = z - lo
    elif spec.input_dimension == "2.5D":
        reach = max(abs(o) for o in spec.slice_offsets)
        lo, hi = max(0, z - reach), min(ps.shape[0], z + reach + 1)
        vol = ps.image[:, lo:hi, y0:y1, x0:x1]
        zi, row = [z - lo], 0
    else:
        vol = ps.image[:, z : z + 1, y0:y1, x0:x1]
        zi, row = [0], 0
    window = (
        window[0],
        min(window[1], _ceil_to(vol.shape[2], 8)),
        min(window[2], _ceil_to(vol.shape[3], 8)),
    )

    div = size_divisor(spec)
    window = (window[0], _ceil_to(window[1], div), _ceil_to(window[2], div))
    if spec.input_dimension == "3D":
        window = (_ceil_to(window[0], div), window[1], window[2])
    else:
        # a region up to SINGLE_PASS_PIXELS is predicted in one pass of the fully convolutional
        # network: the same pixels as the sliding window at half its cost or less (no
        # overlapping tiles), and every pixel sees the whole region as context
        whole = (_ceil_to(vol.shape[2], div), _ceil_to(vol.shape[3], div))
        if whole[0] * whole[1] <= SINGLE_PASS_PIXELS:
            window = (window[0], max(window[1], whole[0]), max(window[2], whole[1]))
    vol_p, _, _shape = pad_to_window(vol, None, window, spec.input_dimension == "3D")
    predictor = VolumePredictor(model, window, overlap=0.25, batch_size=4)
    device = next(model.network.parameters()).device.type
    with torch.autocast(device, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        acc, _ = predictor.predict(vol_p, None, z_indices=zi)
    pred = acc[:, row, : y1 - y0, : x1 - x0].argmax(0)
    return pred.astype(np.uint8)


def _autocast_dtype(trainer: pl.Trainer) -> torch.dtype | None:
    """The autocast dtype of the trainer's mixed precision, None in full precision."""
    precision = str(getattr(trainer, "precision", ""))
    if precision.startswith("bf16-mixed"):
        return torch.bfloat16
    if precision.startswith("16-mixed"):
        return torch.float16
    return None


def _ceil_to(v: int, d: int) -> int:
    return int(math.ceil(v / d) * d)


# -- checkpoint cache --------------------------------------------------------------------
def row_run(row: dict[str, Any]) -> int:
    """The training run a history row belongs to (rows written before runs were numbered:
    run 1)."""
    try:
        return int(row.get("run", 1))
    except (TypeError, ValueError):
        return 1


def next_run(history: Sequence[dict[str, Any]], cache: CheckpointCache | None = None) -> int:
    """The number of the next training run of a model with this ``history`` (and whose
    earlier runs' states are in ``cache``): one more than any run seen."""
    runs = [row_run(r) for r in history]
    if cache is not None:
        runs.extend(cache.runs)
    return max(runs, default=0) + 1


def history_until(history: Sequence[dict[str, Any]], epoch: int, run: int) -> list[dict[str, Any]]:
    """The rows of ``history`` up to and including epoch ``epoch`` of run ``run`` (the
    history a model has with that epoch's weights); rows up to ``epoch`` when the history
    does not hold that run's epoch (it was trained on another branch)."""
    rows = list(history)
    for i in range(len(rows) - 1, -1, -1):
        r = rows[i]
        if int(r.get("epoch", 0)) == epoch and row_run(r) == run:
            return [dict(h) for h in rows[: i + 1]]
    return [dict(h) for h in rows if int(h.get("epoch", 0)) <= epoch]


@dataclass
class Checkpoint:
    """One cached model state: the weights at the end of epoch ``epoch`` of training run
    ``run`` (``batches``: ``(trained, per epoch)`` when Stop ended that epoch early).

    ``reason`` says why it was kept: ``"improved"`` (the run's monitored metric improved)
    or ``"last"`` (the run's latest epoch)."""

    epoch: int
    metrics: dict[str, float]
    state: dict[str, torch.Tensor]
    reason: str
    run: int = 1
    batches: tuple[int, int] | None = None

    @property
    def size_bytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for t in self.state.values()))

    @property
    def key(self) -> tuple[int, int]:
        """``(run, epoch)``: what names a checkpoint across the runs of a session."""
        return (self.run, self.epoch)

    @property
    def name(self) -> str:
        """``"run 2 · epoch 5"`` (``"run 2 · epoch 5 (7/16 batches)"`` for a partial epoch)."""
        part = f" ({self.batches[0]}/{self.batches[1]} batches)" if self.batches else ""
        return f"run {self.run} · epoch {self.epoch}{part}"


class CheckpointCache:
    """Model states kept in memory over the training runs of a session, within a size budget.

    Each run (:meth:`begin_run`; :func:`nbseg.train` calls it) keeps a state whenever its
    monitored metric improves (``reason="improved"``) and always its latest epoch
    (``reason="last"``, replacing the run's previous last). States of earlier runs stay: pass
    the cache to the next :func:`nbseg.train` (``checkpoints=``) to keep them. A state is
    named by run and epoch (:attr:`Checkpoint.name`); :attr:`best` is the state with the best
    monitored value of all those in the cache. When over budget, the oldest states go first,
    never the best one, the current run's best or its latest.
    """

    def __init__(self, budget_bytes: int, monitor: str = "val_loss", min_delta: float = 0.0):
        self.budget_bytes = int(budget_bytes)
        self.monitor = monitor
        self.min_delta = min_delta
        self.entries: list[Checkpoint] = []
        #: the run that :meth:`consider` adds to (0 before the first :meth:`begin_run`)
        self.run = 0
        self._run_best: float | None = None
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        """``"min"`` for a loss, else ``"max"``."""
        return "min" if "loss" in self.monitor else "max"

    def begin_run(
        self,
        run: int | None = None,
        monitor: str | None = None,
        min_delta: float | None = None,
        budget_bytes: int | None = None,
    ) -> int:
        """Start adding the states of a new training run (number ``run``, default: one more
        than any run in the cache); the earlier runs' states stay. Returns the run number."""
        with self._lock:
            newest = max((e.run for e in self.entries), default=0)
            self.run = max(int(run or 0), newest + 1, self.run + 1 if run is None else 0)
            if monitor is not None:
                self.monitor = monitor
            if min_delta is not None:
                self.min_delta = float(min_delta)
            if budget_bytes is not None:
                self.budget_bytes = int(budget_bytes)
            self._run_best = None
            return self.run

    def _value(self, e: Checkpoint) -> float | None:
        v = e.metrics.get(self.monitor)
        if v is None or not math.isfinite(float(v)):
            return None
        return float(v)

    def _improves(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        if self._run_best is None:
            return True
        if self.mode == "min":
            return value < self._run_best - self.min_delta
        return value > self._run_best + self.min_delta

    def consider(
        self,
        epoch: int,
        metrics: dict[str, float],
        network: torch.nn.Module,
        batches: tuple[int, int] | None = None,
    ) -> bool:
        """Keep the network's state at the end of ``epoch`` of the current run: as
        ``"improved"`` when the run's monitored metric improved (returns True), else as the
        run's ``"last"``."""
        if self.run == 0:
            self.begin_run()
        value = metrics.get(self.monitor)
        improved = value is not None and self._improves(float(value))
        state = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
        with self._lock:
            run = self.run
            self.entries = [e for e in self.entries if not (e.run == run and e.reason == "last")]
            if improved and value is not None:
                self._run_best = float(value)
            self.entries.append(
                Checkpoint(
                    epoch, dict(metrics), state, "improved" if improved else "last", run, batches
                )
            )
            self._evict()
        return improved

    def _best(self, entries: Sequence[Checkpoint]) -> Checkpoint | None:
        scored = [(v, i) for i, e in enumerate(entries) if (v := self._value(e)) is not None]
        if not scored:
            return None
        pick = min(scored) if self.mode == "min" else max(scored, key=lambda s: (s[0], -s[1]))
        return entries[pick[1]]

    def _evict(self) -> None:
        keep = {id(self.entries[-1])} if self.entries else set()
        for e in (self._best(self.entries), self._best_of(self.run)):
            if e is not None:
                keep.add(id(e))
        victims = [e for e in self.entries if id(e) not in keep]
        while self.total_bytes > self.budget_bytes and victims:
            self.entries.remove(victims.pop(0))

    def _best_of(self, run: int) -> Checkpoint | None:
        return self._best([e for e in self.entries if e.run == run])

    @property
    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in list(self.entries))

    @property
    def best(self) -> Checkpoint | None:
        """The cached state with the best monitored value (over every run in the cache)."""
        with self._lock:
            return self._best(self.entries)

    @property
    def best_epoch(self) -> int | None:
        best = self.best
        return None if best is None else best.epoch

    @property
    def best_value(self) -> float | None:
        best = self.best
        return None if best is None else self._value(best)

    def best_of_run(self, run: int | None = None) -> Checkpoint | None:
        """The cached state with the best monitored value of run ``run`` (default: the
        current run)."""
        with self._lock:
            return self._best_of(self.run if run is None else run)

    @property
    def runs(self) -> list[int]:
        """The runs with a state in the cache."""
        with self._lock:
            return sorted({e.run for e in self.entries})

    @property
    def epochs(self) -> list[int]:
        """The epochs of the cached states, oldest first."""
        with self._lock:
            return [e.epoch for e in self.entries]

    @property
    def keys(self) -> list[tuple[int, int]]:
        """``(run, epoch)`` of the cached states, oldest first: what can be loaded."""
        with self._lock:
            return [e.key for e in self.entries]

    def list(self) -> list[dict[str, Any]]:
        """One row per cached state, oldest first: ``run``, ``epoch``, ``name`` ("run 2 ·
        epoch 3"), ``reason`` ("best" for :attr:`best`, else "last" for a run's latest
        epoch or "improved"; "best, last" for both), ``best``, ``last``, ``batches`` (of a
        partial epoch, else None), ``size_mb``, ``metrics`` and the monitored value."""
        with self._lock:
            best = self._best(self.entries)
            latest: dict[int, Checkpoint] = {}
            for e in self.entries:
                if e.run not in latest or e.epoch > latest[e.run].epoch:
                    latest[e.run] = e
            rows = []
            for e in self.entries:
                is_best, is_last = e is best, latest[e.run] is e
                reasons = [w for w, on in (("best", is_best), ("last", is_last)) if on]
                rows.append(
                    {
                        "run": e.run,
                        "epoch": e.epoch,
                        "name": e.name,
                        "reason": ", ".join(reasons) or "improved",
                        "best": is_best,
                        "last": is_last,
                        "batches": e.batches,
                        "size_mb": e.size_bytes / 2**20,
                        "metrics": dict(e.metrics),
                        self.monitor: e.metrics.get(self.monitor),
                    }
                )
            return rows

    def get(self, epoch: int, run: int | None = None) -> Checkpoint:
        """The state of ``epoch`` of run ``run`` (default: the latest run that has one)."""
        with self._lock:
            found = [e for e in self.entries if e.epoch == epoch and run in (None, e.run)]
            if found:
                return max(found, key=lambda e: e.run)
            have = [e.name for e in self.entries]
        which = f"epoch {epoch}" if run is None else f"run {run} · epoch {epoch}"
        raise InputError(f"No checkpoint of {which} in the cache; cached: {have or 'none'}.")

    def load_into(self, model: Model, epoch: int, run: int | None = None) -> Model:
        """Put the weights of ``epoch`` (of run ``run``) into ``model`` (in place); returns it."""
        model.network.load_state_dict(self.get(epoch, run).state)
        return model

    def model_at(self, model: Model, epoch: int, run: int | None = None) -> Model:
        """A copy of ``model`` holding the weights of ``epoch`` (of run ``run``) and the
        history up to it."""
        ck = self.get(epoch, run)
        m = model.copy()
        m.network.load_state_dict(ck.state)
        m.history = history_until(m.history, ck.epoch, ck.run)
        return m

    def save_copy(self, model: Model, epoch: int, path: str | Path, run: int | None = None) -> Path:
        """Save a copy of ``model`` with the weights of ``epoch`` (Dragonfly: *Save a copy*)."""
        m = self.model_at(model, epoch, run)
        m.spec = copy.deepcopy(m.spec)
        if not m.spec.name.endswith(f"epoch {epoch})"):
            m.spec.name = f"{m.spec.name} (epoch {epoch})"
        return m.save(path)

    def check_network(self, network: torch.nn.Module) -> None:
        """Raise an InputError when the cached states are not of ``network``'s shape (a
        cache of another model)."""
        with self._lock:
            first = self.entries[0] if self.entries else None
        if first is None:
            return
        ours = {k: tuple(v.shape) for k, v in network.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in first.state.items()}
        if ours != theirs:
            raise InputError(
                f"checkpoints: the cache holds states of another network ({first.name}); "
                "pass the cache of this model's earlier runs, or None for a new one."
            )


# -- the Lightning bridge ----------------------------------------------------------------
class WeightAverage(pl.Callback):
    """Exponential moving average (EMA) of the network's weights, used for evaluation.

    After every optimiser step the average moves towards the live weights:
    ``avg ← avg + (1 − d) · (live − avg)`` with ``d = min(decay, (1 + n) / (10 + n))`` after
    ``n`` steps (a short warm-up, so early averages do not keep the random initialisation).
    Floating-point buffers (batch-norm statistics) are averaged too.

    The validation pass, the epoch-end callbacks placed after this one (feedback prediction,
    checkpoint cache, early stopping) and the trained model see the averaged weights; each
    training epoch resumes from the live weights. On an exception the live weights are put
    back. ``decay`` 0.99–0.999 averages over about 100–1000 steps.
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self._live: list[torch.Tensor] = []
        self._average: list[torch.Tensor] = []
        self._backup: list[torch.Tensor] | None = None

    @staticmethod
    def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
        state = module.state_dict(keep_vars=True)
        return [t.data for t in state.values() if torch.is_floating_point(t)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        network = getattr(pl_module, "network", pl_module)
        self._live = self._tensors(network)
        self._average = [t.detach().clone() for t in self._live]
        self._backup = None
        self.updates = 0

    @torch.no_grad()
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._backup is not None or not self._live:
            return
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_(self._average, self._live, 1.0 - d)

    @torch.no_grad()
    def swap_in(self) -> None:
        """Put the averaged weights into the network (the live ones are kept aside)."""
        if self._backup is None and self._live:
            self._backup = [t.clone() for t in self._live]
            torch._foreach_copy_(self._live, self._average)

    @torch.no_grad()
    def swap_out(self) -> None:
        """Put the live weights back (after :meth:`swap_in`)."""
        if self._backup is not None:
            torch._foreach_copy_(self._live, self._backup)
            self._backup = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self.updates:
            self.swap_in()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.updates:
            self.swap_in()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.swap_out()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.updates:
            self.swap_in()
        self._backup = None  # the averaged weights stay: they are the trained model

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.swap_out()


class LiveFeedback(pl.Callback):
    """The one Lightning callback of nbseg: history, feedback, checkpoints, stop, listeners.

    Order at each epoch end: metrics record → feedback prediction → checkpoint cache →
    listeners. A set ``stop_event`` becomes ``trainer.should_stop`` after the current batch.
    """

    def __init__(
        self,
        model: Model,
        listeners: Sequence[TrainingListener],
        stop_event: threading.Event,
        cache: CheckpointCache | None,
        feedback: tuple[PreparedSet, int, tuple[int, int, int, int]] | None,
        epoch_offset: int,
        feedback_history: FeedbackHistory | None,
        run: int = 1,
    ) -> None:
        self.model = model
        self.listeners = list(listeners)
        self.stop_event = stop_event
        self.cache = cache
        self.feedback = feedback
        self.feedback_history = feedback_history
        self.epoch_offset = epoch_offset
        #: the training run's number (the ``run`` of its history rows and checkpoints)
        self.run = run
        self.history: list[dict[str, Any]] = []
        #: epochs whose end was reached, and the weights at the end of the last of them
        self.completed_epochs = 0
        self.last_completed_state: dict[str, torch.Tensor] | None = None
        self.stopped_by_user = False
        self._t0 = 0.0
        self._epoch_t0 = 0.0
        self._epoch_batches = 0

    def _notify(self, event: str, *args: Any) -> None:
        for listener in self.listeners:
            getattr(listener, event)(*args)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._notify(
            "on_train_start",
            {
                "epochs": trainer.max_epochs,
                "first_epoch": self.epoch_offset + 1,
                "run": self.run,
                "steps_per_epoch": trainer.num_training_batches,
                "class_names": list(self.model.class_names),
                "class_colors": list(self.model.class_colors),
                "feedback_image": None
                if self.feedback_history is None
                else self.feedback_history.image.copy(),
            },
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_t0 = time.perf_counter()
        self._epoch_batches = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        batches = int(trainer.num_training_batches)  # finite: nbseg's loaders have a length
        self._epoch_batches = batch_idx + 1
        max_epochs = trainer.max_epochs
        assert max_epochs is not None  # nbseg.train sets it
        elapsed = time.perf_counter() - self._t0
        done = trainer.current_epoch * batches + batch_idx + 1
        total = max_epochs * batches
        loss = outputs["loss"].item() if isinstance(outputs, dict) and "loss" in outputs else None
        epoch = self.epoch_offset + trainer.current_epoch + 1
        epochs = self.epoch_offset + max_epochs
        rate = done / elapsed if elapsed > 0 else None
        self._notify(
            "on_batch_end",
            Progress(
                done=done,
                total=total,
                unit="batch",
                rate=rate,
                eta_s=_eta(trainer, (total - done) / rate) if rate else None,
                elapsed_s=elapsed,
                stage=f"epoch {epoch}/{epochs}",
                extra={
                    "epoch": epoch,
                    "epochs": epochs,
                    "batch": batch_idx + 1,
                    "batches": batches,
                    "loss": loss,
                },
            ),
        )
        if self.stop_event.is_set():  # checked after the listeners: a Stop they saw counts now
            self.stopped_by_user = True
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(pl_module, "nan_detected", None):
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        # the module logs the epoch's loss after this hook (Lightning runs callbacks first)
        epoch_loss = getattr(pl_module, "epoch_loss", None)
        if callable(epoch_loss) and (loss := epoch_loss()) is not None:
            metrics["loss"] = loss
        epoch_metrics = getattr(pl_module, "epoch_metrics", None)  # e.g. the pseudo-label loss
        if callable(epoch_metrics):
            metrics.update(epoch_metrics())
        epoch = self.epoch_offset + trainer.current_epoch + 1
        record: dict[str, Any] = {"epoch": epoch, "run": self.run}
        record.update({k: v for k, v in sorted(metrics.items())})
        per_epoch = int(trainer.num_training_batches)
        partial = None
        if 0 < self._epoch_batches < per_epoch:  # Stop (or max_time) ended the epoch early
            partial = (self._epoch_batches, per_epoch)
            record["batches"], record["epoch_batches"] = partial
        record["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        record["epoch_time"] = time.perf_counter() - self._epoch_t0
        record["time"] = time.perf_counter() - self._t0
        pred = None
        if self.feedback is not None:
            ps, z, box = self.feedback
            pred = feedback_prediction(self.model, ps, z, box, _autocast_dtype(trainer))
            if self.feedback_history is not None:
                self.feedback_history.predictions[epoch] = pred
        record["checkpoint"] = False
        if self.cache is not None:
            record["checkpoint"] = self.cache.consider(epoch, metrics, self.model.network, partial)
        self.history.append(record)
        self.completed_epochs = len(self.history)
        self.last_completed_state = {
            k: v.detach().clone() for k, v in self.model.network.state_dict().items()
        }
        self._notify("on_epoch_end", dict(record), None if pred is None else pred.copy())


def _eta(trainer: pl.Trainer, by_epochs: float) -> float:
    """Seconds left: by the epochs, or by the time limit (``max_minutes``, Lightning's
    ``Timer``) when that ends the run first."""
    from pytorch_lightning.callbacks import Timer

    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, Timer):
            left = cb.time_remaining("train")
            if left is not None:
                return min(by_epochs, max(0.0, float(left)))
    return by_epochs
