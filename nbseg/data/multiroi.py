"""Multi-ROI conventions: label volumes with named, coloured classes.

A *multi-ROI* (Dragonfly's name) is an integer :class:`xarray.DataArray` of the image's
geometry holding one class id per voxel:

- class ids are ``0 … class_count-1``;
- :data:`UNLABELLED` (``-1``) marks voxels that carry no label (they contribute nothing to the
  loss); a different marker can be declared with the attribute ``unlabelled`` (e.g. ``255``
  for uint8 label images);
- attributes ``class_names`` and ``class_colors`` (``"#rrggbb"``) name and colour the classes.

A plain integer DataArray with values ``0 … class_count-1`` is a valid, fully labelled
multi-ROI; names and colours then get defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..errors import InputError

UNLABELLED: int = -1
"""Label value of voxels that carry no label."""

OUTSIDE_MASK: int = -1
"""Value that :func:`nbseg.segment` writes outside the mask (the same as UNLABELLED)."""

DEFAULT_COLORS: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def default_class_names(count: int) -> list[str]:
    return ["background"] + [f"class {i}" for i in range(1, count)] if count else []


def default_class_colors(count: int) -> list[str]:
    return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(count)]


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` → ``(r, g, b)``."""
    c = color.lstrip("#")
    if len(c) != 6:
        raise InputError(f"Colour {color!r} is not of the form '#rrggbb'.")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def multi_roi(
    labels: xr.DataArray | np.ndarray,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    *,
    unlabelled: int | None = None,
    like: xr.DataArray | None = None,
    what: str | None = None,
) -> xr.DataArray:
    """Make a multi-ROI (int16, ``-1`` = unlabelled) with class names and colours.

    Parameters
    ----------
    labels
        Integer class ids. Voxels equal to ``unlabelled`` (or to the ``unlabelled`` attribute
        of ``labels``) become :data:`UNLABELLED`.
    class_names, class_colors
        One per class; defaults are taken from the attributes of ``labels`` or generated.
    like
        Geometry (dims and coords) to attach when ``labels`` is a numpy array.
    what
        How error messages name the labels (e.g. ``"training set output"``).
    """
    if isinstance(labels, xr.DataArray):
        da = labels
    else:
        arr = np.asarray(labels)
        if like is not None:
            da = xr.DataArray(arr, dims=like.dims, coords=like.coords)
        else:
            dims = ("z", "y", "x")[-arr.ndim :] if arr.ndim <= 3 else None
            if dims is None:
                raise InputError(f"Labels must be 2D or 3D, got shape {arr.shape}.")
            da = xr.DataArray(arr, dims=dims)
    label = what or f"Multi-ROI {da.name or ''!s}".strip()
    if not np.issubdtype(da.dtype, np.integer) and da.dtype != bool:
        if not np.issubdtype(da.dtype, np.floating):
            raise InputError(
                f"{label} has dtype {da.dtype}; class ids must be integers 0 … class_count-1."
            )
        values = np.asarray(da.values)
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise InputError(
                f"{label} has non-integer values (dtype {da.dtype}); class ids must be "
                "integers 0 … class_count-1."
            )
    marker = unlabelled if unlabelled is not None else da.attrs.get("unlabelled", UNLABELLED)
    values = np.asarray(da.values).astype(np.int64)
    out = np.where(values == marker, UNLABELLED, values)
    labelled = out[out != UNLABELLED]
    if labelled.size and labelled.min() < 0:
        raise InputError(
            f"{label} has negative class ids ({int(labelled.min())}); class ids must be "
            f"0 … class_count-1 and {UNLABELLED} marks unlabelled voxels."
        )
    count = len(class_names) if class_names is not None else None
    if count is None:
        count = len(da.attrs.get("class_names", [])) or (
            int(labelled.max()) + 1 if labelled.size else 2
        )
    names = list(class_names) if class_names is not None else list(da.attrs.get("class_names", []))
    if not names:
        names = default_class_names(count)
    colors = (
        list(class_colors) if class_colors is not None else list(da.attrs.get("class_colors", []))
    )
    if not colors:
        colors = default_class_colors(len(names))
    if len(colors) != len(names):
        raise InputError(
            f"{label}: {len(names)} class names but {len(colors)} colours; give one per class."
        )
    for c in colors:
        hex_to_rgb(c)
    if labelled.size and labelled.max() >= len(names):
        raise InputError(
            f"{label} holds class id {int(labelled.max())} but only {len(names)} classes are "
            f"named ({names}); add class names or fix the labels."
        )
    attrs = {k: v for k, v in da.attrs.items() if k != "unlabelled"}
    attrs.update(class_names=names, class_colors=colors)
    return xr.DataArray(
        out.astype(np.int16), dims=da.dims, coords=da.coords, name=da.name, attrs=attrs
    )


def from_binary_rois(
    rois: Sequence[xr.DataArray | np.ndarray],
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    *,
    complement: str | None = None,
    like: xr.DataArray | None = None,
) -> xr.DataArray:
    """Build a multi-ROI from binary ROIs.

    ROI ``i`` becomes class ``i`` (or ``i + 1`` with a complement class). Where ROIs overlap,
    the **later** ROI in the list wins. Voxels in no ROI are unlabelled, unless ``complement``
    names a class ("dense" labelling: Dragonfly's *background* class) which then gets id 0 and
    takes every voxel outside all ROIs.
    """
    if not rois:
        raise InputError("from_binary_rois needs at least one ROI.")
    arrays = [np.asarray(r.values if isinstance(r, xr.DataArray) else r).astype(bool) for r in rois]
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != shape:
            raise InputError(f"ROI {i} has shape {a.shape}, ROI 0 has {shape}; all must match.")
    offset = 1 if complement else 0
    out = np.full(shape, 0 if complement else UNLABELLED, dtype=np.int16)
    for i, a in enumerate(arrays):
        out[a] = i + offset
    names = (
        list(class_names) if class_names is not None else [f"class {i}" for i in range(len(rois))]
    )
    if len(names) != len(rois):
        raise InputError(f"{len(rois)} ROIs but {len(names)} class names; give one per ROI.")
    if complement:
        names = [complement, *names]
    if like is None and isinstance(rois[0], xr.DataArray):
        like = rois[0]
    return multi_roi(out, names, class_colors, like=like)


def labelled_slices(labels: xr.DataArray, dim: str = "z") -> list[int]:
    """Indices along ``dim`` of slices that hold at least one labelled voxel."""
    if dim not in labels.dims:
        return []
    axis = labels.dims.index(dim)
    other = tuple(i for i in range(labels.ndim) if i != axis)
    has = np.any(np.asarray(labels.values) != UNLABELLED, axis=other)
    return [int(i) for i in np.flatnonzero(has)]


def extract_labelled_slices(
    image: xr.DataArray | Sequence[xr.DataArray],
    labels: xr.DataArray,
    *,
    context: int = 0,
    dim: str = "z",
) -> tuple[xr.DataArray | list[xr.DataArray], xr.DataArray]:
    """Cut the labelled slices (± ``context`` neighbouring slices for 2.5D/3D) out of a volume.

    Returns a smaller ``(image, labels)`` training dataset whose coordinates are those of the
    kept slices. Context slices keep their image data but are unlabelled.
    """
    idx = labelled_slices(labels, dim)
    if not idx:
        raise InputError(f"Labels {labels.name or ''!s} hold no labelled voxel along {dim!r}.")
    n = labels.sizes[dim]
    keep = sorted({j for i in idx for j in range(i - context, i + context + 1) if 0 <= j < n})
    images = [image] if isinstance(image, xr.DataArray) else list(image)
    cut = [im.isel({dim: keep}) for im in images]
    lab = labels.isel({dim: keep})
    return (cut[0] if isinstance(image, xr.DataArray) else cut), lab
