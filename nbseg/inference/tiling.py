"""Sliding-window geometry and blending, shared by in-memory and streamed segmentation.

Tiles are placed like MONAI's ``sliding_window_inference`` (step = window × (1 - overlap),
the last tile flush with the border); each tile's softmax is weighted by MONAI's Gaussian
importance map (sigma = window / 8) and the weighted sums are normalised by :func:`blend`.
A volume thinner than the window is padded after its end (:func:`pad_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from ..data.multiroi import OUTSIDE_MASK
from ..models.registry import size_divisor

if TYPE_CHECKING:
    from ..model import Model

#: How a volume thinner than the window is padded (see :func:`pad_plan`).
PadMode = Literal["reflect", "edge"]

__all__ = [
    "blend",
    "default_window",
    "gaussian_importance",
    "output_attrs",
    "pad_plan",
    "pad_to_window",
    "resolve_window",
    "round_up",
    "tile_starts",
]


def tile_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start indices of windows along one axis (MONAI's placement)."""
    if length <= window:
        return [0]
    interval = max(1, int(window * (1 - overlap)))
    num = math.ceil((length - window) / interval) + 1
    return [min(i * interval, length - window) for i in range(num)]


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian tile weights (sigma = window × ``sigma_scale``), MONAI's own importance map,
    so that blending matches ``monai.inferers.sliding_window_inference`` exactly."""
    from monai.data.utils import compute_importance_map  # heavy: imported when first used

    m = compute_importance_map(
        tuple(int(w) for w in window), mode="gaussian", sigma_scale=sigma_scale, device="cpu"
    )
    return m.numpy().astype(np.float32)


def round_up(v: int, d: int) -> int:
    """``v`` rounded up to a multiple of ``d``."""
    return int(math.ceil(v / d) * d)


def default_window(model: Model, shape: Sequence[int]) -> tuple[int, int, int]:
    """The model's training patch as a ``(z, y, x)`` window (``z`` = 1 for 2D/2.5D models),
    rounded up to the network's size divisor."""

    p = model.params.patch_for(model.spec) if model.params is not None else 64
    ps = (p, p, p) if isinstance(p, int) else tuple(p)
    div = size_divisor(model.spec)
    wz = ps[-3] if model.spec.input_dimension == "3D" else 1
    wy, wx = ps[-2], ps[-1]
    return wz, round_up(wy, div), round_up(wx, div)


def resolve_window(
    model: Model, window: int | Sequence[int] | None, shape: Sequence[int]
) -> tuple[int, int, int]:
    """The ``(z, y, x)`` window for ``model`` on a volume of ``shape``: ``window`` (one side
    or per axis) or the training patch, rounded up to the network's size divisor; a 3D
    window is kept no deeper than the volume needs."""

    div = size_divisor(model.spec)
    is3d = model.spec.input_dimension == "3D"
    if window is None:
        win = default_window(model, tuple(shape))
    else:
        w = (window,) * 3 if isinstance(window, int) else tuple(int(v) for v in window)
        if is3d:
            win = (round_up(w[-3], div), round_up(w[-2], div), round_up(w[-1], div))
        else:
            win = (1, round_up(w[-2], div), round_up(w[-1], div))
    if is3d:
        # a volume thinner than the window is padded; keep the window no deeper than needed
        win = (min(win[0], round_up(shape[0], div)), *win[1:])
    return win


def pad_plan(
    shape: Sequence[int], window: tuple[int, int, int], is3d: bool
) -> tuple[list[int], PadMode]:
    """Padding after the end of each axis of a volume thinner than the window, and its mode."""
    pads = [max(0, w - s) if (a > 0 or is3d) else 0 for a, (w, s) in enumerate(zip(window, shape))]
    mode: PadMode = "reflect" if all(p < s for p, s in zip(pads, shape)) else "edge"
    return pads, mode


def pad_to_window(
    vol: np.ndarray, mask: np.ndarray | None, window: tuple[int, int, int], is3d: bool
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int]]:
    """``vol`` ``(C, Z, Y, X)`` (and ``mask``) padded to at least one window, with the
    unpadded shape ``(Z, Y, X)`` to crop the result back to."""
    shape = vol.shape[1:]
    pads, mode = pad_plan(shape, window, is3d)
    if not any(pads):
        return vol, mask, shape
    vol = np.pad(vol, [(0, 0)] + [(0, p) for p in pads], mode=mode)
    if mask is not None:
        mask = np.pad(mask, [(0, p) for p in pads], mode="constant")
    return vol, mask, shape


def blend(
    acc: np.ndarray, wsum: np.ndarray, mask: np.ndarray | None, probabilities: bool
) -> np.ndarray:
    """Normalise weighted sums into probabilities ``(K, Z, Y, X)`` float32, or int16 labels
    ``(Z, Y, X)`` with ``-1`` where no tile predicted or outside ``mask``.

    Works in place (``acc`` is overwritten) and takes the arg-max slice by slice, so the
    peak is ``acc`` plus one slice, not several copies of it.
    """
    covered = wsum > 0
    prob = acc if acc.dtype == np.float32 else acc.astype(np.float32)
    np.divide(prob, np.where(covered, wsum, np.float32(1))[None], out=prob)
    prob[:, ~covered] = 0
    if probabilities:
        return prob
    labels = np.empty(prob.shape[1:], np.int16)
    for z in range(prob.shape[1]):
        labels[z] = prob[:, z].argmax(axis=0)
    invalid = ~covered if mask is None else ~(covered & mask)
    labels[invalid] = OUTSIDE_MASK
    return labels


def output_attrs(model: Model, ref: xr.DataArray) -> dict[str, Any]:
    """Attributes of a segmentation: the image's plus class names, colours and model name."""
    attrs = dict(ref.attrs)
    attrs.update(class_names=list(model.class_names), class_colors=list(model.class_colors))
    attrs["model"] = model.name
    return attrs
