"""The Lightning pieces under :func:`nbseg.train`: data module and segmentation module."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.augment import augment_batch
from ..data.patches import (
    PatchPlan,
    PreparedSet,
    class_positions,
    extract,
    patch_shape,
    plan_patches,
    random_train_boxes,
)
from ..data.trainingset import Normalisation, TrainingSet, volume_of
from ..models.registry import size_divisor
from ..models.spec import ModelSpec
from .losses import IGNORE, SegmentationLoss, confusion_matrix, metrics_from_confusion
from .params import TrainingParams
from .teacher import FeatureTeacher, fit_teacher, teacher_labels

#: at most this many candidate patch centres are kept per masked unlabelled source
_MAX_CENTRES = 200_000


class UnlabelledSource:
    """Where unlabelled patches are drawn: a prepared volume (a training set's, its labels
    never read, or an unlabelled image's) and, with a mask, the voxels patches centre on."""

    def __init__(self, ps: PreparedSet, mask: np.ndarray | None, rng: np.random.Generator):
        self.ps = ps
        self.centres: np.ndarray | None = None
        if mask is not None:
            where = np.argwhere(mask)
            if len(where) > _MAX_CENTRES:
                where = where[rng.choice(len(where), _MAX_CENTRES, replace=False)]
            self.centres = where

    def box(self, pshape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        shape = np.asarray(self.ps.shape)
        hi = shape - np.asarray(pshape)
        if self.centres is not None and len(self.centres):
            c = self.centres[rng.integers(len(self.centres))]
            return np.clip(c - np.asarray(pshape) // 2, 0, hi)
        return np.array([rng.integers(0, h + 1) for h in hi])


class _TrainPatches(Dataset):
    """Random training crops, redrawn every epoch (``set_epoch``), deterministic per seed.

    With ``unlabelled`` sources, ``unlabelled_count`` more crops are drawn anywhere in them
    (target ``-1`` everywhere: only pseudo-labels reach them) and spread evenly among the
    labelled crops, so every batch holds both.
    """

    def __init__(
        self,
        sets: Sequence[PreparedSet],
        plan: PatchPlan,
        pshape: tuple[int, int, int],
        spec: ModelSpec,
        count: int,
        seed: int,
        class_balance: float = 0.0,
        unlabelled: Sequence[UnlabelledSource] = (),
        unlabelled_count: int = 0,
    ) -> None:
        self.sets, self.plan, self.pshape, self.spec = sets, plan, pshape, spec
        self.labelled_count, self.seed = count, seed
        self.unlabelled = list(unlabelled)
        self.unlabelled_count = unlabelled_count if self.unlabelled else 0
        self.count = count + self.unlabelled_count
        # each source drawn in proportion to its voxels
        sizes = np.array([float(np.prod(u.ps.shape)) for u in self.unlabelled])
        self._weights = sizes / sizes.sum() if len(sizes) else sizes
        # where the unlabelled crops go among the labelled ones (evenly spread)
        keys = np.concatenate(
            [
                (np.arange(count) + 0.5) / max(1, count),
                (np.arange(self.unlabelled_count) + 0.5) / max(1, self.unlabelled_count),
            ]
        )
        self._order = np.argsort(keys, kind="stable")
        self.class_balance = float(class_balance)
        # voxels of each class, for class-centred patches: found once, only when asked for
        # (a feature teacher's label K + c counts as class c)
        self.positions = (
            [
                _merge_teacher_classes(
                    class_positions(ps, np.random.default_rng([seed, i])), spec.class_count
                )
                for i, ps in enumerate(sets)
            ]
            if self.class_balance > 0
            else None
        )
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        self.boxes = random_train_boxes(
            self.sets,
            self.plan,
            self.pshape,
            self.count,
            rng,
            class_balance=self.class_balance,
            positions=self.positions,
        )
        self.unlabelled_boxes = []
        if self.unlabelled_count:
            urng = np.random.default_rng([self.seed, epoch, 1])
            src = urng.choice(len(self.unlabelled), self.unlabelled_count, p=self._weights)
            self.unlabelled_boxes = [
                (int(k), self.unlabelled[k].box(self.pshape, urng)) for k in src
            ]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self._order[i])
        if j >= self.labelled_count:
            k, box = self.unlabelled_boxes[j - self.labelled_count]
            x, y = extract(self.unlabelled[k].ps, box, self.pshape, self.spec)
            y = np.full_like(y, -1)  # a training volume's labels never reach these crops
            return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        s, box = self.boxes[j]
        x, y = extract(self.sets[s], box, self.pshape, self.spec)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def _merge_teacher_classes(
    positions: dict[int, np.ndarray], class_count: int
) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for c, pts in positions.items():
        key = c - class_count if c >= class_count else c
        out[key] = np.concatenate([out[key], pts]) if key in out else pts
    return out


class _FixedPatches(Dataset):
    def __init__(
        self,
        sets: Sequence[PreparedSet],
        boxes: Sequence[np.ndarray],
        pshape: tuple[int, int, int],
        spec: ModelSpec,
    ) -> None:
        self.items = [(i, b) for i, bs in enumerate(boxes) for b in bs]
        self.sets, self.pshape, self.spec = sets, pshape, spec

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, box = self.items[i]
        x, y = extract(self.sets[s], box, self.pshape, self.spec)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


class SegmentationDataModule(pl.LightningDataModule):
    """Normalises the training sets, plans the patches and serves them in batches.

    Unlabelled voxels (and voxels outside the mask) carry target ``-1`` and are ignored by
    the loss and the metrics.
    """

    def __init__(
        self,
        training_sets: Sequence[TrainingSet],
        spec: ModelSpec,
        params: TrainingParams,
        normalisation: Normalisation,
        validation: float | Sequence[TrainingSet] = 0.2,
        unlabelled: Sequence[Sequence[Any]] = (),
    ) -> None:
        super().__init__()
        self.spec, self.params, self.normalisation = spec, params, normalisation
        self.sets = [PreparedSet.from_training_set(ts, normalisation) for ts in training_sets]
        #: whether the training learns from pseudo-labels (``params.semi_supervised``)
        self.pseudo_labels = params.uses_pseudo_labels(bool(unlabelled))
        if isinstance(validation, (int, float)):
            val: float | list[PreparedSet] = float(validation)
        else:
            val = [PreparedSet.from_training_set(ts, normalisation) for ts in validation]
        extra: list[PreparedSet] = []  # the unlabelled images, normalised
        if self.pseudo_labels:
            for i, inputs in enumerate(unlabelled):
                image = np.stack(
                    [normalisation.apply(volume_of(da), c) for c, da in enumerate(inputs)]
                )
                labels = np.full(image.shape[1:], -1, np.int16)
                extra.append(PreparedSet(image, labels, f"unlabelled {i + 1}"))
        elif unlabelled:
            warnings.warn(
                f"{len(unlabelled)} unlabelled image(s) given but semi_supervised="
                f"{params.semi_supervised!r}: they are not used; set it to 'auto' or "
                "'pseudo_labels' to learn from them.",
                UserWarning,
                stacklevel=3,
            )
        self.pshape = patch_shape(spec, params.patch_for(spec))
        if params.patch_size is None:  # auto: shrink to the smallest volume
            self.pshape = fit_auto_patch(
                self.pshape, [*self.sets, *(val if isinstance(val, list) else []), *extra], spec
            )
        self.plan = plan_patches(
            self.sets,
            self.pshape,
            params.stride_ratio,
            val,
            full_labels_only=params.full_labels_only,
            seed=params.seed,
            max_validation_patches=params.max_validation_patches,
        )
        factor = max(1, params.augmentation.factor)
        sources: list[UnlabelledSource] = []
        if self.pseudo_labels:
            rng = np.random.default_rng([params.seed, 2])
            for ts, ps in zip(training_sets, self.sets, strict=True):
                mask = volume_of(ts.mask).astype(bool) if ts.mask is not None else None
                sources.append(UnlabelledSource(ps, mask, rng))
            sources.extend(UnlabelledSource(ps, None, rng) for ps in extra)
        #: the feature teacher's summary (``teacher_seconds``, ``teacher_share``), if one ran
        self.teacher_info: dict[str, float] = {}
        #: the fitted feature teacher (None when none ran)
        self.teacher: FeatureTeacher | None = None
        train_sets = self.sets
        covers = [self._cover(ps, boxes) for ps, boxes in zip(self.sets, self.plan.train)]
        total = sum(int(c.sum()) for c in covers)
        labelled = sum(int((c & (ps.labels >= 0)).sum()) for c, ps in zip(covers, self.sets))
        #: share of the voxels in the training patches that the user labelled
        self.labelled_share = labelled / total if total else 1.0
        #: whether the network learns from the teacher's labels (else the teacher, if any,
        #: was fitted for the prediction only)
        self.teacher_labelled = False
        if params.uses_feature_teacher(bool(unlabelled), self.labelled_share):
            train_sets = self._teach(training_sets, params, covers)
            self.teacher_labelled = True
        elif params.fits_feature_teacher(bool(unlabelled), self.labelled_share) and any(
            len(b) for b in self.plan.val
        ):  # painted slices: a teacher for the prediction (kept if it wins on validation)
            t0 = time.perf_counter()
            with torch.inference_mode(False), torch.enable_grad():
                self.teacher = fit_teacher(
                    self.sets, self.spec.class_count, seed=params.seed, exclude=self._val_cover()
                )
            self.teacher_info = {"teacher_seconds": time.perf_counter() - t0, "teacher_share": 0.0}
        labelled = self.plan.train_count * factor
        self.train_patches = _TrainPatches(
            train_sets,
            self.plan,
            self.pshape,
            spec,
            labelled,
            params.seed,
            class_balance=params.class_balance,
            unlabelled=sources,
            unlabelled_count=round(labelled * params.unlabelled_share) if sources else 0,
        )
        val_sets = self.plan.val_sets or self.sets
        self.val_patches = _FixedPatches(val_sets, self.plan.val, self.pshape, spec)

    def _cover(self, ps: PreparedSet, boxes: np.ndarray) -> np.ndarray:
        """The voxels of ``ps`` inside any of ``boxes``."""
        pz, py, px = self.pshape
        cover = np.zeros(ps.shape, bool)
        for z0, y0, x0 in boxes:
            cover[z0 : z0 + pz, y0 : y0 + py, x0 : x0 + px] = True
        return cover

    def _val_cover(self) -> list[np.ndarray | None]:
        """Per training set, its voxels inside a validation patch (None: none), which the
        feature teacher never learns from."""
        exclude: list[np.ndarray | None] = [None] * len(self.sets)
        if not self.plan.val_sets:  # validation patches cut from the training sets
            for i, (ps, boxes) in enumerate(zip(self.sets, self.plan.val, strict=True)):
                if len(boxes):
                    exclude[i] = self._cover(ps, boxes)
        return exclude

    def _teach(
        self,
        training_sets: Sequence[TrainingSet],
        params: TrainingParams,
        covers: Sequence[np.ndarray],
    ) -> list[PreparedSet]:
        """The training sets with the feature teacher's labels (``K + class``) on their
        unlabelled voxels. The patches stay where the user's labels are (extending them to
        wholly unlabelled slices made epochs several times longer and scored lower with two
        painted slices: docs/benchmarks.md); validation keeps the user's labels."""
        k = self.spec.class_count
        exclude = self._val_cover()
        # where the teacher labels: inside the training patches (which never meet a
        # validation patch) and the mask
        masks = []
        for ts, cover in zip(training_sets, covers, strict=True):
            where = cover.copy()
            if ts.mask is not None:
                where &= volume_of(ts.mask).astype(bool)
            masks.append(where)
        labels, self.teacher_info, self.teacher = teacher_labels(
            self.sets, k, params.teacher_threshold, seed=params.seed, exclude=exclude, masks=masks
        )
        return [
            PreparedSet(ps.image, np.where(tl >= 0, tl + k, ps.labels).astype(np.int16), ps.name)
            for ps, tl in zip(self.sets, labels, strict=True)
        ]

    @property
    def has_validation(self) -> bool:
        return len(self.val_patches) > 0

    def class_counts(self) -> list[int]:
        counts = np.zeros(self.spec.class_count, dtype=np.int64)
        for ps in self.sets:
            lab = ps.labels[ps.labels >= 0]
            counts += np.bincount(lab, minlength=self.spec.class_count)[: self.spec.class_count]
        return counts.tolist()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_patches, batch_size=self.params.batch_size, shuffle=False, drop_last=False
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_patches, batch_size=self.params.batch_size, shuffle=False)


def build_optimizer(
    params: TrainingParams, parameters: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """The optimiser named by ``params.optimizer``.

    Adam, AdamW, SGD and Adagrad use PyTorch's *fused* kernels where the parameters' device
    has them (CPU and CUDA): one kernel per step instead of about ten small operations per
    parameter tensor. On a 2-core CPU the Adam step of the default U-Net drops from 5.4 to
    0.9 ms in 2D and from 13.4 to 3.5 ms in 3D. Elsewhere the plain implementation is used.
    """
    lr, wd = params.learning_rate, params.weight_decay
    parameters = list(parameters)
    name = params.optimizer
    if name == "adam":
        return _fused_or_plain(torch.optim.Adam, parameters, lr=lr, weight_decay=wd)
    if name == "adamw":
        return _fused_or_plain(torch.optim.AdamW, parameters, lr=lr, weight_decay=wd)
    if name == "sgd":
        return _fused_or_plain(
            torch.optim.SGD,
            parameters,
            lr=lr,
            momentum=params.momentum,
            nesterov=params.nesterov,
            weight_decay=wd,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, momentum=params.momentum, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr, weight_decay=wd)
    if name == "adagrad":
        return _fused_or_plain(torch.optim.Adagrad, parameters, lr=lr, weight_decay=wd)
    raise ValueError(name)


def _fused_or_plain(
    kind: Callable[..., torch.optim.Optimizer], parameters: list[torch.nn.Parameter], **kwargs: Any
) -> torch.optim.Optimizer:
    devices = {p.device.type for p in parameters}
    if devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in parameters):
        try:
            return kind(parameters, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # no fused kernel for this dtype/device/build
            pass
    return kind(parameters, **kwargs)


class _TimeCosine:
    """LR factor following a cosine over a wall-clock budget (for ``max_minutes``) or over
    ``total_steps``, whichever is nearer its end: a run whose epochs end before the budget
    is spent still anneals."""

    def __init__(self, budget_s: float, total_steps: int = 0, floor: float = 0.01) -> None:
        self.budget_s, self.total_steps, self.floor = budget_s, total_steps, floor
        self.t0: float | None = None

    def __call__(self, step: int) -> float:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        frac = min(1.0, (now - self.t0) / self.budget_s)
        if self.total_steps > 0:
            frac = max(frac, min(1.0, step / self.total_steps))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * frac))


class SegmentationModule(pl.LightningModule):
    """Network + loss + metrics + optimiser/schedule, with batch augmentation on device."""

    def __init__(
        self,
        network: torch.nn.Module,
        spec: ModelSpec,
        params: TrainingParams,
        class_names: Sequence[str],
        class_weights: Sequence[float] | None,
        steps_per_epoch: int,
        has_validation: bool,
    ) -> None:
        super().__init__()
        self.network = network
        self.spec, self.params = spec, params
        self.class_names = list(class_names)
        self.loss_fn = SegmentationLoss(params, class_weights)
        self.steps_per_epoch = steps_per_epoch
        self.has_validation = has_validation
        self.aug_generator = torch.Generator().manual_seed(params.seed)
        self._val_cm = torch.zeros(spec.class_count, spec.class_count, dtype=torch.long)
        self._val_loss = torch.zeros(2)
        self.nan_detected: str | None = None
        self._loss_sum, self._loss_count = torch.zeros(()), 0
        self._epoch_loss: tuple[Any, float | None] = (None, None)
        #: set by :func:`nbseg.train`: the (channels-last) format the network trains in
        self.memory_format: torch.memory_format | None = None
        #: set by :func:`nbseg.train`: learn from pseudo-labels on the unlabelled voxels
        self.pseudo_labels = False
        #: set by :func:`nbseg.train`: the targets hold feature-teacher labels (``K + class``)
        self.feature_teacher = False
        #: set by :func:`nbseg.train`: seconds of ``max_minutes`` spent before the fit (the
        #: feature teacher), taken off the schedule's budget
        self.time_spent_s = 0.0
        self._ramp_t0: float | None = None
        self._unl_sum, self._conf_sum, self._unl_count = torch.zeros(()), torch.zeros(()), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if self.trainer is not None and self.trainer.training:
            x, y = augment_batch(
                x, y, self.params.augmentation, self.spec.spatial_dims, self.aug_generator
            )
        if self.memory_format is not None and x.dim() in (4, 5):
            x = x.contiguous(memory_format=self.memory_format)
        return x, y

    @property
    def _zero_grad_early(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return (
            trainer is not None
            and self.automatic_optimization
            and trainer.accumulate_grad_batches == 1
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning zeroes the gradients between the forward and the backward pass (its closure
        # may be re-run by LBFGS); zeroing them before the forward pass frees the old gradients
        # while the activations are allocated: 1-2 % faster CPU steps (benchmarks/ui_overhead.py)
        if self._zero_grad_early:
            for opt in self.trainer.optimizers:
                opt.zero_grad(set_to_none=True)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if not self._zero_grad_early:  # accumulating gradients: Lightning's own schedule
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self._unl_sum = torch.zeros((), device=self.device)
        self._conf_sum = torch.zeros((), device=self.device)
        self._unl_count = 0
        self._epoch_loss = (None, None)
        dm = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, undeclared
        if dm is not None:
            dm.train_patches.set_epoch(self.current_epoch)

    #: share of the planned steps over which the pseudo-label loss ramps up from 0
    ramp_fraction = 0.3

    def unlabelled_ramp(self) -> float:
        """Weight factor of the pseudo-label loss now: exp(-5 (1 - t)²), t the share of
        :attr:`ramp_fraction` of the planned steps done, or of ``max_minutes`` spent when
        that comes first (the mean-teacher ramp)."""
        total = max(1, self.steps_per_epoch * max(1, self.params.epochs))
        t = min(1.0, self.global_step / max(1.0, self.ramp_fraction * total))
        if self.params.max_minutes:  # a time budget: the share of it spent counts too
            now = time.perf_counter()
            if self._ramp_t0 is None:
                self._ramp_t0 = now
            spent = (now - self._ramp_t0) / (60.0 * self.params.max_minutes)
            t = max(t, min(1.0, spent / self.ramp_fraction))
        return float(math.exp(-5.0 * (1.0 - t) ** 2))

    def _pseudo_label_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Supervised loss on the labelled voxels plus the pseudo-label loss on the others.

        The network predicts the batch as augmented (no gradient); where an unlabelled voxel
        is predicted with at least ``pseudo_threshold`` that class is its target for the
        prediction of a *strong* view of the same batch (random contrast, brightness and
        Gaussian noise per sample: the geometry is unchanged, so targets stay aligned). The
        loss is averaged over all unlabelled voxels (a voxel below the threshold counts as
        0), so it grows as the network grows confident (FixMatch, Sohn et al. 2020).
        """
        with torch.no_grad():
            probs = self(x).float().softmax(1)
            conf, pseudo = probs.max(1)
        logits = self(strong_view(x, self.aug_generator))
        loss = self.loss_fn(logits, y)
        unl = y == IGNORE
        n = int(unl.sum())
        if n:
            keep = unl & (conf >= self.params.pseudo_threshold)
            per = F.cross_entropy(logits.float(), pseudo, reduction="none")
            # class-balanced: each pseudo-class present gets an equal share of the confident
            # voxels' weight, so a majority class cannot swallow a rare one (confirmation bias)
            counts = torch.bincount(pseudo[keep], minlength=logits.shape[1]).float()
            present = counts > 0
            if bool(present.any()):
                share = counts.sum() / present.sum()
                w = torch.where(present, share / counts.clamp(min=1.0), torch.zeros_like(counts))
                u = (per * keep * w[pseudo]).sum() / n
            else:
                u = per.sum() * 0.0
            self._unl_sum += u.detach() * x.shape[0]
            self._conf_sum += keep.sum().float() / n * x.shape[0]
            self._unl_count += x.shape[0]
            weight = self.params.unlabelled_weight * self.unlabelled_ramp()
            if weight > 0:
                loss = loss + weight * u
        return loss

    def _teacher_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss on the user's labels plus ``unlabelled_weight`` × the same loss on the
        feature teacher's labels (coded ``K + class`` in the targets, see
        :mod:`nbseg.training.teacher`)."""
        k = self.spec.class_count
        logits = self(x)
        taught = y >= k
        ignore = torch.full_like(y, IGNORE)
        loss = self.loss_fn(logits, torch.where(taught, ignore, y))
        n = int(taught.sum())
        if n:
            t = self.loss_fn(logits, torch.where(taught, y - k, ignore))
            self._unl_sum += t.detach() * x.shape[0]
            self._conf_sum += taught.float().mean() * x.shape[0]
            self._unl_count += x.shape[0]
            if self.params.unlabelled_weight > 0:
                loss = loss + self.params.unlabelled_weight * t
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        if self.feature_teacher:
            loss = self._teacher_step(x, y)
        elif self.pseudo_labels:
            loss = self._pseudo_label_step(x, y)
        else:
            loss = self.loss_fn(self(x), y)
        if not torch.isfinite(loss):
            if self.params.terminate_on_nan:
                self.nan_detected = (
                    f"The loss became {float(loss.detach())} at epoch {self.current_epoch + 1}, batch "
                    f"{batch_idx + 1}; training stopped. Lower the learning rate, use gradient "
                    "clipping or check the input for extreme values."
                )
                self.trainer.should_stop = True
            return None
        # the epoch's mean loss is summed here and logged once per epoch (on_train_epoch_end):
        # Lightning's per-step self.log costs about 1 ms a call, here two tensor additions
        self._loss_sum += loss.detach().float() * x.shape[0]
        self._loss_count += x.shape[0]
        return loss

    def epoch_loss(self) -> float | None:
        """Mean training loss of the current epoch so far (over all processes), or None.

        Called by the live-feedback callback and by :meth:`on_train_epoch_end`, in that order
        on every process; the (collective) reduction runs once per epoch and is cached.
        """
        key = (self.current_epoch, self._loss_count)
        if self._epoch_loss[0] != key:
            total = torch.stack(
                [self._loss_sum.reshape(()), self._loss_sum.new_tensor(float(self._loss_count))]
            )
            if self._distributed:
                total = self.trainer.strategy.reduce(total, reduce_op="sum")
            value = float(total[0] / total[1]) if float(total[1]) > 0 else None
            self._epoch_loss = (key, value)
        return self._epoch_loss[1]

    def on_train_epoch_end(self) -> None:
        value = self.epoch_loss()
        if value is not None:
            self.log("loss", value, on_step=False, on_epoch=True)
        for key, v in self.epoch_metrics().items():
            self.log(key, v, on_step=False, on_epoch=True)

    def epoch_metrics(self) -> dict[str, float]:
        """The current epoch's pseudo-label figures (this process's batches): ``pseudo_loss``
        (the unweighted pseudo-label loss) and ``pseudo_share`` (share of the unlabelled
        voxels confident enough to get a pseudo-label); empty without pseudo-labels. With a
        feature teacher: the unweighted loss on its labels and the share of the batches'
        voxels it labelled."""
        if not ((self.pseudo_labels or self.feature_teacher) and self._unl_count):
            return {}
        n = float(self._unl_count)
        return {"pseudo_loss": float(self._unl_sum) / n, "pseudo_share": float(self._conf_sum) / n}

    @property
    def _distributed(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return trainer is not None and trainer.world_size > 1

    def on_validation_epoch_start(self) -> None:
        self._val_cm = torch.zeros_like(self._val_cm)
        self._val_loss = torch.zeros(2, device=self.device)  # sum of sample losses, samples

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        # summed here and logged once per epoch, like the training loss (no per-step self.log)
        self._val_loss[0] += loss.detach().float() * x.shape[0]
        self._val_loss[1] += x.shape[0]
        cm = confusion_matrix(logits.argmax(1), y, self.spec.class_count)
        self._val_cm += cm.cpu()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        cm, loss = self._val_cm, self._val_loss
        if self._distributed:  # every process validated its share: sum the confusion matrices
            cm = self.trainer.strategy.reduce(cm.to(self.device), reduce_op="sum").cpu()
            loss = self.trainer.strategy.reduce(loss, reduce_op="sum")
        logged = {"val_loss": float(loss[0] / loss[1])} if float(loss[1]) > 0 else {}
        for k, v in metrics_from_confusion(cm, self.class_names).items():
            if not math.isnan(v):
                logged[f"val_{k}"] = v
        self.log_dict(logged)
        self._warn_missed_classes(cm)

    #: a class validated on but never predicted right for this many epochs is reported
    missed_class_epochs = 3

    def _warn_missed_classes(self, cm: torch.Tensor) -> None:
        """Warn (once per class and run) when a class present in the validation patches got
        no voxel right for :attr:`missed_class_epochs` epochs in a row: the user sees a class
        at Dice 0 during training, with what to do, not after it."""
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.global_rank != 0:
            return  # the confusion matrix is already summed over the processes: warn once
        counts = getattr(self, "_missed", None)
        if counts is None:
            counts = self._missed = [0] * self.spec.class_count
            self._missed_warned: set[int] = set()
        present = cm.sum(1) > 0
        hit = torch.diagonal(cm) > 0
        for c in range(self.spec.class_count):
            counts[c] = counts[c] + 1 if bool(present[c]) and not bool(hit[c]) else 0
            if counts[c] >= self.missed_class_epochs and c not in self._missed_warned:
                self._missed_warned.add(c)
                name = self.class_names[c] if c < len(self.class_names) else str(c)
                share = float(cm[c].sum() / max(1, int(cm.sum())))
                warnings.warn(
                    f"Class {name!r} ({share:.2%} of the validation voxels) has not been "
                    f"predicted right once in {counts[c]} epochs (validation Dice 0): label "
                    "more of it, raise 'Rare-class sampling' (class_balance) or its class "
                    "weight, or train longer.",
                    UserWarning,
                    stacklevel=2,
                )

    def _optimizer_steps_per_epoch(self) -> int:
        """Optimiser steps of one epoch in this process: the batches split over the devices
        (DDP) and grouped by gradient accumulation."""
        try:
            world = max(1, int(self.trainer.world_size))
            accumulate = max(1, int(self.trainer.accumulate_grad_batches))
        except (AttributeError, RuntimeError):  # not attached to a trainer
            world, accumulate = 1, 1
        return max(1, math.ceil(math.ceil(self.steps_per_epoch / world) / accumulate))

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.params, self.network.parameters())
        p = self.params
        if p.lr_schedule == "constant":
            return opt
        sched: torch.optim.lr_scheduler.LRScheduler
        if p.lr_schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=p.plateau_factor, patience=p.plateau_patience
            )
            monitor = "val_loss" if self.has_validation else "loss"
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": monitor}}
        if p.lr_schedule == "cosine" and p.max_minutes:
            budget = max(0.1 * p.max_minutes * 60.0, p.max_minutes * 60.0 - self.time_spent_s)
            total = max(1, p.epochs * self._optimizer_steps_per_epoch())
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _TimeCosine(budget, total))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if p.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, p.epochs))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=p.learning_rate, total_steps=max(2, p.epochs * self.steps_per_epoch)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def strong_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch with a random intensity change per sample (inputs normalised to about
    0 … 1): contrast 0.7 … 1.3 about the sample's mean, brightness ± 0.1, Gaussian noise of
    std 0 … 0.1. Geometry unchanged."""
    b = x.shape[0]
    view = (b,) + (1,) * (x.dim() - 1)

    def draw(lo: float, hi: float) -> torch.Tensor:
        r = torch.rand(b, generator=generator)
        return (lo + (hi - lo) * r).to(device=x.device, dtype=x.dtype).view(view)

    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    out = (x - mean) * draw(0.7, 1.3) + mean + draw(-0.1, 0.1)
    noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    return out + noise * draw(0.0, 0.1)


def fit_auto_patch(
    pshape: tuple[int, int, int], sets: Sequence[PreparedSet], spec: ModelSpec
) -> tuple[int, int, int]:
    """Shrink an automatic patch shape to the smallest volume (y, x; and z in 3D), keeping
    each side a multiple of the network's size divisor."""

    div = size_divisor(spec)
    out = list(pshape)
    for axis in range(3):
        if axis == 0 and spec.input_dimension != "3D":
            continue
        limit = min(ps.shape[axis] for ps in sets)
        if out[axis] > limit:
            out[axis] = max(div, limit // div * div) if limit >= div else limit
    return out[0], out[1], out[2]
