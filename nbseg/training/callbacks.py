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
from ..render import render_overlay

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
    """The feedback region's input (uint8 grey) and its prediction after every epoch."""

    slice_index: int
    box: tuple[int, int, int, int]
    image: np.ndarray
    truth: np.ndarray
    class_colors: list[str]
    predictions: dict[int, np.ndarray] = field(default_factory=dict)

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
        return encode_png(self.rgb(epoch, opacity))

    def export_png(self, path: str | Path, epoch: int | None = None, opacity: float = 0.5) -> Path:
        """Write the feedback image of ``epoch`` as PNG (Dragonfly: *Export epoch image*)."""
        return atomic_write_bytes(path, self.png(epoch, opacity))


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
@dataclass
class Checkpoint:
    epoch: int
    metrics: dict[str, float]
    state: dict[str, torch.Tensor]
    reason: str

    @property
    def size_bytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for t in self.state.values()))


class CheckpointCache:
    """Model states kept in memory at the best (and last) epochs, within a size budget.

    A new state is kept whenever the monitored metric improves (``reason="best"``); the last
    epoch is always kept (``reason="last"``, replacing the previous last). When over budget,
    the oldest non-best states are dropped first. Checkpoints are marked on the live graph.
    """

    def __init__(self, budget_bytes: int, monitor: str = "val_loss", min_delta: float = 0.0):
        self.budget_bytes = int(budget_bytes)
        self.monitor = monitor
        self.mode = "min" if "loss" in monitor else "max"
        self.min_delta = min_delta
        self.entries: list[Checkpoint] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self._lock = threading.Lock()

    def _improves(self, value: float) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.best_value is None:
            return True
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def consider(self, epoch: int, metrics: dict[str, float], network: torch.nn.Module) -> bool:
        """Store the network's state if ``epoch`` is the best so far; keep it as last anyway."""
        value = metrics.get(self.monitor)
        best = value is not None and self._improves(float(value))
        state = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
        with self._lock:
            self.entries = [e for e in self.entries if e.reason != "last"]
            if best and value is not None:
                self.best_value, self.best_epoch = float(value), epoch
            self.entries.append(Checkpoint(epoch, dict(metrics), state, "best" if best else "last"))
            self._evict()
        return best

    def _evict(self) -> None:
        while self.total_bytes > self.budget_bytes and len(self.entries) > 1:
            victims = [e for e in self.entries if e.epoch != self.best_epoch]
            if not victims:
                break
            self.entries.remove(victims[0])

    @property
    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries)

    @property
    def epochs(self) -> list[int]:
        with self._lock:
            return [e.epoch for e in self.entries if e.reason == "best"]

    def list(self) -> list[dict[str, Any]]:
        """One row per cached state: epoch, reason, size, monitored value."""
        with self._lock:
            return [
                {
                    "epoch": e.epoch,
                    "reason": e.reason,
                    "size_mb": e.size_bytes / 2**20,
                    self.monitor: e.metrics.get(self.monitor),
                }
                for e in self.entries
            ]

    def get(self, epoch: int) -> Checkpoint:
        with self._lock:
            for e in self.entries:
                if e.epoch == epoch:
                    return e
            have = [e.epoch for e in self.entries]
        raise InputError(f"No checkpoint of epoch {epoch} in the cache; cached epochs: {have}.")

    def load_into(self, model: Model, epoch: int) -> Model:
        """Put the weights of ``epoch`` into ``model`` (in place) and return it."""
        model.network.load_state_dict(self.get(epoch).state)
        return model

    def model_at(self, model: Model, epoch: int) -> Model:
        """A copy of ``model`` holding the weights of ``epoch``."""
        m = model.copy()
        self.load_into(m, epoch)
        m.history = [h for h in m.history if h.get("epoch", 0) <= epoch]
        return m

    def save_copy(self, model: Model, epoch: int, path: str | Path) -> Path:
        """Save a copy of ``model`` with the weights of ``epoch`` (Dragonfly: *Save a copy*)."""
        m = self.model_at(model, epoch)
        m.spec = copy.deepcopy(m.spec)
        if not m.spec.name.endswith(f"epoch {epoch}"):
            m.spec.name = f"{m.spec.name} (epoch {epoch})"
        return m.save(path)


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
    ) -> None:
        self.model = model
        self.listeners = list(listeners)
        self.stop_event = stop_event
        self.cache = cache
        self.feedback = feedback
        self.feedback_history = feedback_history
        self.epoch_offset = epoch_offset
        self.history: list[dict[str, Any]] = []
        #: epochs whose end was reached, and the weights at the end of the last of them
        self.completed_epochs = 0
        self.last_completed_state: dict[str, torch.Tensor] | None = None
        self.stopped_by_user = False
        self._t0 = 0.0
        self._epoch_t0 = 0.0

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

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        batches = int(trainer.num_training_batches)  # finite: nbseg's loaders have a length
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
                eta_s=(total - done) / rate if rate else None,
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
        epoch = self.epoch_offset + trainer.current_epoch + 1
        record: dict[str, Any] = {"epoch": epoch}
        record.update({k: v for k, v in sorted(metrics.items())})
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
            record["checkpoint"] = self.cache.consider(epoch, metrics, self.model.network)
        self.history.append(record)
        self.completed_epochs = len(self.history)
        self.last_completed_state = {
            k: v.detach().clone() for k, v in self.model.network.state_dict().items()
        }
        self._notify("on_epoch_end", dict(record), None if pred is None else pred.copy())
