"""`nbseg.train`: one training, blocking (`nbseg.training.job.TrainingRun` runs it in a thread)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from .._files import atomic_write_bytes, now_iso
from ..data.multiroi import default_class_names
from ..data.patches import PreparedSet, patch_shape
from ..data.trainingset import (
    Normalisation,
    TrainingSet,
    as_input_list,
    channel_note,
    check_finite,
    check_patch_size,
)
from ..devices import accelerator_for, resolve_precision
from ..errors import InputError, NbsegError, TrainingError
from ..models.blocks import channels_last_nd, guard_cpu_bf16_conv3d
from ..models.spec import ModelSpec
from .callbacks import (
    CheckpointCache,
    FeedbackHistory,
    FeedbackRegion,
    LiveFeedback,
    TrainingListener,
    WeightAverage,
    next_run,
    row_run,
)
from .memory import MemoryEstimate
from .module import SegmentationDataModule, SegmentationModule
from .params import TrainingParams, class_weight_vector
from .teacher import blend_wins

if TYPE_CHECKING:
    from ..model import Model

    _ModelView = Model  # what _TrainingView stands in for
else:
    _ModelView = object

for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)
# nbseg augments on the device in the module's hook by design; Lightning warns about it.
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")


@dataclass
class TrainingResult:
    """What a training produced: history, feedback images, checkpoints and how it ended.

    ``status`` is ``"completed"``, ``"stopped"`` (Stop was pressed), ``"early_stopped"`` or
    ``"failed"`` (``error`` says why; the model keeps its last good weights).

    ``history`` is the model's whole history (earlier runs first), ``run`` this run's number
    (:attr:`run_history` its rows), ``best_epoch`` this run's best epoch in the checkpoint
    cache, and ``checkpoints`` the cache, which holds the states of the earlier runs it was
    given too (``checkpoints.best`` is the best of them all). An epoch that Stop ended early
    is a partial row (``batches`` of ``epoch_batches`` trained, see :func:`epochs_text`).
    """

    model: Model
    history: list[dict[str, Any]]
    status: str
    duration: float
    feedback: FeedbackHistory | None = None
    checkpoints: CheckpointCache | None = None
    memory_estimate: MemoryEstimate | None = None
    error: str | None = None
    best_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    run: int | None = None

    @property
    def stopped(self) -> bool:
        return self.status == "stopped"

    @property
    def run_history(self) -> list[dict[str, Any]]:
        """The rows of this run (all of :attr:`history` when the run is not known)."""
        if self.run is None:
            return list(self.history)
        return [r for r in self.history if row_run(r) == self.run]

    @property
    def trained_text(self) -> str:
        """What this run trained, e.g. ``"4 epochs + 7/16 batches"``."""
        return epochs_text(self.run_history)

    @property
    def teacher_text(self) -> str:
        """Whether the model kept its feature teacher for the prediction, with the validation
        Dice that decided it (``teacher_blend``); "" when no teacher was fitted."""
        choice = self.extra.get("teacher") or {}
        if not choice:
            return ""
        dice = (
            f"validation Dice {choice['val_dice_network']:.3f} alone, "
            f"{choice['val_dice_blend']:.3f} with the teacher"
        )
        if choice["kept"]:
            return f"The model predicts with its feature teacher too ({dice})."
        return f"The feature teacher was not kept: the network predicts alone ({dice})."

    def metric(self, name: str) -> list[float]:
        """One metric over the epochs (NaN where missing)."""
        return [float(r.get(name, float("nan"))) for r in self.history]

    def to_csv(self, path: str | Path | None = None, digits: int | None = None) -> str:
        """The per-epoch table (epoch, lr, losses, metrics) as CSV; written to ``path`` if
        given. ``digits`` rounds to that many significant digits."""
        return history_csv(self.history, path, digits)

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        shown = {k: round(v, 4) for k, v in last.items() if k in ("loss", "val_loss", "val_dice")}
        return (
            f"<TrainingResult {self.status}: {self.trained_text} in "
            f"{self.duration:.1f} s, last {shown}, best epoch {self.best_epoch}>"
        )


def is_partial(row: dict[str, Any]) -> bool:
    """Whether a history row is an epoch that Stop (or ``max_minutes``) ended early: it holds
    ``batches`` (trained) of ``epoch_batches``."""
    try:
        return int(row.get("batches", 0)) < int(row.get("epoch_batches", 0))
    except (TypeError, ValueError):
        return False


def epochs_text(history: Sequence[dict[str, Any]]) -> str:
    """What these history rows trained: ``"5 epochs"``, ``"4 epochs + 7/16 batches"`` (a
    stopped epoch counts as its batches, never as a whole epoch), ``"7/16 batches"``."""
    full = sum(1 for r in history if not is_partial(r))
    parts = [f"{int(r['batches'])}/{int(r['epoch_batches'])}" for r in history if is_partial(r)]
    text = f"{full} epoch{'' if full == 1 else 's'}"
    if not parts:
        return text
    batches = " + ".join(parts) + " batches"
    return batches if full == 0 else f"{text} + {batches}"


def history_columns(history: Sequence[dict[str, Any]]) -> list[str]:
    first = ["epoch", "lr", "loss", "val_loss", "val_dice", "val_iou", "val_accuracy"]
    seen = [c for c in first if any(c in r for r in history)]
    rest = sorted({k for r in history for k in r} - set(seen))
    return seen + rest


def format_value(v: Any, digits: int | None) -> Any:
    if isinstance(v, float) and digits is not None:
        return float(f"{v:.{digits}g}")
    return v


def history_csv(
    history: Sequence[dict[str, Any]], path: str | Path | None = None, digits: int | None = None
) -> str:
    """Per-epoch history as CSV text (and file, atomically, when ``path`` is given)."""
    cols = history_columns(history)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in history:
        w.writerow([format_value(r.get(c, ""), digits) for c in cols])
    text = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, text.encode())
    return text


def _as_sets(sets: TrainingSet | Sequence[TrainingSet], what: str) -> list[TrainingSet]:
    if isinstance(sets, TrainingSet):
        return [sets]
    sets = list(sets)
    if not sets or not all(isinstance(s, TrainingSet) for s in sets):
        raise InputError(f"{what} must be a TrainingSet or a non-empty list of TrainingSets.")
    return sets


def _as_unlabelled(unlabelled: Any, spec: ModelSpec, params: TrainingParams) -> list[list[Any]]:
    """``unlabelled=`` as one list of input DataArrays per image, checked like an input."""
    if unlabelled is None:
        return []
    items = list(unlabelled) if isinstance(unlabelled, (list, tuple)) else [unlabelled]
    n = spec.input_count
    if n > 1 and items and not isinstance(items[0], (list, tuple)):
        items = [items]  # the inputs of one image
    out = []
    for i, item in enumerate(items):
        name = f"unlabelled[{i}]"
        inputs = as_input_list(item, name)
        if len(inputs) != n:
            raise InputError(
                f"{name} has {len(inputs)} input(s) but the model takes {n}: give each "
                f"unlabelled image as a list of its {n} inputs." + channel_note(item)
            )
        shape = inputs[0].shape
        for k, da in enumerate(inputs):
            check_finite(da, f"{name} input {k}")
            if da.shape != shape:
                raise InputError(
                    f"{name}: its inputs differ in shape ({shape} vs {da.shape}); give "
                    "inputs of one geometry."
                )
        pshape = patch_shape(spec, params.patch_for(spec))
        full = (1, *shape) if len(shape) == 2 else tuple(shape)
        sides = pshape if spec.input_dimension == "3D" else (1, *pshape[1:])
        if params.patch_size is not None and any(s < p for s, p in zip(full, sides, strict=True)):
            raise InputError(
                f"{name} of shape {tuple(shape)} is smaller than the patch {sides[-len(shape) :]}: "
                "give a larger image or a smaller patch_size."
            )
        out.append(inputs)
    return out


def channels_last_format(
    spatial_dims: int, accelerator: str, world_size: int = 1
) -> torch.memory_format | None:
    """The memory format networks train in: channels-last on CPUs and CUDA GPUs, else None.

    oneDNN and cuDNN run channels-last convolutions faster: 1.25-1.27x per step for the
    default 2D/2.5D U-Net at 8x128² and 1.24x for the 3D U-Net at 4x48³ on a 2-core AVX512
    CPU (``benchmarks/throughput.py``). Not used across processes, where DDP's gradient buckets
    expect contiguous gradients. The weights go back to the contiguous format when training
    ends, so saved files and inference are unaffected.
    """
    if accelerator not in ("cpu", "gpu") or world_size != 1:
        return None
    return channels_last_nd(spatial_dims)


def train(
    model: Model,
    training_sets: TrainingSet | Sequence[TrainingSet],
    params: TrainingParams | None = None,
    validation: float | TrainingSet | Sequence[TrainingSet] = 0.2,
    *,
    callbacks: Sequence[TrainingListener | pl.Callback] = (),
    feedback: FeedbackRegion | Literal[False] | None = None,
    stop_event: threading.Event | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    checkpoints: CheckpointCache | None = None,
    unlabelled: Any = None,
) -> TrainingResult:
    """Train ``model`` in place on one or more training sets; blocks until done.

    Three steps: :func:`prepare` validates everything and builds the data, the callbacks and
    the Lightning trainer without touching the model; :func:`fit` runs Lightning, with the
    temporary changes to the network (channels-last memory format, the bf16 ``Conv3d``
    guard) undone on every path; :func:`commit` writes the weights, normalisation, class
    names, history and params to the model.

    What the model keeps: on success or Stop, the trained weights (the best epoch with
    ``restore_best``) and the history. When the training fails (NaN loss, out of memory, a
    listener that raises) the model is left as of its **last completed epoch**: that
    epoch's weights and the history up to it, or exactly as it was before the call when no
    epoch completed; :class:`~nbseg.TrainingError` carries the result. An interrupt
    (Ctrl+C, SIGINT) behaves like Stop: the model keeps the last completed epoch (or the
    best one kept) with its history and params, then :class:`TrainingInterrupted` (a
    ``KeyboardInterrupt``) is raised with the result.

    Parameters
    ----------
    model
        From :func:`nbseg.generate_model` (or a trained model to fine-tune: its intensity
        normalisation is kept and its history continues).
    training_sets
        One :class:`TrainingSet` or a list.
    params
        :class:`TrainingParams` (default: the model's last params, else the defaults).
    validation
        A fraction of the labelled patches (``0.2``; ``0`` = none; validation patches never
        overlap training patches) or ground-truth :class:`TrainingSet` (s).
    callbacks
        :class:`TrainingListener` objects (live metrics, feedback images, progress) and/or
        Lightning callbacks.
    feedback
        The :class:`FeedbackRegion` predicted after every epoch (default: a central square
        of the first training set's middle labelled slice). ``False``: no feedback
        prediction (``result.feedback`` is None), for scripts that never show it.
    stop_event
        Set it (from any thread) to stop after the current batch, keeping the model. The
        epoch it stops in is recorded as partial (see :func:`epochs_text`).
    checkpoints
        The :class:`CheckpointCache` of this model's earlier runs (``result.checkpoints``):
        this run adds its states to it and the earlier ones stay loadable. Default: a new
        cache (none when ``params.checkpoint_cache_mb`` is 0).
    unlabelled
        Images without labels to learn from as well (pseudo-labels, see
        ``TrainingParams.semi_supervised``): a list of images (DataArrays), or for a model of
        several inputs a list of lists of inputs. With ``semi_supervised="pseudo_labels"``
        the training sets' own unlabelled voxels are used even without them.
    trainer_kwargs
        Extra :class:`pytorch_lightning.Trainer` arguments, applied last. Scale-out uses
        Lightning's own strategies through it, e.g. ``{"accelerator": "cpu", "devices": 2,
        "strategy": "ddp"}`` (one process per device; CPU uses gloo) or ``"num_nodes"``. In a
        notebook use ``"strategy": "ddp_notebook"`` (forked workers): the trained weights of
        rank 0 and its history come back to the notebook, but listeners (live graph, feedback)
        only fire in the workers. With several processes only global rank 0 runs the
        feedback prediction and the listeners; ``result.extra["global_rank"]`` and
        ``["world_size"]`` tell a script (e.g. ``nbseg train``) which process should save.

    Returns
    -------
    TrainingResult
        ``history`` has one dict per epoch: ``epoch``, ``run`` (the training run's number,
        counted over the model's runs), ``loss``, ``val_loss``, ``val_dice``, ``val_iou``,
        ``val_accuracy``, ``val_dice_<class>``, ``val_iou_<class>``, ``lr``, ``time``,
        ``checkpoint`` (the monitored metric improved and the state was cached); an epoch
        that Stop ended early also has ``batches`` and ``epoch_batches`` (trained of the
        epoch's batches).
    """
    plan = prepare(
        model,
        training_sets,
        params,
        validation,
        callbacks=callbacks,
        feedback=feedback,
        stop_event=stop_event,
        trainer_kwargs=trainer_kwargs,
        checkpoints=checkpoints,
        unlabelled=unlabelled,
    )
    outcome = fit(plan)
    return commit(plan, outcome)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl+C / SIGINT during :func:`nbseg.train`: the model was committed as after Stop;
    ``result`` is the :class:`TrainingResult`."""

    def __init__(self, result: TrainingResult) -> None:
        super().__init__("training interrupted")
        self.result = result


class _TrainingView(_ModelView):
    """What the callbacks see of the model during a training: its network, spec and names,
    with this run's normalisation and class names (the model itself changes in commit)."""

    def __init__(
        self, model: Model, normalisation: Normalisation, names: list[str], colors: list[Any]
    ) -> None:
        self._model = model
        self.normalisation = normalisation
        self.class_names = names
        self.class_colors = colors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@dataclass
class TrainingPlan:
    """Everything :func:`prepare` built for one training (nothing of it is on the model)."""

    model: Model
    params: TrainingParams
    normalisation: Normalisation
    class_names: list[str]
    class_colors: list[Any]
    datamodule: SegmentationDataModule
    module: SegmentationModule
    trainer: pl.Trainer
    accelerator: str
    live: LiveFeedback
    guard: _RankZeroGuard
    listeners: list[TrainingListener]
    cache: CheckpointCache | None
    early: pl.callbacks.EarlyStopping | None
    run: int
    feedback: FeedbackHistory | None
    estimate: MemoryEstimate | None
    record_dir: str
    started: float
    initial_state: dict[str, torch.Tensor]
    given_checkpoints: CheckpointCache | None = None


@dataclass
class FitOutcome:
    """How :func:`fit` ended: ``status`` (completed, stopped, early_stopped, failed),
    ``error`` (why it failed), ``exception`` (a listener's or Lightning's, kept for the
    error chain) and ``interrupted`` (Ctrl+C / SIGINT)."""

    status: str
    error: str | None = None
    exception: BaseException | None = None
    interrupted: bool = False


def prepare(
    model: Model,
    training_sets: TrainingSet | Sequence[TrainingSet],
    params: TrainingParams | None = None,
    validation: float | TrainingSet | Sequence[TrainingSet] = 0.2,
    *,
    callbacks: Sequence[TrainingListener | pl.Callback] = (),
    feedback: FeedbackRegion | Literal[False] | None = None,
    stop_event: threading.Event | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    checkpoints: CheckpointCache | None = None,
    unlabelled: Any = None,
) -> TrainingPlan:
    """Step 1 of :func:`train`: validate everything, build data, callbacks and the trainer.

    Raises an nbseg error for any bad input; never changes ``model``.
    """
    t0 = time.perf_counter()
    if not all(hasattr(model, a) for a in ("spec", "network", "params")):
        raise InputError(
            f"model must be an nbseg.Model (nbseg.generate_model(spec), nbseg.load_model(path)), "
            f"got {type(model).__name__}."
        )
    spec = model.spec
    params = params or model.params or TrainingParams()
    if not isinstance(params, TrainingParams):
        raise InputError(
            f"params={params!r} is not understood: pass a TrainingParams (or None for the "
            "model's last parameters)."
        )
    params.validate(spec.class_count)
    sets = _as_sets(training_sets, "training_sets")
    for ts in sets:
        ts.validate(spec.input_count, spec.class_count)
    val: float | list[TrainingSet]
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        val = float(validation)
        if not 0.0 <= val < 1.0:
            raise InputError(
                f"validation={validation!r} is invalid: give a fraction in [0, 1) of the "
                "labelled patches, or ground-truth TrainingSet(s)."
            )
    elif isinstance(validation, bool):
        raise InputError(
            f"validation={validation!r} is not understood: give a fraction such as 0.2 (0 = "
            "none) or ground-truth TrainingSet(s)."
        )
    else:
        val = _as_sets(validation, "validation")
        for ts in val:
            ts.validate(spec.input_count, spec.class_count)
    # the geometry the network can take, before torch meets it: patch sides that are
    # multiples of the size divisor, patches that fit every volume, volumes for 3D models
    check_patch_size(spec, params.patch_size)
    for ts in [*sets, *(val if isinstance(val, list) else [])]:
        ts.check_patch(spec, params.patch_size)
    if trainer_kwargs is not None and not isinstance(trainer_kwargs, dict):
        raise InputError(
            f"trainer_kwargs={trainer_kwargs!r} is not understood: give a dict of "
            "pytorch_lightning.Trainer arguments, e.g. {'devices': 2}."
        )
    if stop_event is not None and not callable(getattr(stop_event, "is_set", None)):
        raise InputError(
            f"stop_event={stop_event!r} is not understood: give a threading.Event (or None)."
        )
    if isinstance(feedback, FeedbackRegion):

        def whole(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        for key in ("training_set", "slice_index"):
            v = getattr(feedback, key)
            if (v is not None or key == "training_set") and not (whole(v) and v >= 0):
                extra = " or None (the middle labelled slice)" if key == "slice_index" else ""
                raise InputError(f"FeedbackRegion.{key}={v!r} must be an integer >= 0{extra}.")
        box = feedback.box
        if box is not None and (
            not isinstance(box, (list, tuple)) or len(box) != 4 or not all(whole(v) for v in box)
        ):
            raise InputError(
                f"FeedbackRegion.box={box!r} must be 4 integers (y0, y1, x0, x1) or None."
            )
    if checkpoints is not None:
        if not isinstance(checkpoints, CheckpointCache):
            raise InputError(
                f"checkpoints={checkpoints!r} is not understood: pass the CheckpointCache of "
                "this model's earlier runs (result.checkpoints) or None."
            )
        checkpoints.check_network(model.network)
    names, colors = _class_names_for(model, sets[0])
    unlabelled_inputs = _as_unlabelled(unlabelled, spec, params)

    estimate = None
    try:
        estimate = params.memory_estimate(spec)
        if estimate.ratio > 1.0:
            warnings.warn(
                f"{estimate}: this training step will probably not fit in memory; reduce the "
                "batch size or the patch size.",
                ResourceWarning,
                stacklevel=3,
            )
    except NbsegError:
        raise
    except Exception:  # the estimate is advisory; never block training on it
        estimate = None

    pl.seed_everything(params.seed, workers=True, verbose=False)
    norm = model.normalisation or Normalisation.fit(sets, seed=params.seed)
    dm = SegmentationDataModule(sets, spec, params, norm, val, unlabelled=unlabelled_inputs)
    counts = dm.class_counts()
    weights = class_weight_vector(params.class_weights, counts, spec.class_count)
    steps = max(1, int(np.ceil(len(dm.train_patches) / params.batch_size)))
    module = SegmentationModule(
        model.network, spec, params, names, weights, steps, dm.has_validation
    )
    module.pseudo_labels = dm.pseudo_labels
    module.feature_teacher = dm.teacher_labelled
    module.time_spent_s = dm.teacher_info.get("teacher_seconds", 0.0)
    monitor = params.monitor
    if not dm.has_validation and monitor.startswith("val_"):
        monitor = "loss"
    view = _TrainingView(model, norm, names, colors)
    run = next_run(model.history, checkpoints)
    feedback_history, fb = _feedback(view, dm, feedback)
    if feedback_history is not None:
        feedback_history.run = run
    budget = int(params.checkpoint_cache_mb * 2**20)
    cache = None
    if params.checkpoint_cache_mb > 0:
        cache = checkpoints or CheckpointCache(budget, monitor, params.min_delta)
    listeners = [c for c in callbacks if isinstance(c, TrainingListener)]
    pl_callbacks: list[pl.Callback] = [c for c in callbacks if isinstance(c, pl.Callback)]
    unknown = [c for c in callbacks if not isinstance(c, (TrainingListener, pl.Callback))]
    if unknown:
        raise InputError(
            f"callbacks: {unknown[0]!r} is neither a TrainingListener nor a Lightning "
            "Callback; subclass nbseg.TrainingListener."
        )
    live = LiveFeedback(
        view,
        listeners,
        stop_event or threading.Event(),
        cache,
        fb,
        len(model.history),
        feedback_history,
        run,
    )
    record_dir = tempfile.mkdtemp(prefix="nbseg-run-")
    guard = _RankZeroGuard(live, Path(record_dir) / "history.json")
    pl_callbacks[0:0] = [guard, live]
    if params.ema_decay > 0:  # before `live`: the epoch-end feedback and cache see the average
        pl_callbacks.insert(1, WeightAverage(params.ema_decay))
    early = None
    if params.early_stopping:
        early = pl.callbacks.EarlyStopping(
            monitor=monitor,
            patience=params.patience,
            min_delta=params.min_delta,
            mode="min" if "loss" in monitor else "max",
            check_on_train_epoch_end=True,
        )
        pl_callbacks.append(early)
    accelerator, devices = accelerator_for(params.device)
    kwargs: dict[str, Any] = dict(
        max_epochs=params.epochs,
        accelerator=accelerator,
        devices=devices,
        precision=resolve_precision(params.precision, accelerator, spec.input_dimension),
        gradient_clip_val=params.gradient_clip or None,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if dm.has_validation else 0,
        callbacks=pl_callbacks,
        deterministic=False,
    )
    if params.max_minutes:  # the budget includes the feature teacher's time
        seconds = float(params.max_minutes) * 60.0
        kwargs["max_time"] = {"seconds": max(0.1 * seconds, seconds - module.time_spent_s)}
    kwargs.update(trainer_kwargs or {})
    try:
        trainer = pl.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, TypeError) as err:
        # e.g. accelerator="gpu" on a machine without one, an unknown Trainer argument
        shutil.rmtree(record_dir, ignore_errors=True)
        raise InputError(
            f"Lightning refused the trainer settings: {err} (check the accelerator, devices and "
            "strategy: TrainingParams.device, trainer_kwargs, or nbseg train's --accelerator, "
            "--devices, --strategy)"
        ) from err
    if cache is not None:  # last: a refused call leaves a given cache as it was
        cache.begin_run(run, monitor=monitor, min_delta=params.min_delta, budget_bytes=budget)
    return TrainingPlan(
        model=model,
        params=params,
        normalisation=norm,
        class_names=names,
        class_colors=colors,
        datamodule=dm,
        module=module,
        trainer=trainer,
        accelerator=str(accelerator),
        live=live,
        guard=guard,
        listeners=listeners,
        cache=cache,
        early=early,
        run=run,
        feedback=feedback_history,
        estimate=estimate,
        record_dir=record_dir,
        started=t0,
        initial_state={k: v.detach().clone() for k, v in model.network.state_dict().items()},
        given_checkpoints=checkpoints,
    )


def fit(plan: TrainingPlan) -> FitOutcome:
    """Step 2 of :func:`train`: run Lightning. The network's weights change; everything else
    done to it for speed (channels-last, the bf16 ``Conv3d`` guard, train mode, the device)
    is undone on every path, and no exception escapes: :func:`commit` decides."""
    network = plan.model.network
    spec = plan.model.spec
    trainer, module = plan.trainer, plan.module
    outcome = FitOutcome("completed")
    with contextlib.ExitStack() as undo:
        undo.callback(shutil.rmtree, plan.record_dir, ignore_errors=True)
        undo.callback(network.to, "cpu")
        undo.callback(network.train, network.training)
        module.memory_format = channels_last_format(
            spec.spatial_dims, plan.accelerator, trainer.world_size
        )
        if module.memory_format is not None:
            # Module.to takes memory_format (torch's overloads omit it)
            undo.callback(network.to, memory_format=torch.contiguous_format)  # type: ignore[arg-type]
            network.to(memory_format=module.memory_format)  # type: ignore[call-overload]
        if (
            plan.accelerator == "cpu"
            and spec.spatial_dims == 3
            and str(trainer.precision) == "bf16-mixed"
        ):
            undo.callback(guard_cpu_bf16_conv3d(network))
        try:
            trainer.fit(module, datamodule=plan.datamodule)
            plan.guard.recover()  # spawn/fork strategies: the history of rank 0 comes back
        except (torch.OutOfMemoryError, MemoryError) as err:
            outcome = FitOutcome("failed", _oom_message(err, plan.estimate), err)
        except (KeyboardInterrupt, SystemExit) as err:  # Lightning turns SIGINT into exit 1
            outcome = FitOutcome("stopped", None, err, interrupted=True)
        except Exception as err:  # a listener or callback raised: the model is not lost
            outcome = FitOutcome("failed", f"{type(err).__name__}: {err}", err)
    if module.nan_detected:
        return FitOutcome("failed", module.nan_detected)
    if outcome.status == "completed" and plan.live.stopped_by_user:
        return FitOutcome("stopped")
    if outcome.status == "completed" and plan.early is not None and plan.early.stopped_epoch > 0:
        return FitOutcome("early_stopped")
    return outcome


#: the validation Dice the blend with the feature teacher must gain over the network alone
#: for the model to keep the teacher (which doubles the prediction time): isbi2012 with two
#: painted slices gained 0.002 on validation and lost 0.007 on the test slices
BLEND_MARGIN = 0.005


def _keep_teacher(plan: TrainingPlan) -> dict[str, float]:
    """The model keeps this training's feature teacher (and predicts with both) only when
    ``teacher_blend`` > 0 and the blend scores a Dice more than :data:`BLEND_MARGIN` above
    the network alone on the validation patches; otherwise it has no teacher (an older one learnt from older labels).
    Returns the two validation Dice scores ({} when no comparison ran)."""
    model, params, dm = plan.model, plan.params, plan.datamodule
    model.teacher, model.teacher_blend = None, 0.0
    if dm.teacher is None or params.teacher_blend <= 0 or not dm.has_validation:
        return {}
    wins, alone, both = blend_wins(
        model.network,
        dm.teacher,
        dm.val_patches,
        model.spec,
        params.teacher_blend,
        margin=BLEND_MARGIN,
    )
    if wins:
        model.teacher, model.teacher_blend = dm.teacher, params.teacher_blend
    return {"val_dice_network": alone, "val_dice_blend": both, "kept": float(wins)}


def commit(plan: TrainingPlan, outcome: FitOutcome) -> TrainingResult:
    """Step 3 of :func:`train`: write weights, normalisation, class names, history and params
    to the model (see :func:`train` for what a failed or interrupted training keeps)."""
    model, params, live, cache = plan.model, plan.params, plan.live, plan.cache
    history = list(live.history)
    run_best = cache.best_of_run(plan.run) if cache is not None else None
    best_epoch = run_best.epoch if run_best is not None else None
    if outcome.status == "failed" or outcome.interrupted:
        # back to the end of the last completed epoch (or to before the call)
        history = history[: live.completed_epochs]
        model.network.load_state_dict(live.last_completed_state or plan.initial_state)
    kept = {r["epoch"] for r in history}
    teacher_choice: dict[str, float] = {}
    if (
        outcome.status != "failed"
        and params.restore_best
        and plan.datamodule.has_validation
        and cache is not None
        and best_epoch is not None
        and best_epoch in kept
        and best_epoch != history[-1]["epoch"]
    ):
        cache.load_into(model, best_epoch, plan.run)
    if history:  # a training that left nothing behind changes nothing else either
        model.normalisation = plan.normalisation
        model.class_names, model.class_colors = list(plan.class_names), list(plan.class_colors)
        model.history.extend(history)
        model.params = params
        model.updated = now_iso()
        teacher_choice = _keep_teacher(plan)
    result = TrainingResult(
        model=model,
        history=list(model.history),
        status=outcome.status,
        duration=time.perf_counter() - plan.started,
        feedback=plan.feedback,
        checkpoints=cache if cache is not None else plan.given_checkpoints,
        memory_estimate=plan.estimate,
        error=outcome.error,
        best_epoch=best_epoch,
        extra={
            "train_patches": len(plan.datamodule.train_patches),
            "val_patches": len(plan.datamodule.val_patches),
            "global_rank": plan.trainer.global_rank,
            "world_size": plan.trainer.world_size,
            "interrupted": outcome.interrupted,
            "teacher": teacher_choice,
        },
        run=plan.run,
    )
    for listener in plan.listeners:
        with contextlib.suppress(Exception):  # a listener failing at the end loses nothing
            listener.on_train_end(result)
    if outcome.status == "failed":
        err = TrainingError(outcome.error or "training failed")
        err.result = result  # type: ignore[attr-defined]
        raise err from outcome.exception
    if outcome.interrupted:
        raise TrainingInterrupted(result)
    return result


class _RankZeroGuard(pl.Callback):
    """Multi-process training (DDP): only global rank 0 runs the feedback prediction and the
    listeners; rank 0 also writes its history to ``record`` so that spawn/fork strategies
    (``ddp_spawn``, ``ddp_notebook``), whose workers are child processes, can hand it back to
    the calling process (Lightning hands back the weights itself)."""

    def __init__(self, live: LiveFeedback, record: Path) -> None:
        self.live = live
        self.record = record

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            self.live.feedback = None
            self.live.feedback_history = None
            self.live.listeners = []

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 and trainer.global_rank == 0:
            import json

            self.record.write_text(json.dumps(self.live.history))

    def recover(self) -> None:
        if not self.live.history and self.record.is_file():
            import json

            self.live.history = json.loads(self.record.read_text())


def _oom_message(err: BaseException, estimate: MemoryEstimate | None) -> str:
    est = f" ({estimate})" if estimate is not None else ""
    return (
        f"Out of memory during training{est}: reduce the batch size or the patch size, or "
        f"choose a smaller model. ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    )


def _class_names_for(model: Model, ts: TrainingSet) -> tuple[list[str], list[Any]]:
    """The class names and colours the training gives the model: an untrained model with
    default names takes the multi-ROI's names and colours; otherwise the model's own."""
    names, colors = list(model.class_names), list(model.class_colors)
    if model.trained or names != default_class_names(model.spec.class_count):
        return names, colors
    if len(ts.class_names) == model.spec.class_count:
        return list(ts.class_names), list(ts.class_colors)
    return names, colors


def _feedback(
    model: Model, dm: SegmentationDataModule, region: FeedbackRegion | Literal[False] | None
) -> tuple[FeedbackHistory | None, tuple[PreparedSet, int, tuple[int, int, int, int]] | None]:
    if region is False:
        return None, None
    if region is not None and not isinstance(region, FeedbackRegion):
        raise InputError(
            f"feedback={region!r} is not understood: pass a FeedbackRegion, None (the "
            "default region) or False (no feedback prediction)."
        )
    region = region or FeedbackRegion()
    if not 0 <= region.training_set < len(dm.sets):
        raise InputError(
            f"Feedback region refers to training set {region.training_set}, but there are "
            f"{len(dm.sets)}."
        )
    ps = dm.sets[region.training_set]
    z, box = region.resolve(ps)
    y0, y1, x0, x1 = box
    gray = np.clip(ps.image[0, z, y0:y1, x0:x1], 0, 1)
    history = FeedbackHistory(
        slice_index=z,
        box=box,
        image=(gray * 255 + 0.5).astype(np.uint8),
        truth=ps.labels[z, y0:y1, x0:x1].copy(),
        class_colors=list(model.class_colors),
        class_names=list(model.class_names),
    )
    return history, (ps, z, box)
