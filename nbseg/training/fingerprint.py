"""A training budget that fits the data: the data fingerprint and the plan made from it.

:func:`fingerprint` reads what matters for the budget from the training sets — the image
sizes, the number of inputs, the labelled voxels and slices, the class frequencies — and
:func:`plan_training` turns it, with the device at hand and a time budget, into training
parameters (nnU-Net's idea, sized for the CPU or GPU that will train):

- **patch size**: the largest of 128 / 96 / 64 / 48 / 32 (2D, 2.5D) or 64 / 48 / 32 / 24 / 16
  (3D) that fits the images and the network's size divisor;
- **batch size**: 8 patches in 2D, 2 in 3D on a CPU (16 / 4 on a GPU), halved while the
  memory estimate exceeds 60 % of the device's memory;
- **epochs and time budget**: the budget (``budget_minutes``, default 5 minutes on a CPU and
  10 on a GPU) divided by the measured time of one training step gives the optimiser steps;
  ``epochs`` is that over the steps of one epoch (the labelled patches / batch), between 3 and
  500, and ``max_minutes`` becomes the budget (the cosine schedule follows the nearer of
  the clock and the epochs);
- **rare-class sampling**: ``class_balance = 0.5`` when a labelled class holds under 2 % of the
  labelled voxels, else 0.

Every value is a plain :class:`TrainingParams` field: the plan is shown before training and
each value can be overridden. Which values win on real data is measured in
``benchmarks/quality.py`` (docs/benchmarks.md); the plan is offered, not the default.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.multiroi import UNLABELLED
from ..data.patches import PreparedSet, grid_boxes, patch_shape
from ..data.trainingset import TrainingSet
from ..devices import torch_device
from ..errors import InputError
from ..jobs import BackgroundJob
from ..models.registry import build_network, input_shape, size_divisor
from ..models.spec import ModelSpec
from .losses import cross_entropy
from .params import TrainingParams

__all__ = [
    "DataFingerprint",
    "PlanningRun",
    "TrainingBudgetPlan",
    "fingerprint",
    "plan_training",
]

PATCHES_2D = (128, 96, 64, 48, 32)
PATCHES_3D = (64, 48, 32, 24, 16)
RARE_CLASS = 0.02


@dataclass(frozen=True)
class DataFingerprint:
    """What the training data looks like, for sizing the training."""

    input_dimension: str
    inputs: int
    shapes: tuple[tuple[int, int, int], ...]
    labelled_voxels: int
    slices_per_set: tuple[int, ...]
    class_names: tuple[str, ...]
    class_voxels: tuple[int, ...]

    @property
    def labelled_slices(self) -> int:
        """Slices (along z) holding labels, over all sets."""
        return int(sum(self.slices_per_set))

    @property
    def class_fractions(self) -> tuple[float, ...]:
        total = max(1, sum(self.class_voxels))
        return tuple(v / total for v in self.class_voxels)

    @property
    def rarest(self) -> tuple[str, float]:
        """(name, fraction of the labelled voxels) of the rarest labelled class."""
        pairs = [(n, f) for n, f in zip(self.class_names, self.class_fractions) if f > 0]
        return min(pairs, key=lambda p: p[1]) if pairs else ("", 0.0)


def fingerprint(
    training_sets: Sequence[TrainingSet] | TrainingSet, spec: ModelSpec
) -> DataFingerprint:
    """The :class:`DataFingerprint` of ``training_sets`` for a model of ``spec``."""
    sets = [training_sets] if isinstance(training_sets, TrainingSet) else list(training_sets)
    if not sets or not all(isinstance(ts, TrainingSet) for ts in sets):
        raise InputError(
            "training_sets: give a TrainingSet or a list of them (nbseg.TrainingSet(image, labels))."
        )
    k = spec.class_count
    counts = np.zeros(k, np.int64)
    shapes, slices = [], []
    for ts in sets:
        lab = ts.labels_volume()
        shapes.append(tuple(int(s) for s in lab.shape))
        valid = lab != UNLABELLED
        counts += np.bincount(lab[valid & (lab < k)].ravel().astype(np.int64), minlength=k)[:k]
        slices.append(int(valid.any(axis=(1, 2)).sum()))
    names = tuple(sets[0].class_names[:k]) if sets[0].class_names else tuple(map(str, range(k)))
    return DataFingerprint(
        input_dimension=spec.input_dimension,
        inputs=spec.input_count,
        shapes=tuple(shapes),  # type: ignore[arg-type]
        labelled_voxels=int(counts.sum()),
        slices_per_set=tuple(slices),
        class_names=names,
        class_voxels=tuple(int(c) for c in counts),
    )


@dataclass(frozen=True)
class TrainingBudgetPlan:
    """The parameters :func:`plan_training` chose, why, and what it measured."""

    params: TrainingParams
    reasons: dict[str, str]
    fingerprint: DataFingerprint
    step_seconds: float
    steps_per_epoch: int
    device: str

    def changes(self, base: TrainingParams) -> dict[str, Any]:
        """The planned values that differ from ``base``."""
        return {
            f: getattr(self.params, f)
            for f in self.reasons
            if getattr(self.params, f) != getattr(base, f)
        }

    def describe(self) -> str:
        """One line per planned setting: value and reason."""
        return "\n".join(
            f"{f} = {getattr(self.params, f)!r}: {why}" for f, why in self.reasons.items()
        )


def _fitting_patch(fp: DataFingerprint, divisor: int) -> int:
    three_d = fp.input_dimension == "3D"
    smallest = min(min(s if three_d else s[1:]) for s in fp.shapes)
    for p in PATCHES_3D if three_d else PATCHES_2D:
        if p <= smallest and p % divisor == 0:
            return p
    if smallest < divisor:
        raise InputError(
            f"The smallest training image is {smallest} voxels across, less than the "
            f"network's size divisor {divisor}: use larger images or a shallower network."
        )
    return (smallest // divisor) * divisor


def _patches_per_epoch(
    sets: Sequence[TrainingSet],
    spec: ModelSpec,
    patch: int,
    stride_ratio: float,
    train_share: float,
) -> int:
    """Training patches of one epoch before augmentation: the grid patches that hold labels
    (as training enumerates them, with the stride ratio), less the validation share."""
    pshape = patch_shape(spec, patch)
    n = 0
    for ts in sets:
        lab = ts.labels_volume()
        ps = PreparedSet(image=np.empty((1, 1, 1, 1), np.float32), labels=lab, name=ts.name)
        n += len(grid_boxes(ps, pshape, stride_ratio))
    return max(1, round(n * train_share))


def _step_seconds(spec: ModelSpec, patch: int, batch: int, device: str) -> float:
    """Seconds of one training step (forward, loss, backward, Adam), median of 3 after a
    warm-up step, at 32-bit precision."""
    dev = torch.device(torch_device(device))
    net = build_network(spec).to(dev).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    shape = input_shape(spec, patch, batch)
    x = torch.randn(shape, device=dev)
    y = torch.randint(0, spec.class_count, (shape[0], *shape[2:]), device=dev)
    times = []
    for i in range(4):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def plan_training(
    training_sets: Sequence[TrainingSet] | TrainingSet,
    spec: ModelSpec,
    params: TrainingParams | None = None,
    *,
    budget_minutes: float | None = None,
    device: str | None = None,
    step_seconds: float | None = None,
    validation: float = 0.2,
) -> TrainingBudgetPlan:
    """Training parameters sized to the data and the device (module docstring).

    ``params``: the starting point (default: the defaults); only patch size, batch size,
    epochs, ``max_minutes`` and ``class_balance`` are planned, the rest is kept.
    ``budget_minutes``: the wall-clock budget (default: ``params.max_minutes`` when it is
    not the 10-minute default, else 5 minutes on a CPU and 10 on a GPU). ``step_seconds``: the time of one step, if known (else measured in a
    few steps of the network on ``device``, default ``params.device``, at 32-bit precision:
    with bf16 on a GPU the plan errs towards fewer epochs). ``validation``: the share of the
    labelled patches kept for validation (as for :func:`nbseg.train`; 0 for separate sets).
    """
    base = params if params is not None else TrainingParams()
    dev = device or base.device
    base = dataclasses.replace(base, device=dev)
    gpu = torch_device(dev).startswith("cuda")
    if budget_minutes is None:
        own = base.max_minutes if base.max_minutes != TrainingParams().max_minutes else None
        budget_minutes = own or (10.0 if gpu else 5.0)
    if not float(budget_minutes) > 0:
        raise InputError(f"budget_minutes={budget_minutes!r} is invalid: give minutes > 0.")
    fp = fingerprint(training_sets, spec)
    if fp.labelled_voxels == 0:
        raise InputError("The training sets hold no labelled voxel: paint some labels first.")
    three_d = spec.input_dimension == "3D"
    reasons: dict[str, str] = {}
    patch = _fitting_patch(fp, size_divisor(spec))
    reasons["patch_size"] = (
        f"largest standard {'cube' if three_d else 'square'} that fits the smallest image "
        f"{min(fp.shapes, key=lambda s: min(s if three_d else s[1:]))} and the network's size "
        f"divisor {size_divisor(spec)}"
    )
    batch = (4 if three_d else 16) if gpu else (2 if three_d else 8)
    trial = dataclasses.replace(base, patch_size=patch, batch_size=batch)
    ratio = trial.memory_ratio(spec)
    while batch > 1 and ratio > 0.6:
        batch //= 2
        trial = dataclasses.replace(trial, batch_size=batch)
        ratio = trial.memory_ratio(spec)
    reasons["batch_size"] = f"{'GPU' if gpu else 'CPU'} default for {spec.input_dimension}, " + (
        f"memory ratio {ratio:.2f} (within 60 % of the device memory)"
        if ratio <= 0.6
        else f"memory ratio {ratio:.2f} even at batch 1: use a smaller patch or model"
    )
    secs = step_seconds if step_seconds is not None else _step_seconds(spec, patch, batch, dev)
    factor = max(1, base.augmentation.factor)
    sets = [training_sets] if isinstance(training_sets, TrainingSet) else list(training_sets)
    share = 1.0 - min(max(float(validation), 0.0), 0.9)
    patches = _patches_per_epoch(sets, spec, patch, base.stride_ratio, share)
    steps_per_epoch = math.ceil(patches * factor / batch)
    steps = max(1, int(float(budget_minutes) * 60.0 / max(secs, 1e-4)))
    epochs = int(min(500, max(3, steps // max(1, steps_per_epoch))))
    reasons["epochs"] = (
        f"{float(budget_minutes):g} min / {secs:.2f} s per step = {steps} steps, "
        f"{steps_per_epoch} steps per epoch ({patches} labelled patches x {factor} "
        f"augmented copies / batch {batch})"
    )
    reasons["max_minutes"] = (
        "the time budget: training stops on time, the schedule follows it or the epochs, "
        "whichever ends first"
    )
    rare, share = fp.rarest
    balance = 0.5 if share < RARE_CLASS else 0.0
    reasons["class_balance"] = f"rarest class {rare!r} holds {share:.2%} of the labelled voxels" + (
        f" (< {RARE_CLASS:.0%}): over-sample it" if balance else ""
    )
    planned = dataclasses.replace(
        base,
        patch_size=patch,
        batch_size=batch,
        epochs=epochs,
        max_minutes=float(budget_minutes),
        class_balance=balance,
    )
    planned.validate()
    return TrainingBudgetPlan(
        params=planned,
        reasons=reasons,
        fingerprint=fp,
        step_seconds=secs,
        steps_per_epoch=steps_per_epoch,
        device=dev,
    )


class PlanningRun(BackgroundJob):
    """:func:`plan_training` in a background job (it times a few training steps); ``result``
    is the :class:`TrainingBudgetPlan`. Arguments as for ``plan_training``."""

    kind = "training plan"

    def __init__(self, training_sets: Any, spec: ModelSpec, params: Any = None, **kw: Any) -> None:
        super().__init__()
        self.args = (training_sets, spec, params)
        self.kwargs = dict(kw)
        self.result: TrainingBudgetPlan | None = None

    def _run(self) -> TrainingBudgetPlan:
        return plan_training(*self.args, **self.kwargs)
