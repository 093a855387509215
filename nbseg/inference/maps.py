"""Per-voxel maps from class probabilities (uncertainty, labels) and a block-wise zarr writer.

Pure functions on xarray DataArrays with a leading ``class`` dim; numpy- or dask-backed
alike (dask stays lazy), so the in-memory and the streaming paths share them.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..data.multiroi import OUTSIDE_MASK
from ..data.trainingset import CHANNEL_DIMS
from ..errors import InputError
from ..jobs import Cancelled
from ..paths import check_output_path
from ..progress import Progress, ProgressCallback, ProgressTracker
from .settings import InferenceSettings

if TYPE_CHECKING:
    from ..model import Model

#: ``segment(model, image, mask, *, settings, progress, stop_event)``, passed in by the callers
#: (this module sits below :mod:`nbseg.inference.sliding`).
SegmentFn = Callable[..., xr.DataArray]

__all__ = [
    "UNCERTAINTY_METHODS",
    "entropy_map",
    "labels_from_probabilities",
    "margin_map",
    "mutual_information_map",
    "with_uncertainty",
    "write_zarr_blocks",
]

#: ``uncertainty(method=...)``: normalised predictive entropy, 1 - (top-1 - top-2
#: probability), and the disagreement (mutual information) over the test-time flips.
UNCERTAINTY_METHODS = ("entropy", "margin", "tta")

_EPS = np.float32(1e-7)


def _covered(p: xr.DataArray) -> xr.DataArray:
    """Voxels that some tile predicted (probabilities sum to about 1; 0 outside the mask)."""
    return p.sum("class") > 0.5


def _finish(u: xr.DataArray, p: xr.DataArray, name: str, method: str) -> xr.DataArray:
    u = u.where(_covered(p), 0.0).clip(0.0, 1.0).astype(np.float32)
    u.name = name
    attrs = {k: v for k, v in p.attrs.items() if k not in ("class_names", "class_colors")}
    attrs.update(uncertainty=method, long_name=f"uncertainty ({method})", units="1")
    u.attrs = attrs
    return u


def entropy_map(p: xr.DataArray) -> xr.DataArray:
    """Predictive entropy of ``p`` (dims ``class, ...``) divided by ``log K``: 0 = certain,
    1 = all classes equally likely."""
    k = p.sizes["class"]
    q = p.clip(_EPS, 1.0)
    h = -(p * np.log(q)).sum("class") / np.float32(np.log(k))
    return _finish(h, p, "uncertainty", "entropy")


def _margin(a: np.ndarray) -> np.ndarray:
    top = np.sort(a, axis=-1)
    return (1.0 - (top[..., -1] - top[..., -2])).astype(np.float32)


def margin_map(p: xr.DataArray) -> xr.DataArray:
    """``1 - (p_top1 - p_top2)``: 0 = one class wins outright, 1 = a tie."""
    m = xr.apply_ufunc(
        _margin,
        p,
        input_core_dims=[["class"]],
        dask="parallelized",
        output_dtypes=[np.float32],
    )
    return _finish(m, p, "uncertainty", "margin")


def mutual_information_map(ps: list[xr.DataArray]) -> xr.DataArray:
    """Disagreement between predictions of the same voxels (e.g. the test-time flips): the
    mutual information ``H(mean p) - mean H(p)``, divided by ``log K`` (0 = all agree)."""
    k = ps[0].sizes["class"]
    mean = sum(ps[1:], ps[0]) / len(ps)

    def entropy(p: xr.DataArray) -> xr.DataArray:
        return -(p * np.log(p.clip(_EPS, 1.0))).sum("class")

    mi = (entropy(mean) - sum(entropy(p) for p in ps) / len(ps)) / np.float32(np.log(k))
    return _finish(mi, mean, "uncertainty", "tta")


def labels_from_probabilities(p: xr.DataArray, mask: xr.DataArray | None) -> xr.DataArray:
    """int16 class ids (``-1`` where no tile predicted or outside ``mask``), as
    :func:`nbseg.segment` returns them."""
    labels = p.argmax("class").astype(np.int16)
    keep = _covered(p)
    if mask is not None:
        keep = keep & mask.astype(bool)
    labels = labels.where(keep, OUTSIDE_MASK).astype(np.int16)
    labels.attrs = dict(p.attrs)
    labels.name = "labels"
    return labels


# -- shared by uncertainty() and segment(return_uncertainty=True) -----------------------------------------------------------------------------------
def as_images(image: Any) -> list[xr.DataArray]:
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images:
        raise InputError("image: give a DataArray, or a list of DataArrays for several inputs.")
    out = []
    for i, im in enumerate(images):
        if isinstance(im, np.ndarray):
            im = xr.DataArray(im, dims=("z", "y", "x")[-im.ndim :])
        if not isinstance(im, xr.DataArray):
            raise InputError(
                f"image{f'[{i}]' if len(images) > 1 else ''}: expected an xarray.DataArray "
                f"(z, y, x) or (y, x), got {type(im).__name__}."
            )
        out.append(im)
    return out


def spatial_dims(im: xr.DataArray) -> list[str]:
    return [str(d) for d in im.dims if str(d) not in CHANNEL_DIMS]


def _lazy(images: Sequence[xr.DataArray], mask: xr.DataArray | None) -> bool:
    arrays = [*images, *([mask] if mask is not None else [])]
    return any(a.chunks is not None for a in arrays)


def chunked(images: list[xr.DataArray]) -> list[xr.DataArray]:
    """Dask-backed copies, so that :func:`nbseg.segment` streams block by block."""
    out = []
    for im in images:
        if im.chunks is None:
            first = spatial_dims(im)[0]
            im = im.chunk({first: max(1, min(im.sizes[first], 16))})
        out.append(im)
    return out


def probability_settings(settings: Any, overrides: Mapping[str, Any]) -> InferenceSettings:
    s = InferenceSettings.build(settings, **overrides)
    return dataclasses.replace(s, probabilities=True)


def aligned_mask(mask: xr.DataArray | None, ref: xr.DataArray) -> xr.DataArray | None:
    """``mask`` in the dim order of ``ref``'s spatial dims (by name, else by position)."""
    if mask is None:
        return None
    if isinstance(mask, np.ndarray):
        mask = xr.DataArray(mask, dims=ref.dims)
    dims = [d for d in ref.dims if d != "class"]
    if set(map(str, mask.dims)) == set(map(str, dims)):
        mask = mask.transpose(*dims)
    elif mask.ndim == len(dims):
        mask = mask.rename(dict(zip(mask.dims, dims)))
    return mask.astype(bool)


def flip_dims(model: Model, im: xr.DataArray) -> list[tuple[str, ...]]:
    """The test-time flips: none, x, y, and both (in the y-x plane; 4 passes)."""
    dims = spatial_dims(im)
    y, x = dims[-2], dims[-1]
    return [(), (x,), (y,), (y, x)]


def flipped(da: xr.DataArray | None, dims: tuple[str, ...]) -> xr.DataArray | None:
    if da is None or not dims:
        return da
    return da.isel({d: slice(None, None, -1) for d in dims})


def staged_progress(progress: ProgressCallback | None, stage: int, stages: int) -> Any:
    """A progress callback that reports pass ``stage`` of ``stages`` as one run."""
    if progress is None:
        return None

    def report(p: Progress) -> None:
        progress(
            Progress(
                done=stage * p.total + p.done,
                total=stages * p.total,
                unit=p.unit,
                rate=p.rate,
                eta_s=None if p.eta_s is None else p.eta_s + (stages - stage - 1) * p.elapsed_s,
                elapsed_s=p.elapsed_s,
                stage=f"pass {stage + 1}/{stages}",
                extra=dict(p.extra),
            )
        )

    return report


def _probabilities(
    segment: SegmentFn,
    model: Model,
    images: list[xr.DataArray],
    mask: xr.DataArray | None,
    s: InferenceSettings,
    progress: ProgressCallback | None,
    stop_event: threading.Event | None,
) -> xr.DataArray:
    image: Any = images if len(images) > 1 else images[0]
    return segment(model, image, mask, settings=s, progress=progress, stop_event=stop_event)


def method_map(
    segment: SegmentFn,
    model: Model,
    images: list[xr.DataArray],
    mask: xr.DataArray | None,
    method: str,
    s: InferenceSettings,
    progress: ProgressCallback | None,
    stop_event: threading.Event | None,
) -> tuple[xr.DataArray, xr.DataArray]:
    """(uncertainty, probabilities) — probabilities averaged over the flips for ``tta``."""
    if method == "tta":
        flips = flip_dims(model, images[0])
        ps = []
        plain = dataclasses.replace(s, tta=False)
        for i, dims in enumerate(flips):
            views = [flipped(im, dims) for im in images]
            p = _probabilities(
                segment,
                model,
                views,  # type: ignore[arg-type]
                flipped(mask, dims),
                plain,
                staged_progress(progress, i, len(flips)),
                stop_event,
            )
            back = flipped(p, dims)
            assert back is not None
            ps.append(
                back.assign_coords({d: images[0].coords[d] for d in dims if d in images[0].coords})
            )
        u = mutual_information_map(ps)
        mean = sum(ps[1:], ps[0]) / len(ps)
        mean.attrs = dict(ps[0].attrs)
        return u, mean
    p = _probabilities(segment, model, images, mask, s, progress, stop_event)
    return (entropy_map(p) if method == "entropy" else margin_map(p)), p


def check_method(method: str) -> None:
    if method not in UNCERTAINTY_METHODS:
        raise InputError(
            f"method={method!r} is invalid: choose one of {UNCERTAINTY_METHODS} (entropy: "
            "normalised predictive entropy; margin: 1 - (top-1 - top-2 probability); tta: "
            "disagreement over the test-time flips)."
        )


def masked(u: xr.DataArray, mask: xr.DataArray | None) -> xr.DataArray:
    m = aligned_mask(mask, u)
    if m is None:
        return u
    out = u.where(m, np.float32(0)).astype(np.float32)
    out.attrs, out.name = u.attrs, u.name
    return out


def with_uncertainty(
    segment: SegmentFn,
    model: Model,
    image: Any,
    mask: xr.DataArray | None,
    *,
    method: str,
    progress: ProgressCallback | None,
    out: str | os.PathLike[str] | None,
    overwrite: bool,
    settings: Any,
    overrides: Mapping[str, Any],
    stop_event: threading.Event | None,
    with_labels: bool,
) -> tuple[xr.DataArray | None, xr.DataArray]:
    """``(labels or None, uncertainty)`` from one pass of ``segment`` over the probabilities;
    with ``out`` computed slab by slab into one zarr store."""
    check_method(method)
    images = as_images(image)
    if out is not None:
        check_output_path(out, [*images, mask])
        images = chunked(images)
    s = probability_settings(settings, overrides)
    u, p = method_map(
        segment, model, images, mask, method, s, None if out else progress, stop_event
    )
    u = masked(u, mask)
    labels = labels_from_probabilities(p, aligned_mask(mask, p)) if with_labels else None
    if out is None:
        return labels, u
    variables = {"uncertainty": u} if labels is None else {"labels": labels, "uncertainty": u}
    written = write_zarr_blocks(
        variables, out, overwrite=overwrite, progress=progress, stop_event=stop_event
    )
    return written.get("labels"), written["uncertainty"]


# -- writing ---------------------------------------------------------------------------------
def _clean(da: xr.DataArray) -> xr.DataArray:
    """Attributes zarr can store (JSON-like); coords kept."""
    da = da.copy()
    plain: dict[str, Any] = {}
    for key, value in da.attrs.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            plain[str(key)] = value
        elif isinstance(value, (list, tuple)):
            plain[str(key)] = [
                v if isinstance(v, (str, int, float, bool)) else str(v) for v in value
            ]
        elif isinstance(value, np.generic):
            plain[str(key)] = value.item()
        else:
            plain[str(key)] = str(value)
    da.attrs = plain
    da.encoding = {}
    return da


def write_zarr_blocks(
    variables: Mapping[str, xr.DataArray],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> dict[str, xr.DataArray]:
    """Compute lazy DataArrays slab by slab along their first dim and write them as the
    variables of one zarr store: memory holds one slab, not the volume.

    Written into a temporary sibling folder first and renamed over ``out`` when complete,
    so ``out`` is the old store or the new one, never half of one (an existing ``out`` is
    replaced only with ``overwrite=True``). ``progress`` gets one record per slab
    (``unit="chunk"``). Returns the variables opened lazily from ``out``.
    """
    target = Path(os.fspath(out)).expanduser()
    if target.exists() and not overwrite:
        raise InputError(
            f"{str(target)!r} already exists; pass overwrite=True to replace it, or give a new "
            "path."
        )
    if (
        target.exists()
        and not (target / ".zgroup").exists()
        and not (target / "zarr.json").exists()
    ):
        raise InputError(
            f"{str(target)!r} exists and is not a zarr store; nbseg will not replace it."
        )
    items = {name: _clean(da) for name, da in variables.items()}
    first = next(iter(items.values()))
    dim = next(d for d in first.dims if d != "class")
    ds = xr.Dataset(items)
    chunks = first.chunks
    if chunks is not None:
        bounds = np.cumsum((0, *chunks[first.get_axis_num(dim)]))
    else:
        n = first.sizes[dim]
        step = max(1, min(n, 8))
        bounds = np.array([*range(0, n, step), n])
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tracker = ProgressTracker(len(bounds) - 1, "chunk", progress)
    try:
        ds.to_zarr(tmp, mode="w", compute=False)
        for a, b in itertools.pairwise(bounds):
            if stop_event is not None and stop_event.is_set():
                raise Cancelled("The segmentation was stopped.")
            region = {str(dim): slice(int(a), int(b))}
            sub = ds.isel(region).compute()
            drop = [c for c in sub.coords if dim not in sub[c].dims]
            sub.drop_vars(drop).to_zarr(tmp, region=region)
            tracker.advance()
        if target.exists():
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    opened = xr.open_zarr(target)
    return {name: opened[name] for name in items}
