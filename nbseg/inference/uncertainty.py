"""Where the model is unsure, and where to label next.

- :func:`uncertainty`: a float32 map in [0, 1] with the image's dims and coords (entropy,
  margin or test-time-flip disagreement), in memory or streamed into zarr.
- :func:`suggest_slices` / :func:`suggest_regions`: the slices (and boxes) most worth
  labelling next, scored from the uncertainty, the rarity of the predicted classes and the
  share of voxels whose intensity no label covers (:func:`novelty`).

The loop they serve: paint a few slices → :func:`nbseg.train` → ``suggest_slices`` → paint
the suggested slice → ``nbseg.train(model, ...)`` again, which continues from the model's
current weights (its history continues) → the suggestions move on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import xarray as xr

from ..data.multiroi import UNLABELLED
from ..data.trainingset import CHANNEL_DIMS
from ..errors import InputError
from ..progress import ProgressCallback
from .maps import (
    aligned_mask,
    as_images,
    check_method,
    labels_from_probabilities,
    masked,
    method_map,
    probability_settings,
    with_uncertainty,
)
from .settings import InferenceSettings
from .sliding import segment

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "Region",
    "Suggestions",
    "novelty",
    "suggest",
    "suggest_regions",
    "suggest_slices",
    "uncertainty",
]


class Region(NamedTuple):
    """A box worth labelling: slice ``z`` (0 for a 2D image), rows ``y0:y1``, columns
    ``x0:x1`` (positions, not coordinates) and its ``score`` (higher = more useful)."""

    z: int
    y0: int
    y1: int
    x0: int
    x1: int
    score: float


@dataclass(frozen=True)
class Suggestions:
    """What :func:`suggest` found, from one pass of the model over the image.

    ``slices`` (most useful first) with their ``slice_scores``, ``regions`` (boxes on any
    slice), and the maps they come from: ``uncertainty`` (as :func:`uncertainty`),
    ``prediction`` (labels as :func:`nbseg.segment`), both with the image's dims and coords,
    and ``novelty`` (voxels whose intensity the labels do not cover, :func:`novelty`), with
    each suggested slice's share of them in ``slice_novelty``.
    """

    axis: str
    slices: list[int]
    slice_scores: list[float]
    regions: list[Region]
    uncertainty: xr.DataArray = field(repr=False)
    prediction: xr.DataArray = field(repr=False)
    method: str = "entropy"
    unsure_level: float = 0.5
    """The outline level: the larger of 0.5 and the volume's 90th percentile of uncertainty."""
    novelty: xr.DataArray | None = field(default=None, repr=False)
    """Bool map (the image's dims) of the voxels whose intensity the labels do not cover
    (:func:`novelty`); None when nothing is labelled."""
    slice_novelty: list[float] = field(default_factory=list)
    """Per suggested slice: the share of its voxels in :attr:`novelty`."""

    def uncertain_mask(self, z: int, level: float | None = None) -> np.ndarray:
        """Where slice ``z`` (position along ``axis``) is unsure: uncertainty above ``level``
        (default :attr:`unsure_level`) or an intensity the labels do not cover
        (:attr:`novelty`), as a ``(H, W)`` bool array in the image's dim order — what the
        Label tab outlines."""
        u = self.uncertainty
        if level is None:
            level = self.unsure_level
        plane = u.isel({self.axis: int(z)}) if u.ndim == 3 else u
        out = np.asarray(plane.values) > float(level)
        if self.novelty is not None:
            new = self.novelty.isel({self.axis: int(z)}) if u.ndim == 3 else self.novelty
            out |= np.asarray(new.values, bool)
        return out


# -- public API --------------------------------------------------------------------------------
def uncertainty(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    mask: xr.DataArray | None = None,
    method: str = "entropy",
    progress: ProgressCallback | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    settings: InferenceSettings | Mapping[str, Any] | None = None,
    stop_event: threading.Event | None = None,
    **overrides: Any,
) -> xr.DataArray:
    """Per-voxel uncertainty of ``model`` on ``image``: float32 in [0, 1], same dims and
    coords as the image (0 outside the mask).

    Parameters
    ----------
    model, image, mask
        As for :func:`nbseg.segment` (a list of DataArrays for several inputs; dask-backed
        images stream).
    method
        ``"entropy"`` (default): predictive entropy divided by ``log K`` (1 = all classes
        equally likely). ``"margin"``: ``1 - (p_top1 - p_top2)`` (1 = a tie between the two
        most likely classes). ``"tta"``: disagreement (mutual information, divided by
        ``log K``) between the predictions of the image and its three y/x flips: four passes,
        high where the model's answer depends on the view.
    progress
        Called with :class:`nbseg.progress.Progress` records, as for ``segment``.
    out, overwrite
        A zarr path: the map is computed slab by slab and written there as variable
        ``uncertainty`` (memory stays flat; atomic: the old store or the new one); returns it
        opened lazily. Never one of the inputs.
    settings, **overrides
        Inference settings (``window``, ``overlap``, ``batch_size``, ``tta``, ``device``, ...)
        as for ``segment``.
    """
    _labels, u = with_uncertainty(
        segment,
        model,
        image,
        mask,
        method=method,
        progress=progress,
        out=out,
        overwrite=overwrite,
        settings=settings,
        overrides=overrides,
        stop_event=stop_event,
        with_labels=False,
    )
    return u


def _spatial(ref: xr.DataArray) -> xr.DataArray:
    """``ref`` without its channel dim (the first channel): the dims labels live on."""
    extra = [d for d in map(str, ref.dims) if d in CHANNEL_DIMS]
    return ref.isel({d: 0 for d in extra}) if extra else ref


def _labelled_mask(labels: Any, ref: xr.DataArray) -> np.ndarray | None:
    """Where ``labels`` holds a label, as a bool array in the dims order of ``ref`` (the
    image, channel dims ignored); None when ``labels`` is None. Checks the labels fit."""
    if labels is None:
        return None
    ref = _spatial(ref)
    if isinstance(labels, np.ndarray):
        if labels.ndim != ref.ndim:
            raise InputError(
                f"labels has {labels.ndim} dims but the image {ref.ndim} {ref.dims}; give the "
                "multi-ROI of this image."
            )
        labels = xr.DataArray(labels, dims=ref.dims)
    if not isinstance(labels, xr.DataArray):
        raise InputError(f"labels: expected a multi-ROI DataArray, got {type(labels).__name__}.")
    if set(map(str, labels.dims)) != set(map(str, ref.dims)):
        if labels.ndim != ref.ndim:
            raise InputError(
                f"labels has dims {labels.dims} but the image has {ref.dims}; give the multi-ROI "
                "of this image."
            )
        labels = labels.rename(dict(zip(labels.dims, ref.dims)))
    labels = labels.transpose(*ref.dims)
    if labels.shape != ref.shape:
        raise InputError(
            f"labels has shape {dict(labels.sizes)} but the image {dict(ref.sizes)}; give the "
            "multi-ROI of this image."
        )
    marker = labels.attrs.get("unlabelled", UNLABELLED)
    arr = np.asarray(labels.values)
    return (arr != marker) & (arr != UNLABELLED)


def _along(has: np.ndarray | None, ref: xr.DataArray, axis: str) -> np.ndarray:
    """Per position along ``axis`` of ``ref``: whether the labelled mask ``has`` holds any
    label there."""
    ref = _spatial(ref)
    n = ref.sizes[axis]
    if has is None:
        return np.zeros(n, bool)
    pos = [str(d) for d in ref.dims].index(axis)
    return np.asarray(np.moveaxis(has, pos, 0).reshape(n, -1).any(axis=1), bool)


def _in_order(has: np.ndarray | None, ref: xr.DataArray, dims: Sequence[str]) -> np.ndarray | None:
    """The labelled mask ``has`` (``ref``'s spatial dims order) transposed to ``dims``."""
    if has is None:
        return None
    src = [str(d) for d in _spatial(ref).dims]
    dims = [str(d) for d in dims]
    return has if src == dims else np.transpose(has, [src.index(d) for d in dims])


def _maps(
    model: Model,
    image: Any,
    mask: xr.DataArray | None,
    method: str,
    settings: Any,
    overrides: Mapping[str, Any],
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> tuple[xr.DataArray, xr.DataArray, int]:
    """(uncertainty, predicted labels, class count), computed in memory."""
    check_method(method)
    images = as_images(image)
    s = probability_settings(settings, overrides)
    u, p = method_map(segment, model, images, mask, method, s, progress, stop_event)
    pred = labels_from_probabilities(p, aligned_mask(mask, p))
    return masked(u, mask).compute(), pred.compute(), int(p.sizes["class"])


def _voxel_scores(u: xr.DataArray, pred: xr.DataArray, k: int) -> tuple[xr.DataArray, xr.DataArray]:
    """(voxel score = uncertainty x rarity weight of the predicted class, in-mask flag)."""
    valid = pred.values >= 0
    counts = np.bincount(pred.values[valid].ravel(), minlength=k).astype(np.float64)
    freq = counts / max(1.0, counts.sum())
    weight = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
    weight /= max(1e-12, float((freq * weight).sum()))  # mean weight over the voxels = 1
    w = np.where(valid, weight[np.clip(pred.values, 0, k - 1)], 0.0)
    score = u.copy(data=(u.values * w).astype(np.float32))
    inside = u.copy(data=valid)
    return score, inside


#: intensity histogram of the novelty term: bins between the 0.1 and 99.9 percentiles
NOVELTY_BINS = 64
#: a bin is under-covered when the labelled voxels hold under this share of the image's
#: proportion of voxels in it (a tenth)
NOVELTY_COVER = 0.1
#: how much a slice's (or box's) share of novel voxels adds to its score: 10 % novel
#: voxels add 1, as much as the whole range of the uncertainty term
NOVELTY_WEIGHT = 10.0


#: voxels per slab when the novelty term reads the image (flat memory on big images)
NOVELTY_SLAB_VOXELS = 1 << 22
#: at most this many voxels (an even stride over the mask) set the histogram's range
NOVELTY_SAMPLE = 1 << 21


def _channel_planes(image: Any, dims: Sequence[str]) -> list[xr.DataArray]:
    """Every input channel of ``image`` as a (lazy) DataArray in ``dims`` order."""
    out = []
    for im in as_images(image):
        extra = [d for d in map(str, im.dims) if d in CHANNEL_DIMS]
        planes = [im.isel({extra[0]: i}) for i in range(im.sizes[extra[0]])] if extra else [im]
        for plane in planes:
            if set(map(str, plane.dims)) == set(dims):
                plane = plane.transpose(*dims)
            out.append(plane)
    return out


def novelty(image: Any, labels: Any, inside: np.ndarray, dims: Sequence[str]) -> np.ndarray | None:
    """Per voxel (``dims`` order): whether its intensity, in any input channel, lies in a
    range the labels under-cover — a bin of a :data:`NOVELTY_BINS`-bin histogram (between
    the 0.1 and 99.9 percentiles of the image inside the mask) where the labelled voxels'
    share is under :data:`NOVELTY_COVER` of the image's share. A model is confidently wrong
    on what it never saw (a mineral, a tissue, a contrast absent from the labelled slices):
    its uncertainty does not flag such voxels, this does. None when nothing is labelled.

    ``labels`` is the multi-ROI (or a bool array of where it holds labels, in ``dims``
    order); ``inside`` the bool in-mask flag in ``dims`` order. The image is read slab by
    slab (:data:`NOVELTY_SLAB_VOXELS`), so a dask image is never held whole as float; the
    extra memory is one byte per voxel."""
    dims = [str(d) for d in dims]
    if labels is None:
        return None
    if isinstance(labels, np.ndarray) and labels.dtype == bool:
        has: np.ndarray | None = labels
    else:
        has = _labelled_mask(labels, xr.DataArray(np.empty(inside.shape, bool), dims=dims))
    assert has is not None
    labelled = has & inside
    n_lab, n_in = int(labelled.sum()), int(inside.sum())
    if not n_lab or not n_in:
        return None
    n0 = inside.shape[0]
    per = max(1, NOVELTY_SLAB_VOXELS // max(1, int(np.prod(inside.shape[1:]))))
    slabs = [slice(i, min(i + per, n0)) for i in range(0, n0, per)]
    stride = max(1, n_in // NOVELTY_SAMPLE)
    novel = np.zeros(inside.shape, bool)
    bins = np.zeros(inside.shape, np.uint8)
    for plane in _channel_planes(image, dims):
        if tuple(plane.shape) != inside.shape:
            continue

        def read(s: slice, plane: xr.DataArray = plane) -> np.ndarray:
            return np.asarray(plane.isel({dims[0]: s}).values, dtype=np.float32)

        if stride == 1:
            sample = np.concatenate([read(s)[inside[s]] for s in slabs])
        else:  # an even stride over the in-mask voxels, slab by slab
            parts, seen = [], 0
            for s in slabs:
                v = read(s)[inside[s]]
                parts.append(v[(-seen) % stride :: stride])
                seen += v.size
            sample = np.concatenate(parts)
        lo, hi = (float(q) for q in np.percentile(sample, [0.1, 99.9]))
        del sample
        if not hi > lo:
            continue
        scale = NOVELTY_BINS / (hi - lo)
        share = np.zeros(NOVELTY_BINS)
        share_lab = np.zeros(NOVELTY_BINS)
        for s in slabs:
            b = np.clip((read(s) - lo) * scale, 0, NOVELTY_BINS - 1).astype(np.uint8)
            bins[s] = b
            share += np.bincount(b[inside[s]], minlength=NOVELTY_BINS)
            share_lab += np.bincount(b[labelled[s]], minlength=NOVELTY_BINS)
        under = share_lab / n_lab < NOVELTY_COVER * (share / n_in)
        if under.any():
            for s in slabs:
                novel[s] |= under[bins[s]]
    return novel & inside


def _scores(
    model: Model,
    image: Any,
    mask: xr.DataArray | None,
    method: str,
    settings: Any,
    overrides: Mapping[str, Any],
    has: np.ndarray | None = None,
    ref: xr.DataArray | None = None,
) -> tuple[xr.DataArray, xr.DataArray, np.ndarray | None, np.ndarray | None]:
    """(voxel score, in-mask flag, labelled mask, novelty) for ``model`` on ``image``:
    :func:`_voxel_scores`, ``has`` (:func:`_labelled_mask` on ``ref``) in the score's dims
    order, and :func:`novelty`."""
    score, inside = _voxel_scores(*_maps(model, image, mask, method, settings, overrides))
    return (score, inside, *_labelled_and_novel(image, has, ref, score, inside))


def _labelled_and_novel(
    image: Any,
    has: np.ndarray | None,
    ref: xr.DataArray | None,
    score: xr.DataArray,
    inside: xr.DataArray,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if has is None or ref is None:
        return None, None
    dims = [str(d) for d in score.dims]
    lab = _in_order(has, ref, dims)
    return lab, novelty(image, lab, np.asarray(inside.values, bool), dims)


def _check_count(count: Any, name: str = "count") -> int:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"{name}={count!r} is invalid: give an integer >= 1.")
    return int(count)


def _check_quantile(quantile: Any) -> float:
    if not 0.0 < float(quantile) <= 1.0:
        raise InputError(f"quantile={quantile!r} is invalid: give a number in (0, 1].")
    return float(quantile)


def _check_axis(ref: xr.DataArray, axis: str) -> None:
    if axis not in map(str, ref.dims):
        raise InputError(
            f"axis={axis!r} is not a dim of the image {tuple(map(str, ref.dims))}; choose one of "
            "them."
        )


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 4:
        raise InputError(f"size={size!r} is invalid: give an integer >= 4 (voxels).")
    return int(size)


def _rank_slices(
    score: xr.DataArray,
    inside: xr.DataArray,
    labelled: np.ndarray,
    axis: str,
    quantile: float,
    count: int,
    novel: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(chosen slices, every slice's score (-inf for skipped ones), every slice's share of
    novel voxels)."""
    pos = list(score.dims).index(axis)
    n = score.sizes[axis]
    values = np.moveaxis(score.values, pos, 0).reshape(n, -1)
    ok = np.moveaxis(inside.values, pos, 0).reshape(n, -1)
    new = np.moveaxis(novel, pos, 0).reshape(n, -1) if novel is not None else None
    slice_scores = np.full(n, -np.inf)
    shares = np.zeros(n)
    for i in range(n):
        if new is not None and ok[i].any():
            shares[i] = float(new[i][ok[i]].mean())
        if labelled[i] or not ok[i].any():
            continue
        slice_scores[i] = (
            float(np.quantile(values[i][ok[i]], quantile)) + NOVELTY_WEIGHT * shares[i]
        )
    return _spread(slice_scores, count), slice_scores, shares


def suggest_slices(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    labels: xr.DataArray | None = None,
    count: int = 3,
    axis: str = "z",
    mask: xr.DataArray | None = None,
    *,
    method: str = "entropy",
    quantile: float = 0.9,
    settings: InferenceSettings | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> list[int]:
    """The ``count`` slices along ``axis`` most worth labelling next, most useful first.

    How slices are scored: each voxel's uncertainty (``method``, see :func:`uncertainty`) is
    multiplied by the rarity of its predicted class (``1 / sqrt(frequency)`` of the class in
    the whole prediction, scaled to mean 1), so that an unsure voxel of a rare class counts
    more than one of the background; a slice scores the ``quantile`` (0.9) of these values
    over its voxels inside the mask — high when a sizeable part of it is unsure, not just
    one voxel — plus ``10 ×`` the share of its voxels whose intensity the labels do not cover
    (:func:`novelty`: a model is often *confidently* wrong on what it never saw, e.g. a
    mineral present only in unlabelled slices; 10 % such voxels add 1). Slices that already
    hold labels in ``labels`` and slices with no voxel inside the mask are skipped, and
    suggestions are spread: no two adjacent slices unless nothing else is left. Returns
    slice indices (positions along ``axis``).
    """
    count = _check_count(count)
    quantile = _check_quantile(quantile)
    ref = as_images(image)[0]
    _check_axis(_spatial(ref), axis)
    has = _labelled_mask(labels, ref)
    labelled = _along(has, ref, axis)
    score, inside, _lab, novel = _scores(model, image, mask, method, settings, overrides, has, ref)
    return _rank_slices(score, inside, labelled, axis, quantile, count, novel)[0]


def _spread(scores: np.ndarray, count: int) -> list[int]:
    """Greedy picks by score, no two adjacent unless nothing else is left."""
    candidates = [int(i) for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
    chosen: list[int] = []
    for relax in (False, True):
        for i in candidates:
            if len(chosen) >= count:
                return chosen
            if i in chosen:
                continue
            if not relax and any(abs(i - c) <= 1 for c in chosen):
                continue
            chosen.append(i)
    return chosen


def suggest_regions(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    labels: xr.DataArray | None = None,
    count: int = 5,
    size: int = 64,
    mask: xr.DataArray | None = None,
    *,
    method: str = "entropy",
    settings: InferenceSettings | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> list[Region]:
    """Boxes of ``size`` x ``size`` voxels most worth painting, for large slices.

    Voxel scores as in :func:`suggest_slices` (uncertainty x class rarity); a box scores the
    mean over its voxels inside the mask plus ``10 ×`` its share of voxels whose intensity
    the labels do not cover (:func:`novelty`). Boxes are placed every ``size / 2`` voxels on every
    slice; boxes that are mostly labelled already (> 50 %) or mostly outside the mask are
    skipped, and the chosen boxes do not overlap. A 2D image gives ``z = 0``.
    """
    count, size = _check_count(count), _check_size(size)
    ref = as_images(image)[0]
    has = _labelled_mask(labels, ref)
    score, inside, lab, novel = _scores(model, image, mask, method, settings, overrides, has, ref)
    return _rank_regions(score, inside, lab, count, size, novel)


def _rank_regions(
    score: xr.DataArray,
    inside: xr.DataArray,
    labelled: np.ndarray | None,
    count: int,
    size: int,
    novel: np.ndarray | None = None,
) -> list[Region]:
    """Boxes by score (see :func:`suggest_regions`); ``labelled`` and ``novel`` are bool
    arrays in ``score``'s dims order (or None)."""
    dims = [str(d) for d in score.dims]
    first = dims.index("z") if score.ndim == 3 and "z" in dims else 0

    def zyx(a: np.ndarray) -> np.ndarray:  # slices first, then the plane in image order
        return np.moveaxis(a, first, 0) if a.ndim == 3 else a[None]

    vol, ok = zyx(np.asarray(score.values)), zyx(np.asarray(inside.values, bool))
    lab = zyx(labelled) if labelled is not None else np.zeros(vol.shape, bool)
    new = zyx(novel) if novel is not None else None
    nz, ny, nx = vol.shape
    sy, sx = min(size, ny), min(size, nx)

    def starts(n: int, s: int) -> list[int]:
        step = max(1, s // 2)
        out = list(range(0, max(1, n - s + 1), step))
        if out[-1] != n - s:
            out.append(max(0, n - s))
        return out

    boxes: list[Region] = []
    for z in range(nz):
        for y0 in starts(ny, sy):
            for x0 in starts(nx, sx):
                inside_box = ok[z, y0 : y0 + sy, x0 : x0 + sx]
                if inside_box.mean() < 0.5:
                    continue
                if lab[z, y0 : y0 + sy, x0 : x0 + sx].mean() > 0.5:
                    continue
                v = float(vol[z, y0 : y0 + sy, x0 : x0 + sx][inside_box].mean())
                if new is not None:
                    v += NOVELTY_WEIGHT * float(
                        new[z, y0 : y0 + sy, x0 : x0 + sx][inside_box].mean()
                    )
                boxes.append(Region(z, y0, y0 + sy, x0, x0 + sx, v))
    boxes.sort(key=lambda r: -r.score)
    chosen: list[Region] = []
    for b in boxes:
        if len(chosen) >= count:
            break
        if any(
            c.z == b.z and c.y0 < b.y1 and b.y0 < c.y1 and c.x0 < b.x1 and b.x0 < c.x1
            for c in chosen
        ):
            continue
        chosen.append(b)
    return chosen


def suggest(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    labels: xr.DataArray | None = None,
    count: int = 3,
    axis: str = "z",
    mask: xr.DataArray | None = None,
    *,
    regions: int = 5,
    size: int = 64,
    method: str = "entropy",
    quantile: float = 0.9,
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    settings: InferenceSettings | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Suggestions:
    """:func:`suggest_slices` and :func:`suggest_regions` (``regions`` boxes of ``size``)
    from one pass, with the uncertainty and prediction maps they were scored on (what the
    Label tab shows). Arguments as for those two; ``progress`` / ``stop_event`` as for
    :func:`nbseg.segment`."""
    count, size = _check_count(count), _check_size(size)
    n_regions = _check_count(regions, "regions")
    quantile = _check_quantile(quantile)
    ref = as_images(image)[0]
    _check_axis(_spatial(ref), axis)
    has = _labelled_mask(labels, ref)  # read once, checked before the model runs
    labelled = _along(has, ref, axis)
    u, pred, k = _maps(model, image, mask, method, settings, overrides, progress, stop_event)
    score, inside = _voxel_scores(u, pred, k)
    lab, novel = _labelled_and_novel(image, has, ref, score, inside)
    slices, scores, new = _rank_slices(score, inside, labelled, axis, quantile, count, novel)
    boxes = _rank_regions(score, inside, lab, n_regions, size, novel)
    return Suggestions(
        axis=axis,
        slices=slices,
        slice_scores=[float(scores[i]) for i in slices],
        regions=boxes,
        uncertainty=u,
        prediction=pred,
        method=method,
        unsure_level=max(0.5, float(np.quantile(np.asarray(u.values), 0.9))),
        novelty=u.copy(data=novel) if novel is not None else None,
        slice_novelty=[float(new[i]) for i in slices],
    )
