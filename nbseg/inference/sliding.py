"""Apply a model to whole volumes: :func:`segment` and :func:`preview`.

Tiles are placed like MONAI's ``sliding_window_inference`` (step = window × (1 - overlap),
the last tile flush with the border), each tile's softmax is weighted by a Gaussian importance
map (sigma = window / 8) and the weighted sum is normalised (:mod:`nbseg.inference.tiling`).
2D and 2.5D models slide a 2D window over every slice (2.5D reads the neighbouring slices as
channels, clamped at the volume ends); 3D models slide a 3D window. The settings are one
:class:`~nbseg.inference.settings.InferenceSettings`; the network runs in
:class:`~nbseg.inference.predictor.VolumePredictor`. Dask-backed images and ``out=`` stream
(:mod:`nbseg.inference.stream`).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..data.trainingset import CHANNEL_DIMS, as_input_list, check_finite, volume_of
from ..errors import InputError
from ..progress import ProgressCallback
from .maps import (
    aligned_mask,
    check_method,
    labels_from_probabilities,
    masked,
    method_map,
    probability_settings,
    with_uncertainty,
)
from .predictor import (
    VolumePredictor,
    checked_inputs,
    checked_mask,
    checked_model,
    checked_window,
    prepare_inputs,
    resolve_device,
)
from .settings import InferenceSettings
from .stream import segment_streaming
from .tiling import (
    blend,
    default_window,
    gaussian_importance,
    output_attrs,
    pad_plan,
    pad_to_window,
    resolve_window,
    tile_starts,
)

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "InferenceSettings",
    "VolumePredictor",
    "blend",
    "checked_inputs",
    "default_window",
    "gaussian_importance",
    "output_attrs",
    "pad_plan",
    "pad_to_window",
    "prepare_inputs",
    "preview",
    "resolve_device",
    "resolve_window",
    "segment",
    "tile_starts",
]

#: the old private name, still imported by the training feedback (use ``pad_to_window``)
_pad_to_window = pad_to_window


def segment(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    mask: xr.DataArray | None = None,
    *,
    settings: InferenceSettings | Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    out: Any = None,
    client: Any = None,
    overwrite: bool = False,
    stop_event: threading.Event | None = None,
    return_uncertainty: bool = False,
    uncertainty_method: str = "entropy",
    **overrides: Any,
) -> Any:
    """Segment a volume (or several inputs of one geometry) into a label volume.

    Parameters
    ----------
    model
        A trained :class:`nbseg.Model`; its normalisation and input dimension are applied.
    image
        ``xarray.DataArray`` ``(z, y, x)`` or ``(y, x)`` (a list for multi-input models).
        Dask-backed arrays, or ``out=`` a zarr path, stream chunk by chunk.
    mask
        Optional boolean ROI: tiles outside it are skipped, voxels outside it get ``-1``.
    settings, **overrides
        An :class:`~nbseg.inference.settings.InferenceSettings` (or a mapping of its
        settings), and/or its settings as keywords, which override it: ``window``,
        ``overlap``, ``blending``, ``batch_size``, ``tta``, ``probabilities``, ``device``,
        ``precision``, ``chunks`` (see that class). Validated once; a bad value or an
        unknown name raises :class:`nbseg.InputError`.
    progress
        Called with a :class:`nbseg.progress.Progress` record: in memory after each batch of
        tiles (``unit="tile"``); streaming once before the first block and after each block
        written (``unit="chunk"``, ``extra["voxels_per_s"]``).
    out, client, overwrite
        Stream block by block into a zarr store at ``out`` (block shape ``chunks``, on the
        ``dask.distributed`` ``client`` if given; an existing store is replaced only with
        ``overwrite=True``; never one of the inputs). Dask-backed images stream too; without
        ``out`` the result is then a lazy dask-backed DataArray. ``out="x.ome.zarr"`` (or
        ``IMAGE.ome.zarr/labels/NAME``) writes an OME-Zarr label image instead (class names,
        colours, downsampled levels; :func:`nbseg.open_image` reads it back). See
        :mod:`nbseg.inference.stream`.
    stop_event
        Set it (from any thread) to stop after the current batch of tiles (in memory) or
        block (streaming): ``segment`` raises :class:`nbseg.jobs.Cancelled`.
    return_uncertainty, uncertainty_method
        ``True``: return ``(labels, uncertainty)`` from one pass — the uncertainty as
        :func:`nbseg.uncertainty` computes it (``"entropy"``, ``"margin"`` or ``"tta"``); with
        ``out`` both are variables (``labels``, ``uncertainty``) of the one zarr store.

    Returns
    -------
    xarray.DataArray
        int16 class ids with the dims, coords and attrs of ``image`` plus ``class_names`` and
        ``class_colors`` attrs; ``-1`` outside the mask (float32 probabilities with a leading
        ``class`` dim with ``probabilities=True``).
    """
    if return_uncertainty:
        return with_uncertainty(
            segment,
            model,
            image,
            mask,
            method=uncertainty_method,
            progress=progress,
            out=out,
            overwrite=overwrite,
            settings=settings,
            overrides=overrides,
            stop_event=stop_event,
            with_labels=True,
        )
    s = InferenceSettings.build(settings, **overrides)
    checked_model(model)
    checked_window(model, s)
    images = [image] if not isinstance(image, (list, tuple)) else list(image)
    order = _spatial_order(images[0] if images else None)
    lazy = any(isinstance(im, xr.DataArray) and im.chunks is not None for im in images)
    if out is not None or lazy:
        res = segment_streaming(
            model,
            image,
            mask,
            s,
            out=out,
            progress=progress,
            client=client,
            overwrite=overwrite,
            stop_event=stop_event,
        )
    else:
        res = _segment_in_memory(model, image, mask, s, progress, stop_event=stop_event)
    return _in_order(res, order)


def _spatial_order(image: Any) -> tuple[str, ...] | None:
    """The spatial dims of an image DataArray in its own order (channel dims left out)."""
    if not isinstance(image, xr.DataArray):
        return None
    return tuple(str(d) for d in image.dims if str(d) not in CHANNEL_DIMS)


def _in_order(result: xr.DataArray, order: tuple[str, ...] | None) -> xr.DataArray:
    """``result`` (computed in ``(z, y, x)`` order) in the image's own dim order."""
    lead = ("class",) if "class" in result.dims else ()
    spatial = tuple(str(d) for d in result.dims if d != "class")
    if order is None or order == spatial or set(order) != set(spatial):
        return result
    return result.transpose(*lead, *order)


def _segment_in_memory(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    mask: xr.DataArray | None,
    settings: InferenceSettings,
    progress: ProgressCallback | None = None,
    z_indices: Sequence[int] | None = None,
    stop_event: threading.Event | None = None,
    align: bool = True,
) -> xr.DataArray:
    """In-memory segmentation; for 2D/2.5D models optionally of some slices only.
    ``align=False``: the arrays are already in the order to slide in (preview)."""
    images, vol = prepare_inputs(model, image, align=align)
    ref = images[0]
    m = None
    mask_da = checked_mask(mask, ref, align=align)
    if mask_da is not None:
        check_finite(mask_da, "mask")
        m = volume_of(mask_da).astype(bool)
    is3d = model.spec.input_dimension == "3D"
    win = resolve_window(model, settings.window, vol.shape[1:])
    vol_p, m_p, shape = pad_to_window(vol, m, win, is3d)
    predictor = VolumePredictor(model, win, settings)
    acc, wsum = predictor.predict(
        vol_p, m_p, z_indices=z_indices, progress=progress, stop_event=stop_event
    )
    nz = shape[0] if z_indices is None else len(z_indices)
    acc = acc[:, :nz, : shape[1], : shape[2]]
    wsum = wsum[:nz, : shape[1], : shape[2]]
    if z_indices is not None:
        ref = ref.isel({ref.dims[0]: list(z_indices)})
        if m is not None:
            m = m[list(z_indices)]
    return _to_output(model, ref, acc, wsum, m, settings.probabilities)


def _to_output(
    model: Model,
    ref: xr.DataArray,
    acc: np.ndarray,
    wsum: np.ndarray,
    mask: np.ndarray | None,
    probabilities: bool,
) -> xr.DataArray:
    result = blend(acc, wsum, mask, probabilities)
    attrs = output_attrs(model, ref)
    squeeze = ref.ndim == 2
    if probabilities:
        data = result[:, 0] if squeeze else result
        da = xr.DataArray(
            data,
            dims=("class", *ref.dims),
            coords={**{k: v for k, v in ref.coords.items()}, "class": list(model.class_names)},
            attrs=attrs,
            name="probabilities",
        )
        return da
    data = result[0] if squeeze else result
    return xr.DataArray(data, dims=ref.dims, coords=ref.coords, attrs=attrs, name="labels")


def preview(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    index: int,
    *,
    dim: Hashable = "z",
    mask: xr.DataArray | None = None,
    settings: InferenceSettings | Mapping[str, Any] | None = None,
    return_uncertainty: bool = False,
    uncertainty_method: str = "entropy",
    **overrides: Any,
) -> Any:
    """Fast prediction of slice ``index`` along ``dim``: the 2D labels of that slice.

    2D and 2.5D models predict that slice only (2.5D reads its neighbours); 3D models
    predict a slab of the window's depth around it. ``settings`` / ``**overrides``: the
    inference settings, as for :func:`segment` (``chunks`` does not apply).
    ``return_uncertainty=True``: ``(labels, uncertainty)`` of the slice from one pass, the
    uncertainty as :func:`nbseg.uncertainty` computes it (``uncertainty_method``).
    """
    if return_uncertainty:
        return _preview_uncertainty(
            model, image, index, dim, mask, settings, uncertainty_method, overrides
        )
    s = InferenceSettings.build(settings, **overrides)
    checked_model(model)
    checked_window(model, s)
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise InputError(
            f"preview: index={index!r} must be an integer, the slice index along {dim!r}."
        )
    index = int(index)
    images = as_input_list(image, "image")
    ref = images[0]
    if ref.ndim == 2:
        return segment(model, image, mask, settings=s)
    if dim not in ref.dims:
        raise InputError(
            f"preview: dim={dim!r} is not a dimension of the image {ref.dims}; give one of them."
        )
    n = ref.sizes[dim]
    if not 0 <= index < n:
        raise InputError(f"preview: index={index} is outside 0 … {n - 1} along {dim!r}.")
    mask_da = checked_mask(mask, ref)
    images = [im.transpose(dim, ...) for im in images]
    mask_t = None if mask_da is None else mask_da.transpose(dim, ...)
    if model.spec.input_dimension != "3D":
        # read only the slices the prediction needs (2.5D: the offsets, clamped at the ends,
        # which clamping within that slab reproduces), so a lazy volume is not loaded whole
        offsets = model.spec.slice_offsets
        lo = max(0, index + min(offsets))
        hi = min(n, index + max(offsets) + 1)
        sub = [im.isel({dim: slice(lo, hi)}).compute() for im in images]
        submask = None if mask_t is None else mask_t.isel({dim: slice(lo, hi)}).compute()
        res = _segment_in_memory(model, sub, submask, s, z_indices=[index - lo], align=False)
        return res.isel({dim: 0})
    win = resolve_window(model, s.window, images[0].shape)
    lo = max(0, min(index - win[0] // 2, n - win[0]))
    hi = min(n, lo + win[0])
    sub = [im.isel({dim: slice(lo, hi)}).compute() for im in images]
    submask = None if mask_t is None else mask_t.isel({dim: slice(lo, hi)}).compute()
    res = _segment_in_memory(model, sub, submask, s, align=False)
    return res.isel({dim: index - lo})


def _preview_uncertainty(
    model: Model,
    image: Any,
    index: int,
    dim: Hashable,
    mask: xr.DataArray | None,
    settings: Any,
    method: str,
    overrides: Mapping[str, Any],
) -> tuple[xr.DataArray, xr.DataArray]:
    """(labels, uncertainty) of one slice: :func:`preview` of the probabilities."""
    check_method(method)
    images = as_input_list(image, "image")
    s = probability_settings(settings, overrides)
    if images[0].ndim == 3 and dim in images[0].dims:
        # slice dim first: the test-time flips are in the other two dims, so ``index`` keeps
        # naming the same slice (preview puts it first anyway)
        images = [im.transpose(dim, ...) for im in images]
        if isinstance(mask, xr.DataArray) and dim in mask.dims:
            mask = mask.transpose(dim, ...)

    def one_slice(model: Model, img: Any, m: Any, *, settings: Any, **_: Any) -> xr.DataArray:
        return preview(model, img, index, dim=dim, mask=m, settings=settings)

    u, p = method_map(one_slice, model, images, mask, method, s, None, None)
    ref = images[0]
    plane = None
    if mask is not None:
        full = checked_mask(mask, ref)
        assert full is not None  # a mask was given
        plane = full if ref.ndim == 2 else full.transpose(dim, ...).isel({dim: index})
        plane = plane.drop_vars([c for c in plane.coords if c not in plane.dims])
    u = masked(u, plane).compute()
    labels = labels_from_probabilities(p, aligned_mask(plane, p)).compute()
    return labels, u
