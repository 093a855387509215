"""`TrainingParams`: Dragonfly's *Training Parameters* (basic and advanced), validated.

Each parameter is declared once below (type, default, bounds or choices, label, help, group):
validation, YAML/JSON files, the ``nbseg train`` flags, the *Training parameters* panel and
the table in ``docs/settings.md`` come from these declarations (see :mod:`nbseg.settings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..data.augment import AugmentationParams
from ..devices import resolve_precision, torch_device
from ..errors import ParamsError
from ..models.spec import ModelSpec
from ..settings import (
    Bool,
    Choice,
    ClassWeights,
    Float,
    Int,
    Nested,
    PatchSize,
    Settings,
    setting,
)
from .memory import MemoryEstimate, estimate_training_memory

LOSSES = ("cross_entropy", "dice", "dice_ce", "focal", "tversky")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adadelta", "adagrad")
LR_SCHEDULES = ("constant", "plateau", "cosine", "onecycle")
PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")
MONITORS = ("val_loss", "loss", "val_dice", "val_iou", "val_accuracy")
DEVICES = ("auto", "cpu", "cuda", "mps")

#: Patch side used when ``TrainingParams.patch_size`` is ``None`` (auto), per input dimension:
#: 128² gives a 2D network enough context on CPU budgets (measured on isbi2012: membrane Dice
#: 0.76 vs 0.20 with 64² in the same 2 minutes), 48³ keeps 3D steps affordable.
AUTO_PATCH: dict[str, int] = {"2D": 128, "2.5D": 128, "3D": 48}

_OPT = "Optimizer and learning rate"
_STOP = "Early stopping"
_LOSS = "Loss and class weights"
_RUN = "Patches and run"
_SEMI = "Unlabelled data"
SEMI_SUPERVISED = ("auto", "off", "pseudo_labels", "feature_teacher")
#: 'auto' uses the feature teacher when under this share of the training patches' voxels
#: is labelled (docs/benchmarks.md, "Few labels: a feature teacher")
SPARSE_LABELS = 0.5


@dataclass
class TrainingParams(Settings):
    """Training parameters, saved with the model and reusable for the next training.

    Every field is declared with its valid values and a one-line help; the table of all of
    them is in ``docs/settings.md`` (``TrainingParams.settings()`` lists them in code).
    Basic: ``patch_size``, ``stride_ratio`` (Dragonfly's *stride to input ratio*),
    ``batch_size``, ``epochs``, ``loss``, ``optimizer``, ``learning_rate``. Advanced: the
    learning-rate schedule, early stopping, class weights and loss options, the run
    (``precision``, ``seed``, ``max_minutes``, ``device``, checkpoint cache) and
    ``augmentation`` (:class:`~nbseg.AugmentationParams`).

    ``precision="auto"`` trains in bf16 mixed precision where the CPU or GPU computes bf16
    natively (about 2x faster steps on AVX512-BF16/AMX CPUs), else in 32-bit. ``ema_decay``
    (0 = off; e.g. 0.995) validates, checkpoints and keeps an exponential moving average of
    the weights over the last ~1/(1 - decay) steps. ``max_minutes`` is a wall-clock budget (10 min by
    default, ``None`` for none): training ends when it is spent or after ``epochs``,
    whichever comes first, and the cosine schedule follows the nearer of the two ends.
    """

    _title: ClassVar[str] = "training parameters"
    _owner: ClassVar[str] = "TrainingParams"
    _error: ClassVar[type] = ParamsError
    _groups: ClassVar[tuple[str, ...]] = (
        "Basic",
        _OPT,
        _STOP,
        _LOSS,
        _RUN,
        _SEMI,
        "Augmentation",
    )

    patch_size: int | tuple[int, ...] | None = setting(
        None,
        PatchSize(minimum=4),
        "Patch size",
        "'auto' (128² in 2D/2.5D, 48³ in 3D, shrunk to fit the data), a side in voxels, or "
        "'D, H, W' / 'H, W' for a box",
        unit="voxels",
    )
    stride_ratio: float = setting(
        1.0,
        Float(0.05, 1.0),
        "Stride to input ratio",
        "Spacing of the training patches over their size: 1.0 = adjacent, 0.5 = half-overlapping",
        widget="slider",
        step=0.05,
    )
    batch_size: int = setting(
        8, Int(minimum=1), "Batch size", "Patches per training step (memory grows with it)"
    )
    epochs: int = setting(20, Int(minimum=1), "Epochs", "Passes over the training patches")
    loss: str = setting(
        "dice_ce", Choice(LOSSES), "Loss", "Loss function (unlabelled voxels are ignored)"
    )
    optimizer: str = setting("adam", Choice(OPTIMIZERS), "Optimizer", "Gradient descent algorithm")
    learning_rate: float = setting(
        2e-3, Float(0.0, open_min=True), "Learning rate", "Initial step size of the optimizer"
    )
    weight_decay: float = setting(
        0.0, Float(0.0), "Weight decay", "L2 penalty on the weights (0 = off)", group=_OPT
    )
    momentum: float = setting(
        0.9,
        Float(0.0),
        "Momentum",
        "SGD / RMSprop momentum",
        group=_OPT,
        enabled_if=("optimizer", ("sgd", "rmsprop")),
    )
    nesterov: bool = setting(
        False,
        Bool(),
        "Nesterov momentum",
        "Nesterov momentum (SGD only)",
        group=_OPT,
        enabled_if=("optimizer", ("sgd",)),
    )
    augmentation: AugmentationParams = setting(
        None,
        Nested(AugmentationParams),
        "Augmentation",
        "Random augmentation of every training batch",
        group="Augmentation",
        factory=AugmentationParams,
    )
    class_weights: str | list[float] = setting(
        "uniform",
        ClassWeights(),
        "Class weights",
        "Weights of the cross-entropy / focal terms: uniform, by frequency, or one per class",
        group=_LOSS,
    )
    lr_schedule: str = setting(
        "cosine",
        Choice(LR_SCHEDULES),
        "LR schedule",
        "How the learning rate changes: constant, plateau (reduce on plateau), cosine, onecycle",
        group=_OPT,
    )
    plateau_factor: float = setting(
        0.1,
        Float(0.0, 1.0, open_min=True, open_max=True),
        "Plateau factor",
        "Reduce-on-plateau: multiply the rate by this",
        group=_OPT,
        enabled_if=("lr_schedule", ("plateau",)),
    )
    plateau_patience: int = setting(
        10,
        Int(minimum=0),
        "Plateau patience",
        "Reduce-on-plateau: epochs without improvement",
        group=_OPT,
        unit="epochs",
        enabled_if=("lr_schedule", ("plateau",)),
    )
    early_stopping: bool = setting(
        False,
        Bool(),
        "Early stopping",
        "Stop when the monitored metric stops improving",
        group=_STOP,
    )
    monitor: str = setting(
        "val_loss",
        Choice(
            MONITORS, extra=r"val_(dice|iou)_.+", extra_text="val_dice_<class>, val_iou_<class>"
        ),
        "Monitor",
        "Metric watched by early stopping, 'restore best' and the checkpoint cache",
        group=_STOP,
        enabled_if=("early_stopping", (True,)),
    )
    patience: int = setting(
        15,
        Int(minimum=0),
        "Patience",
        "Epochs without improvement before stopping",
        group=_STOP,
        unit="epochs",
        enabled_if=("early_stopping", (True,)),
    )
    min_delta: float = setting(
        1e-4,
        Float(0.0),
        "Min delta",
        "Smallest change of the monitored metric that counts as an improvement",
        group=_STOP,
        enabled_if=("early_stopping", (True,)),
    )
    restore_best: bool = setting(
        True, Bool(), "Restore best", "Keep the weights of the best epoch at the end", group=_STOP
    )
    terminate_on_nan: bool = setting(
        True, Bool(), "Stop on NaN", "Stop training when the loss becomes NaN", group=_STOP
    )
    gradient_clip: float = setting(
        0.0, Float(0.0), "Gradient clipping", "Clip the gradient norm (0 = off)", group=_OPT
    )
    ema_decay: float = setting(
        0.0,
        Float(0.0, 1.0, open_max=True),
        "Weight averaging (EMA)",
        "Decay of an exponential moving average of the weights, used for validation, "
        "checkpoints and the final model (0 = off; 0.99-0.999 typical)",
        group=_OPT,
    )
    precision: str = setting(
        "auto",
        Choice(PRECISIONS),
        "Precision",
        "'auto' = bf16 mixed precision where the hardware computes bf16 natively (≈2× faster "
        "on AVX512-BF16 CPUs), else 32-bit",
        group=_RUN,
    )
    seed: int = setting(
        0, Int(), "Random seed", "Seed of patch sampling, augmentation and weights", group=_RUN
    )
    class_balance: float = setting(
        0.0,
        Float(0.0, 1.0),
        "Rare-class sampling",
        "Share of the training patches centred on a labelled voxel of a class drawn uniformly "
        "(rare classes over-sampled, as nnU-Net's foreground sampling); 0 = patches anywhere "
        "on the labelled area",
        group=_RUN,
        widget="slider",
        step=0.05,
    )
    semi_supervised: str = setting(
        "auto",
        Choice(SEMI_SUPERVISED),
        "Unlabelled voxels",
        "'pseudo_labels': the network's confident predictions on unlabelled voxels (the "
        "training sets' own and the unlabelled images') teach it under stronger intensity "
        "changes (FixMatch-style consistency); 'feature_teacher': a pixel classifier on "
        "filter features (ilastik-style), trained on the labels first, labels the training "
        "volumes' unlabelled voxels where it is confident; 'auto' = pseudo_labels when "
        "unlabelled images are given, else feature_teacher when under half of the voxels in "
        "the training patches are labelled (strokes), else (painted slices, full labels) the "
        "teacher is fitted for the prediction only (see teacher_blend)",
        group=_SEMI,
    )
    unlabelled_weight: float = setting(
        1.0,
        Float(0.0),
        "Unlabelled loss weight",
        "Weight of the pseudo-label loss (ramped up from 0 over the first 30 % of the steps) "
        "or of the feature teacher's labels",
        group=_SEMI,
        enabled_if=("semi_supervised", ("auto", "pseudo_labels", "feature_teacher")),
    )
    pseudo_threshold: float = setting(
        0.9,
        Float(0.0, 1.0, open_min=True),
        "Confidence threshold",
        "Only unlabelled voxels the network predicts with at least this probability get a "
        "pseudo-label",
        group=_SEMI,
        enabled_if=("semi_supervised", ("auto", "pseudo_labels")),
        widget="slider",
        step=0.01,
    )
    teacher_threshold: float = setting(
        0.5,
        Float(0.0, 1.0, open_min=True),
        "Teacher threshold",
        "Only unlabelled voxels the feature teacher predicts with at least this probability "
        "get its label (0.5 beat 0.9 on the shared data with strokes: docs/benchmarks.md; with "
        "2 classes 0.5 lets every voxel in the training patches through)",
        group=_SEMI,
        enabled_if=("semi_supervised", ("auto", "feature_teacher")),
        widget="slider",
        step=0.01,
    )
    teacher_blend: float = setting(
        0.5,
        Float(0.0, 1.0),
        "Teacher in the prediction",
        "The model may keep the feature teacher and predict with both: the teacher's "
        "weight in a geometric mean of the two probability maps. It is kept only when that "
        "blend scores a Dice over 0.005 above the network alone on the validation patches "
        "(0 = never: the network alone, and with 'auto' no teacher for painted slices). "
        "4 min: sandstone strokes 0.925 -> 0.947, 2 painted slices 0.915 -> 0.963 "
        "(docs/benchmarks.md)",
        group=_SEMI,
        enabled_if=("semi_supervised", ("auto", "feature_teacher")),
        widget="slider",
        step=0.05,
    )
    unlabelled_share: float = setting(
        0.5,
        Float(0.0, 4.0),
        "Unlabelled patches",
        "Patches drawn anywhere in the unlabelled images and the training volumes, per "
        "labelled training patch",
        group=_SEMI,
        enabled_if=("semi_supervised", ("auto", "pseudo_labels")),
        widget="slider",
        step=0.05,
    )
    full_labels_only: bool = setting(
        False,
        Bool(),
        "Full labels only",
        "Dragonfly's behaviour: use only patches whose voxels are all labelled",
        group=_RUN,
    )
    focal_gamma: float = setting(
        2.0, Float(0.0), "Focal gamma", "Focusing exponent of the focal loss", group=_LOSS
    )
    tversky_alpha: float = setting(
        0.3,
        Float(0.0),
        "Tversky alpha",
        "Weight of false positives in the Tversky loss",
        group=_LOSS,
    )
    tversky_beta: float = setting(
        0.7,
        Float(0.0),
        "Tversky beta",
        "Weight of false negatives in the Tversky loss",
        group=_LOSS,
    )
    checkpoint_cache_mb: float = setting(
        256.0,
        Float(0.0),
        "Checkpoint cache",
        "Memory budget of the checkpoint cache (0 = no cache)",
        group=_RUN,
        unit="MB",
    )
    max_validation_patches: int = setting(
        512,
        Int(minimum=1),
        "Max validation patches",
        "Cap on the validation patches evaluated per epoch",
        group=_RUN,
    )
    max_minutes: float | None = setting(
        10.0,
        Float(0.0, open_min=True, optional=True, none_text="no limit"),
        "Time limit",
        "Wall-clock budget of the training, the feature teacher's fit included (None = no "
        "limit). 10 min caps big data and leaves small data its epochs: on 2 CPU cores 20 "
        "epochs of isbi2012 (20 slices of 512²) end in about 6 min; the sandstone (6 slices of "
        "1024²) took 6.4 min on one host and 30 on a slower one, and scores 0.965 in 3 "
        "(docs/benchmarks.md)",
        group=_RUN,
        unit="min",
    )
    device: str = setting(
        "auto",
        Choice(DEVICES, extra=r"cuda:\d+", extra_text="'cuda:N'"),
        "Device",
        "Where to train: auto picks the GPU when there is one",
        group=_RUN,
    )

    def __post_init__(self) -> None:
        if isinstance(self.augmentation, dict):
            try:
                self.augmentation = AugmentationParams.from_dict(self.augmentation)
            except ParamsError as err:
                raise ParamsError(f"TrainingParams.augmentation: {err}") from None
        elif self.augmentation is None or self.augmentation is False:
            self.augmentation = AugmentationParams.disabled()
        if isinstance(self.patch_size, list):
            self.patch_size = tuple(self.patch_size)

    # -- validation ----------------------------------------------------------------------
    def validate(self, class_count: int | None = None) -> TrainingParams:  # type: ignore[override]
        """Raise :class:`ParamsError` naming the first bad value and its valid range;
        ``class_count`` also checks that there is one class weight per class."""
        return super().validate(class_count=class_count)

    def _check(self, class_count: int | None = None, **_: Any) -> None:
        w = self.class_weights
        if not isinstance(w, str) and class_count is not None and len(w) != class_count:
            raise self._fail("class_weights", w, f"give one weight per class ({class_count})")

    # -- memory ----------------------------------------------------------------------------
    def patch_for(self, spec: ModelSpec) -> int | tuple[int, ...]:
        """The patch size used for ``spec``: ``patch_size``, or when it is ``None`` (auto)
        :data:`AUTO_PATCH` of the input dimension (128 × 128 in 2D / 2.5D, 48³ in 3D; training
        shrinks an auto patch to fit the data)."""
        if self.patch_size is not None:
            return self.patch_size
        return AUTO_PATCH[spec.input_dimension]

    def uses_pseudo_labels(self, has_unlabelled: bool) -> bool:
        """Whether a training with (``has_unlabelled``) or without unlabelled images trains
        on pseudo-labels (``semi_supervised``: 'auto' follows the unlabelled images)."""
        if self.semi_supervised == "auto":
            return has_unlabelled
        return self.semi_supervised == "pseudo_labels"

    def uses_feature_teacher(self, has_unlabelled: bool, labelled_share: float) -> bool:
        """Whether a feature teacher labels the training volumes' unlabelled voxels:
        'auto' turns it on without unlabelled images when under :data:`SPARSE_LABELS` of
        the voxels in the training patches are labelled (``labelled_share``: strokes, not
        wholly painted slices)."""
        if self.semi_supervised == "auto":
            return not has_unlabelled and labelled_share < SPARSE_LABELS
        return self.semi_supervised == "feature_teacher"

    def fits_feature_teacher(self, has_unlabelled: bool, labelled_share: float) -> bool:
        """Whether a feature teacher is fitted at all: to label (:meth:`uses_feature_teacher`)
        or, with 'auto', no unlabelled images and ``teacher_blend`` > 0, only for the
        prediction (wholly painted slices: the model keeps it when the blend wins on the
        validation patches)."""
        if self.uses_feature_teacher(has_unlabelled, labelled_share):
            return True
        return self.semi_supervised == "auto" and not has_unlabelled and self.teacher_blend > 0

    def memory_estimate(self, spec: ModelSpec) -> MemoryEstimate:
        """Estimated peak memory of a training step for ``spec`` (Dragonfly's memory ratio)."""
        device = torch_device(self.device)
        precision = resolve_precision(
            self.precision, "gpu" if device == "cuda" else "cpu", spec.input_dimension
        )
        return estimate_training_memory(
            spec,
            self.patch_for(spec),
            self.batch_size,
            optimizer=self.optimizer,
            device=device,
            precision=precision,
        )

    def memory_ratio(self, spec: ModelSpec) -> float:
        """Estimated memory ratio: > 1.00 means the training step will not fit."""
        return float(self.memory_estimate(spec).ratio)


def class_weight_vector(
    weights: str | Sequence[float], counts: Sequence[int] | None, class_count: int
) -> list[float]:
    """Resolve ``class_weights`` to one float per class (mean 1 over classes present)."""
    if isinstance(weights, str):
        if weights == "uniform" or counts is None:
            return [1.0] * class_count
        c = np.asarray(counts, dtype=np.float64)
        present = c > 0
        w = np.zeros(class_count)
        # inverse square root of frequency: balanced without exploding for rare classes
        w[present] = 1.0 / np.sqrt(c[present] / c[present].sum())
        w[present] /= w[present].mean()
        return [float(v) for v in w]
    return [float(v) for v in weights]
