"""Segmentation losses and metrics that ignore unlabelled voxels (target ``-1``).

All losses take raw logits ``(B, K, *S)`` and an int64 target ``(B, *S)`` with ``-1`` for
unlabelled voxels. Dice-type terms are computed over the whole batch ("batch Dice"), which is
stable when a class is absent from some patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .params import TrainingParams

IGNORE = -1


def _flatten(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` logits and ``(N,)`` targets of the labelled voxels only."""
    k = logits.shape[1]
    flat = logits.movedim(1, -1).reshape(-1, k)
    t = target.reshape(-1)
    keep = t != IGNORE
    return flat[keep], t[keep]


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE)


def _soft_counts(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives per class."""
    flat, t = _flatten(logits.float(), target)
    p = flat.softmax(dim=1)
    g = F.one_hot(t, flat.shape[1]).to(p.dtype)
    tp = (p * g).sum(0)
    fp = (p * (1 - g)).sum(0)
    fn = ((1 - p) * g).sum(0)
    return tp, fp, fn


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over classes."""
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    tp, fp, fn = _soft_counts(logits, target)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return 1.0 - dice.mean()


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Tversky loss: ``alpha`` weighs false positives, ``beta`` false negatives."""
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    tp, fp, fn = _soft_counts(logits, target)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return 1.0 - index.mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    flat, t = _flatten(logits.float(), target)
    logp = flat.log_softmax(dim=1).gather(1, t[:, None])[:, 0]
    loss = -((1 - logp.exp()) ** gamma) * logp
    if weight is not None:
        w = weight[t]
        return (loss * w).sum() / w.sum().clamp_min(1e-8)
    return loss.mean()


class SegmentationLoss(torch.nn.Module):
    """The loss chosen in :class:`TrainingParams` (``dice_ce`` = cross-entropy + Dice)."""

    weight: torch.Tensor | None  # a buffer (None without class weights)

    def __init__(self, params: TrainingParams, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.name = params.loss
        self.gamma = params.focal_gamma
        self.alpha, self.beta = params.tversky_alpha, params.tversky_beta
        w = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("weight", w, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # under bf16/fp16 autocast the network's logits are low precision: the soft counts of
        # the Dice terms and the log-softmax need fp32 (outside autocast, or they stay bf16)
        with torch.autocast(logits.device.type, enabled=False):
            return self._loss(logits.float(), target)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.name == "cross_entropy":
            return cross_entropy(logits, target, self.weight)
        if self.name == "dice":
            return dice_loss(logits, target)
        if self.name == "dice_ce":
            return cross_entropy(logits, target, self.weight) + dice_loss(logits, target)
        if self.name == "focal":
            return focal_loss(logits, target, self.gamma, self.weight)
        if self.name == "tversky":
            return tversky_loss(logits, target, self.alpha, self.beta)
        raise ValueError(self.name)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, class_count: int) -> torch.Tensor:
    """``(K, K)`` counts, rows = true class, columns = predicted; unlabelled voxels skipped."""
    t = target.reshape(-1)
    p = pred.reshape(-1)
    keep = t != IGNORE
    idx = t[keep] * class_count + p[keep]
    return torch.bincount(idx, minlength=class_count * class_count).reshape(
        class_count, class_count
    )


def metrics_from_confusion(
    confusion: torch.Tensor | Sequence[Sequence[int]], class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Dice, IoU per class and their means over classes present, and accuracy.

    A class absent from both the target and the prediction gets NaN and is left out of means.
    """
    cm = torch.as_tensor(confusion, dtype=torch.float64)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    dice = 2 * tp / (2 * tp + fp + fn)
    iou = tp / (tp + fp + fn)
    out: dict[str, float] = {}
    for i in range(k):
        out[f"dice_{names[i]}"] = float(dice[i])
        out[f"iou_{names[i]}"] = float(iou[i])
    valid = ~torch.isnan(dice)
    out["dice"] = float(dice[valid].mean()) if valid.any() else float("nan")
    out["iou"] = float(iou[valid].mean()) if valid.any() else float("nan")
    total = cm.sum()
    out["accuracy"] = float(tp.sum() / total) if total > 0 else float("nan")
    return out
