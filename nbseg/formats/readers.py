"""Open image files as DataArrays: lazily (dask-backed) where the format allows, with the
file's voxel size and origin as coordinates (attribute ``units``) and its metadata in
``attrs``.

=====================================  ========================================================
format                                 how
=====================================  ========================================================
OME-Zarr (NGFF 0.4 / 0.5)              zarr + dask; ``level`` picks the resolution; scale and
                                       translation → coords; ``image-label`` → class names and
                                       colours; ``dataset="labels/NAME"`` opens a label image
zarr                                   an xarray dataset (``dataset`` picks the variable) or a
                                       plain array / group of arrays (``dataset`` picks one)
TIFF / OME-TIFF / ImageJ               tifffile's zarr store + dask (one chunk per page);
                                       resolution, ImageJ ``spacing``/``unit``, OME
                                       ``PhysicalSize*`` → coords
slices (a folder or a glob)            one dask task per file, natural order; shape and dtype
                                       from the first file's header
PNG / JPEG                             Pillow (one 2D image)
HDF5                                   h5py + dask (``dataset`` picks one; ``element_size_um``
                                       and similar attributes → coords)
NIfTI                                  nibabel + dask, oriented LPS+ to ``(z, y, x)`` (z
                                       inferior→superior, y anterior→posterior, x right→left)
MRC                                    mrcfile (memory-mapped) + dask; voxel size in Å
netCDF, NumPy                          xarray (lazily loaded), ``np.load`` (memory-mapped)
=====================================  ========================================================

Multi-channel files (an OME-Zarr ``c`` axis, TIFF channels or RGB samples, RGB slices) carry a
leading ``c`` dim here; :func:`nbseg.formats.open_image` splits it into one DataArray per
channel.
"""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import ngff
from ..errors import InputError, NbsegError
from ._common import FORMATS_TEXT, apply_meta, plain, require

__all__ = [
    "JSON_ATTRS",
    "KIND_NAMES",
    "NBSEG_TIFF_KEY",
    "SLICE_SUFFIXES",
    "detect",
    "is_input_path",
    "is_zarr_store",
    "open_array",
    "open_image",
]

#: attribute listing the attrs stored as JSON text (netCDF)
JSON_ATTRS = "nbseg_json_attrs"
#: attribute naming the dtype an array had before netCDF3 widened it
DTYPE_ATTR = "nbseg_dtype"
#: key of nbseg's block in a TIFF's JSON description / ImageJ properties, a NIfTI extension
NBSEG_TIFF_KEY = "nbseg"

SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_SUFFIX_KINDS = {
    ".zarr": "zarr",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "picture",
    ".jpg": "picture",
    ".jpeg": "picture",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".he5": "hdf5",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mrc": "mrc",
    ".mrcs": "mrc",
    ".map": "mrc",
    ".rec": "mrc",
    ".nc": "netcdf",
    ".npy": "npy",
}
KIND_NAMES = {
    "zarr": "zarr / OME-Zarr",
    "tiff": "TIFF",
    "picture": "a PNG/JPEG image",
    "hdf5": "HDF5",
    "nifti": "NIfTI",
    "mrc": "MRC",
    "netcdf": "netCDF",
    "npy": ".npy",
    "slices": "a stack of 2D slices",
}
_GLOB = re.compile(r"[*?\[]")


# -- what a path is ------------------------------------------------------------------------
def _suffix(p: Path) -> str:
    name = p.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return p.suffix.lower()


def is_zarr_store(path: Path) -> bool:
    return any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))


def is_input_path(path: str | os.PathLike[str]) -> bool:
    """Whether nbseg can read ``path`` by its name (a known suffix, a glob, or no suffix: a
    folder of slices); the file system is not consulted."""
    p = Path(os.fspath(path))
    if _GLOB.search(p.name) or not p.suffix:
        return True
    return _suffix(p) in _SUFFIX_KINDS


def detect(p: Path, shown: str, pattern: str | None = None) -> str:
    """The format of ``p``: a key of :data:`KIND_NAMES` (an :class:`InputError` naming the
    supported formats for others)."""
    if _GLOB.search(str(p)) or (pattern is not None and (p.is_dir() or not p.suffix)):
        return "slices"
    kind = _SUFFIX_KINDS.get(_suffix(p))
    if kind is not None:
        return kind
    try:
        if p.is_dir():
            return "zarr" if is_zarr_store(p) else "slices"
    except OSError:
        pass
    suffix = _suffix(p)
    raise InputError(
        f"{shown}: unsupported file type {suffix or '(none)'}; nbseg reads {FORMATS_TEXT}."
    )


def _check_readable(p: Path, kind: str, shown: str) -> None:
    """Refuse, naming the path, a missing file, a folder for a file (or a file for a zarr
    store / slice folder), a parent that is a file, and a path nbseg may not read."""
    try:
        exists = p.exists()
        is_dir = p.is_dir()
    except OSError as err:  # e.g. a parent folder that may not be searched
        raise InputError(f"Cannot read {shown}: {err.strerror or err}.") from None
    if not exists:
        blocker = next((a for a in p.parents if a.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise InputError(f"No such file: {shown}; {str(blocker)!r} is a file, not a folder.")
        raise InputError(f"No such file: {shown}.")
    if kind == "zarr":
        if not is_dir:
            raise InputError(
                f"Cannot read {shown}: it is a file, but a .zarr store is a folder; give the "
                "store's folder."
            )
        if not is_zarr_store(p):
            raise InputError(
                f"Cannot read {shown}: the folder is not a zarr store (it has no zarr.json, "
                ".zgroup or .zarray)."
            )
    elif kind == "slices":
        if not is_dir:
            raise InputError(f"Cannot read {shown}: a stack of slices is a folder or a glob.")
    elif is_dir:
        raise InputError(f"Cannot read {shown}: it is a folder, not a {_suffix(p)} file.")
    if not os.access(p, os.R_OK) or (is_dir and not os.access(p, os.X_OK)):
        raise InputError(f"Cannot read {shown}: permission denied (check its permissions).")
    if kind == "npy":
        try:
            with open(p, "rb") as fh:
                magic = fh.read(6)
        except OSError as err:
            raise InputError(f"Cannot read {shown}: {err.strerror or err}.") from None
        if magic != b"\x93NUMPY":
            raise InputError(
                f"Cannot read {shown}: it is not a .npy file (no NumPy header); write one with "
                "numpy.save or nbseg.io.write_array."
            )


# -- entry points --------------------------------------------------------------------------
def open_array(
    path: str | os.PathLike[str],
    *,
    dataset: str | int | None = None,
    level: int = 0,
    pattern: str | None = None,
    shown: str | None = None,
) -> xr.DataArray:
    """One file as one DataArray (a multi-channel file with a leading ``c`` dim); see the
    module docstring. ``shown`` is how messages name the path (default: its repr)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"open_image needs a path (str or Path), got {type(path).__name__}.")
    p = Path(os.fspath(path)).expanduser()
    shown = shown or repr(os.fspath(path))
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise InputError(f"level={level!r} must be a resolution level: 0, 1, ... (0 = full).")
    if pattern is not None and not isinstance(pattern, str):
        raise InputError(f"pattern={pattern!r} must be a glob such as '*.tif'.")
    if dataset is not None and not isinstance(dataset, (str, int)):
        raise InputError(f"dataset={dataset!r} must be the name of a dataset (text).")
    kind = detect(p, shown, pattern)
    if kind != "slices" or not _GLOB.search(str(p)):
        _check_readable(p, kind, shown)
    if pattern is not None and kind != "slices":
        raise InputError(f"pattern= applies to a folder of slices; {shown} is {KIND_NAMES[kind]}.")
    if level and kind not in ("zarr", "tiff"):
        raise InputError(
            f"level={level} applies to OME-Zarr and pyramidal TIFF files; {shown} has one level."
        )
    if dataset is not None and kind not in ("zarr", "hdf5", "netcdf", "tiff"):
        raise InputError(
            f"dataset= picks an array of an HDF5, zarr or netCDF file; {shown} is "
            f"{KIND_NAMES[kind]} (drop dataset={dataset!r})."
        )
    try:
        da = _READERS[kind](p, shown, dataset, level, pattern)
    except NbsegError:
        raise
    except OSError as err:
        reason = err.strerror or str(err).rstrip(".")
        raise InputError(f"Cannot read {shown} as {KIND_NAMES[kind]}: {reason}.") from None
    except Exception as err:
        raise InputError(
            f"Cannot read {shown} as {KIND_NAMES[kind]}: {type(err).__name__}: {err}. "
            f"nbseg reads {FORMATS_TEXT}."
        ) from None
    da.encoding["source"] = str(p)
    return da


def open_image(
    path: str | os.PathLike[str],
    *,
    dataset: str | int | None = None,
    level: int = 0,
    channel: int | str | None = None,
    pattern: str | None = None,
) -> Any:
    """Open an image file as an :class:`xarray.DataArray` with dims ``(z, y, x)`` or
    ``(y, x)``; a **list** of them, one per channel, for a multi-channel file.

    Big files are opened lazily (dask-backed: nothing is read until values are needed), with
    the voxel size and origin the file states as coordinates (attribute ``units``) and its
    metadata in ``attrs`` (``format``, ``voxel_size``, ``units``; ``class_names`` and
    ``class_colors`` for label images). Formats: see :mod:`nbseg.formats.readers`.

    Parameters
    ----------
    path
        A file, a zarr / OME-Zarr store, a folder of 2D slices or a glob (``"scan/*.tif"``).
    dataset
        The array of an HDF5 file, a zarr group or a netCDF file (an error lists them when
        the file holds several); an OME-Zarr sub-image (``"labels/cells"``); a TIFF series.
    level
        The resolution level of an OME-Zarr or pyramidal TIFF (0 = full resolution).
    channel
        One channel (index, or name where the file names them) of a multi-channel file.
    pattern
        Which files of a slice folder to stack (a glob, e.g. ``"*.tif"``; default: the one
        image type the folder holds).
    """
    da = open_array(path, dataset=dataset, level=level, pattern=pattern)
    shown = repr(os.fspath(path))
    return split_channels(da, channel, shown)


def split_channels(da: xr.DataArray, channel: int | str | None, shown: str) -> Any:
    cdim = next((d for d in da.dims if str(d) in ("c", "channel")), None)
    if cdim is None:
        if channel not in (None, 0):
            raise InputError(f"{shown} has one channel; drop channel={channel!r}.")
        return da
    n = da.sizes[cdim]
    names = list(da.attrs.get("channel_names") or [])
    source = da.encoding.get("source")

    def one(i: int) -> xr.DataArray:
        out = da.isel({cdim: i}, drop=True)
        out.attrs = {k: v for k, v in da.attrs.items() if k != "channel_names"}
        out.attrs["channel"] = i
        if i < len(names):
            out.attrs["channel_name"] = names[i]
        base = str(da.name) if da.name is not None else "image"
        out.name = f"{base} {names[i]}" if i < len(names) else f"{base} c{i}"
        if source is not None:
            out.encoding["source"] = source
        return out

    if channel is None:
        return one(0) if n == 1 else [one(i) for i in range(n)]
    if isinstance(channel, str) and not channel.isdigit():
        if channel not in names:
            raise InputError(
                f"{shown} has no channel {channel!r}; its channels are {names or list(range(n))}."
            )
        return one(names.index(channel))
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer, str)):
        raise InputError(f"channel={channel!r} must be a channel index or name.")
    i = int(channel)
    if not 0 <= i < n:
        raise InputError(f"{shown} has {n} channels (0..{n - 1}); channel={channel!r} is not one.")
    return one(i)


# -- helpers -------------------------------------------------------------------------------
def _wrap(arr: Any, p: Path, name: str | None = None) -> xr.DataArray:
    if arr.ndim not in (2, 3):
        raise InputError(
            f"{str(p)!r} holds an array of shape {tuple(arr.shape)}; nbseg reads 2D (y, x) or "
            "3D (z, y, x) arrays."
        )
    return xr.DataArray(arr, dims=("z", "y", "x")[-arr.ndim :], name=name or p.stem)


def _with_geometry(
    da: xr.DataArray,
    scale: Mapping[str, float],
    origin: Mapping[str, float] | None,
    unit: str | None,
) -> xr.DataArray:
    """Coords ``origin + index * scale`` for the dims ``scale`` names, plus ``voxel_size``
    (per spatial dim, in dim order; when ``scale`` gives them all) and ``units`` in attrs."""
    origin = origin or {}
    dims = [str(d) for d in da.dims if str(d) in scale]
    if not dims:
        return da
    coords = ngff.coords_from(
        dims,
        [da.sizes[d] for d in dims],
        [scale[d] for d in dims],
        [origin.get(d, 0.0) for d in dims],
        unit,
    )
    da = da.assign_coords(coords)
    spatial = [str(d) for d in da.dims if str(d) in ngff.SPACE]
    if all(d in scale for d in spatial):  # only when the file states every axis's
        da.attrs["voxel_size"] = [float(scale[d]) for d in spatial]
    if unit:
        da.attrs["units"] = unit
    return da


def _lazy(data: Any, name: str, chunks: Any = "auto", lock: Any = False) -> Any:
    import dask.array as da
    from dask.base import tokenize

    meta = np.empty((0,) * len(data.shape), dtype=data.dtype)  # no probing read
    return da.from_array(data, chunks=chunks, name=f"{name}-{tokenize(name)}", lock=lock, meta=meta)


def _stamp(p: Path) -> str:
    st = p.stat()
    return f"{p.resolve()}:{st.st_mtime_ns}:{st.st_size}"


# -- npy, netCDF ---------------------------------------------------------------------------
def _read_npy(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    arr = np.load(p, allow_pickle=False, mmap_mode="r")
    return _wrap(np.asarray(arr), p)


def _pick(ds: xr.Dataset, variable: Any, shown: str) -> xr.DataArray:
    names = list(ds.data_vars)
    if variable is None:
        if len(names) != 1:
            raise InputError(
                f"{shown} holds the variables {names}; say which one with dataset=NAME "
                "(a config: {path: ..., variable: NAME}; the command line: FILE:NAME)."
            )
        return ds[names[0]]
    if variable not in ds.data_vars:
        raise InputError(f"{shown} has no variable {variable!r}; it holds {names}.")
    return ds[variable]


def _decoded(da: xr.DataArray) -> xr.DataArray:
    """Undo what nbseg's netCDF writer did: JSON attrs, widened integer types."""
    attrs = dict(da.attrs)
    keys = attrs.pop(JSON_ATTRS, None)
    if keys is not None:
        for k in json.loads(keys):
            if k in attrs:
                attrs[k] = json.loads(attrs[k])
    dtype = attrs.pop(DTYPE_ATTR, None)
    if keys is None and dtype is None:
        return da
    da = da.copy()
    da.attrs = attrs
    if dtype is not None:
        da = da.astype(dtype)
        da.attrs = attrs
    return da


def _read_netcdf(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    ds = xr.open_dataset(p)
    return _decoded(_pick(ds, dataset, shown))


# -- zarr and OME-Zarr ---------------------------------------------------------------------
def _read_zarr(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    import dask.array as da
    import zarr

    node = zarr.open(str(p), mode="r")
    if isinstance(node, zarr.Array):
        if dataset is not None:
            raise InputError(f"{shown} is a single zarr array; drop dataset={dataset!r}.")
        if level:
            raise InputError(f"{shown} is a single zarr array (one level); drop level={level}.")
        return _wrap(da.from_zarr(node), p)
    attrs = node.attrs.asdict()
    block = ngff.ome_attrs(attrs)
    if block is not None:
        if dataset is not None:
            sub = p / str(dataset)
            if not is_zarr_store(sub):
                raise InputError(
                    f"{shown} has no image {dataset!r}"
                    + (f"; its label images are {_labels_of(p)}" if _labels_of(p) else "")
                    + "."
                )
            return _read_zarr(sub, repr(str(sub)), None, level, None)
        if "multiscales" in block:
            return _read_ngff(node, block, p, shown, level)
        if "labels" in block:
            raise InputError(
                f"{shown} is the labels group of an OME-Zarr image; open one of its label "
                f"images: {[str(p / n) for n in block['labels']]}."
            )
        raise InputError(
            f"{shown} is an OME-Zarr {'plate' if 'plate' in block else 'well'}; open one of "
            "its images (a folder inside it)."
        )
    if level:
        raise InputError(f"{shown} is not an OME-Zarr image (one level); drop level={level}.")
    arrays = _zarr_arrays(node)
    if arrays and all(_has_dims(a) for _, a in arrays) and _xarray_like(node):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            return _pick(xr.open_zarr(p), None if dataset is None else str(dataset), shown)
    listing = ", ".join(f"{n} {tuple(a.shape)} {a.dtype}" for n, a in arrays)
    if dataset is None:
        if len(arrays) == 1:
            return _wrap(da.from_zarr(arrays[0][1]), p, arrays[0][0])
        raise InputError(
            f"{shown} holds "
            + (
                f"several arrays: {listing}; say which one with dataset=NAME."
                if arrays
                else "no arrays."
            )
        )
    found = dict(arrays).get(str(dataset).strip("/"))
    if found is None:
        raise InputError(f"{shown} has no array {dataset!r}; it holds {listing or 'none'}.")
    return _wrap(da.from_zarr(found), p, str(dataset))


def _zarr_arrays(group: Any) -> list[tuple[str, Any]]:
    import zarr

    out = []
    for name, member in group.members(max_depth=None):
        if isinstance(member, zarr.Array) and member.ndim >= 1:
            out.append((name, member))
    return sorted(out, key=lambda t: t[0])


def _has_dims(arr: Any) -> bool:
    if arr.metadata.zarr_format == 3:
        return getattr(arr.metadata, "dimension_names", None) is not None
    return "_ARRAY_DIMENSIONS" in arr.attrs


def _xarray_like(group: Any) -> bool:
    """A group written by xarray: arrays at the top level only."""
    return all("/" not in name for name, _ in group.members(max_depth=None))


def _labels_of(p: Path) -> list[str]:
    attrs = ngff.group_attrs(p / "labels") if (p / "labels").is_dir() else None
    block = ngff.ome_attrs(attrs or {}) or {}
    return [f"labels/{n}" for n in block.get("labels") or []]


def _read_ngff(group: Any, block: Mapping[str, Any], p: Path, shown: str, level: int) -> Any:
    import dask.array as da

    ms = ngff.read_multiscale(block, shown)
    if level >= len(ms.paths):
        shapes = [tuple(group[q].shape) for q in ms.paths if q in group]
        raise InputError(
            f"{shown} has {len(ms.paths)} resolution level(s) (0..{len(ms.paths) - 1}, shapes "
            f"{shapes}); level={level} is not one of them."
        )
    arr = group[ms.paths[level]]
    data = da.from_zarr(arr)
    names = [n.lower() for n in ms.axis_names]
    if len(names) != data.ndim:
        raise InputError(
            f"{shown}: its metadata names {len(names)} axes {names} for an array of "
            f"{data.ndim} dims."
        )
    scale = ms.scales[level]
    trans = ms.translations[level]
    keep = []
    for i, (n, a) in enumerate(zip(names, ms.axes)):
        kind = a.get("type")
        if n == "t" or kind == "time":
            if data.shape[i] != 1:
                raise InputError(
                    f"{shown} holds {data.shape[i]} time points; nbseg reads one volume (save "
                    "one time point as its own image)."
                )
            continue
        keep.append(i)
    index = tuple(slice(None) if i in keep else 0 for i in range(data.ndim))
    data = data[index]
    dims = []
    for i in keep:
        n, kind = names[i], ms.axes[i].get("type")
        dims.append("c" if kind == "channel" or n in ("c", "channel") else n)
    if len(set(dims)) != len(dims) or not set(dims) <= {"c", "z", "y", "x"}:
        raise InputError(f"{shown}: axes {dims}; nbseg reads c, z, y, x.")
    da_ = xr.DataArray(data, dims=dims, name=ms.name or p.name.split(".")[0])
    space = {names[i]: scale[i] for i in keep if dims[keep.index(i)] in ngff.SPACE}
    origin = {names[i]: trans[i] for i in keep if dims[keep.index(i)] in ngff.SPACE}
    da_ = _with_geometry(da_, space, origin, ngff.ngff_unit(ms.unit))
    voxel = da_.attrs.get("voxel_size")
    meta = ms.extra.get(ngff.NBSEG_KEY)
    if isinstance(meta, Mapping):
        mdims = [str(d) for d in meta.get("dims") or ()]
        if len(mdims) == len(dims) and all(
            m == d for m, d in zip(mdims, dims) if d in ngff.SPACE
        ):  # nbseg's own channel dim name (``class``) and its labels
            da_ = da_.rename({d: m for d, m in zip(dims, mdims) if d != m})
            for k, v in (meta.get("coords") or {}).items():
                cd = tuple(v.get("dims", ()))
                if len(cd) == 1 and cd[0] not in ngff.SPACE and cd[0] in da_.dims:
                    values = np.asarray(v.get("values"))
                    if values.shape == (da_.sizes[cd[0]],):
                        da_ = da_.assign_coords({k: (cd, values)})
        da_.attrs.update(meta.get("attrs") or {})
        if isinstance(meta.get("name"), str):
            da_.name = meta["name"]
    if level and voxel is not None:  # this level's, not the full resolution's in the attrs
        da_.attrs["voxel_size"] = voxel
    da_.attrs.update(
        format="ome-zarr",
        ngff_version=ms.version,
        level=level,
        levels=[list(group[q].shape) for q in ms.paths if q in group],
    )
    omero = ms.extra.get("omero")
    if isinstance(omero, Mapping) and "c" in dims:
        labels = [c.get("label") for c in omero.get("channels") or () if isinstance(c, Mapping)]
        if len(labels) == da_.sizes["c"] and all(isinstance(x, str) for x in labels):
            da_.attrs["channel_names"] = labels
    if ms.image_label is not None:
        names_, colors = ngff.label_classes(ms.image_label)
        if names_:
            da_.attrs["class_names"] = names_
        if colors:
            da_.attrs["class_colors"] = colors
    return da_


# -- TIFF ----------------------------------------------------------------------------------
_TIFF_STACK = "ZTQIRP"  # axes tifffile uses for a stack of planes (Z preferred)


def _read_tiff(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    import dask.array as da
    import tifffile
    import zarr

    tif = tifffile.TiffFile(p)
    try:
        index = 0 if dataset is None else int(dataset)
    except ValueError:
        raise InputError(f"dataset={dataset!r}: a TIFF's series are numbered 0, 1, ...") from None
    if not 0 <= index < len(tif.series):
        raise InputError(f"{shown} has {len(tif.series)} series; dataset={dataset!r} is not one.")
    series = tif.series[index]
    levels = len(series.levels)
    if level >= levels:
        raise InputError(
            f"{shown} has {levels} resolution level(s) (0..{levels - 1}); level={level} is not "
            "one of them."
        )
    store = tif.aszarr(series=index, level=level)
    data = da.from_zarr(zarr.open_array(store, mode="r"))
    axes = series.levels[level].axes
    meta = _tiff_meta(tif)
    if meta is not None:
        out = apply_meta(data, meta, lambda d: _tiff_dims(d, axes, p, shown))
        out.attrs.setdefault("format", "tiff")
        return out
    out = _tiff_dims(data, axes, p, shown)
    scale, origin, unit, info = _tiff_geometry(tif, out.sizes, level)
    out = _with_geometry(out, scale, origin, unit)
    out.attrs.update(info)
    return out


def _tiff_meta(tif: Any) -> dict[str, Any] | None:
    """nbseg's metadata block: in the ImageJ properties, or a shaped JSON description."""
    ij = tif.imagej_metadata or {}
    props = ij.get("Properties") if isinstance(ij, dict) else None
    if isinstance(props, dict) and isinstance(props.get(NBSEG_TIFF_KEY), str):
        try:
            meta = json.loads(props[NBSEG_TIFF_KEY])
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            return meta
    shaped = tif.shaped_metadata or ()
    meta = shaped[0].get(NBSEG_TIFF_KEY) if shaped and isinstance(shaped[0], dict) else None
    return meta if isinstance(meta, dict) else None


def _tiff_dims(data: Any, axes: str, p: Path, shown: str) -> xr.DataArray:
    """tifffile's axes letters → (c, z, y, x) dims; singleton axes dropped."""
    axes = axes.upper()
    keep = [i for i, a in enumerate(axes) if data.shape[i] != 1 or a in "YX"]
    data = data[tuple(slice(None) if i in keep else 0 for i in range(data.ndim))]
    axes = "".join(axes[i] for i in keep)
    if axes.startswith("S") and "C" not in axes and not set(axes) & set(_TIFF_STACK):
        # planar samples first (what tifffile makes of a (3 or 4, y, x) array): planes, as
        # nbseg always read them; colour images keep their samples last (YXS)
        axes = "Z" + axes[1:]
    dims: list[str] = []
    stack = [a for a in axes if a in _TIFF_STACK]
    chan = [a for a in axes if a in "CS"]
    if len(stack) > 1 or len(chan) > 1 or "Y" not in axes or "X" not in axes:
        raise InputError(
            f"{shown} holds a {axes} ({'x'.join(map(str, data.shape))}) image; nbseg reads "
            "2D or 3D images, with channels (axes Z/C/Y/X). Save one volume per file."
        )
    if set(axes) - set("YX") - set(stack) - set(chan):
        raise InputError(f"{shown}: TIFF axes {axes} are not (C)(Z)YX.")
    names = {"Y": "y", "X": "x"}
    for a in axes:
        dims.append(names.get(a, "c" if a in "CS" else "z"))
    order = [d for d in ("c", "z", "y", "x") if d in dims]
    arr = xr.DataArray(data, dims=dims, name=p.name.split(".")[0])
    return arr.transpose(*order)


def _tiff_geometry(
    tif: Any, sizes: Mapping[Any, int], level: int
) -> tuple[dict[str, float], dict[str, float], str | None, dict[str, Any]]:
    """Voxel size, origin and unit a TIFF states (OME, ImageJ or the resolution tags)."""
    scale: dict[str, float] = {}
    origin: dict[str, float] = {}
    unit = None
    info: dict[str, Any] = {"format": "tiff"}
    factor = 2.0**level  # pyramid levels halve (an approximation for odd sizes)
    if tif.is_ome and tif.ome_metadata:
        import tifffile

        info["format"] = "ome-tiff"
        try:
            image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        except (KeyError, IndexError, TypeError, ValueError):
            pixels = {}
        for d in ("x", "y", "z"):
            size = pixels.get(f"PhysicalSize{d.upper()}")
            if isinstance(size, (int, float)) and size > 0 and d in sizes:
                scale[d] = float(size) * (factor if d != "z" else 1.0)
                unit = unit or ngff.ngff_unit(pixels.get(f"PhysicalSize{d.upper()}Unit", "µm"))
        channels = pixels.get("Channel")
        if isinstance(channels, dict):
            channels = [channels]
        if isinstance(channels, list) and "c" in sizes:
            labels = [c.get("Name") for c in channels if isinstance(c, dict)]
            if len(labels) == sizes["c"] and all(isinstance(n, str) for n in labels):
                info["channel_names"] = labels
        return scale, origin, unit, info
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        info["format"] = "imagej-tiff"
        info["imagej"] = {
            k: plain(v)
            for k, v in ij.items()
            if isinstance(v, (str, int, float, bool)) and k not in ("Ranges", "LUTs")
        }
        unit = ngff.ngff_unit(ij.get("unit"))
        if isinstance(ij.get("spacing"), (int, float)) and "z" in sizes:
            scale["z"] = float(ij["spacing"])
    xres = page.tags.get("XResolution")
    yres = page.tags.get("YResolution")
    runit = page.tags.get("ResolutionUnit")
    if xres is not None and yres is not None:
        rx = xres.value[0] / xres.value[1] if xres.value[1] else 0
        ry = yres.value[0] / yres.value[1] if yres.value[1] else 0
        ru = int(runit.value) if runit is not None else 2
        stated = unit is not None or (rx, ry) != (1.0, 1.0)
        if rx > 0 and ry > 0 and stated:
            scale["x"], scale["y"] = factor / rx, factor / ry
            if unit is None and ru in (2, 3):
                unit = "inch" if ru == 2 else "centimeter"
    return scale, origin, unit, info


# -- slices --------------------------------------------------------------------------------
def _natural_key(path: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def _slice_files(p: Path, shown: str, pattern: str | None) -> list[str]:
    if _GLOB.search(str(p)):
        files = [f for f in glob.glob(str(p)) if Path(f).is_file()]
        if not files:
            raise InputError(f"No files match {shown}.")
    else:
        entries = [e for e in os.listdir(p) if not e.startswith(".")]
        if pattern is not None:
            files = [str(p / e) for e in entries if Path(e).match(pattern)]
            if not files:
                raise InputError(f"No files in {shown} match pattern={pattern!r}.")
        else:
            files = [str(p / e) for e in entries if Path(e).suffix.lower() in SLICE_SUFFIXES]
            if not files:
                raise InputError(
                    f"Cannot read {shown}: the folder holds no image slices ("
                    f"{', '.join(SLICE_SUFFIXES)}) and is not a zarr store."
                )
    kinds = {
        Path(f).suffix.lower().replace(".tiff", ".tif").replace(".jpeg", ".jpg") for f in files
    }
    if len(kinds) > 1:
        raise InputError(
            f"{shown} holds {' and '.join(sorted(kinds))} files; pick one kind with "
            f"pattern='*{sorted(kinds)[0]}'."
        )
    bad = [f for f in files if Path(f).suffix.lower() not in SLICE_SUFFIXES]
    if bad:
        raise InputError(
            f"{shown}: {Path(bad[0]).name!r} is not a slice image; slices are "
            f"{', '.join(SLICE_SUFFIXES)}."
        )
    return sorted(files, key=_natural_key)


def _pillow_mode(mode: str, size: tuple[int, int]) -> tuple[tuple[int, ...], np.dtype]:
    w, h = size
    table = {
        "1": ((h, w), np.dtype(bool)),
        "L": ((h, w), np.dtype(np.uint8)),
        "P": ((h, w), np.dtype(np.uint8)),
        "I;16": ((h, w), np.dtype(np.uint16)),
        "I;16B": ((h, w), np.dtype(np.uint16)),
        "I;16L": ((h, w), np.dtype(np.uint16)),
        "I": ((h, w), np.dtype(np.int32)),
        "F": ((h, w), np.dtype(np.float32)),
        "LA": ((h, w, 2), np.dtype(np.uint8)),
        "RGB": ((h, w, 3), np.dtype(np.uint8)),
        "RGBA": ((h, w, 4), np.dtype(np.uint8)),
    }
    if mode not in table:
        raise InputError(f"Pillow image mode {mode!r} is not supported; save grey or RGB images.")
    return table[mode]


def _slice_header(f: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one slice from its header (no pixel data read)."""
    if Path(f).suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(f) as tif:
            s = tif.series[0]
            return tuple(int(n) for n in s.shape), np.dtype(s.dtype)
    image_mod = require("PIL.Image", "reading PNG/JPEG slices", repr(f))
    with image_mod.open(f) as im:
        return _pillow_mode(im.mode, im.size)


def _read_slice(f: str, shape: tuple[int, ...], dtype: np.dtype, first: str) -> np.ndarray:
    if Path(f).suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(f)
    else:
        image_mod = require("PIL.Image", "reading PNG/JPEG slices", repr(f))
        with image_mod.open(f) as im:
            arr = np.asarray(im.convert("L") if im.mode == "P" else im)
    if arr.shape != shape:
        raise InputError(
            f"Slice {f!r} has shape {arr.shape}, but the first slice {first!r} has {shape}; "
            "all slices of a stack must have one shape."
        )
    return arr.astype(dtype, copy=False)


def _read_slices(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    import dask.array as da
    from dask.base import tokenize

    files = _slice_files(p, shown, pattern)
    first = files[0]
    shape, dtype = _slice_header(first)
    if len(shape) == 3 and shape[0] in (2, 3, 4) and shape[-1] not in (2, 3, 4):
        raise InputError(f"Slice {first!r} has shape {shape}; slices are 2D (grey or RGB).")
    if len(shape) not in (2, 3):
        raise InputError(f"Slice {first!r} has shape {shape}; slices are 2D (grey or RGB).")
    n = len(files)

    def read(block: np.ndarray) -> np.ndarray:
        i = int(block.ravel()[0])
        return _read_slice(files[i], shape, dtype, first)[None]

    index = da.arange(n, chunks=1)
    rgb = len(shape) == 3
    data = index.map_blocks(
        read,
        new_axis=list(range(1, 1 + len(shape))),
        chunks=((1,) * n, *((s,) for s in shape)),
        dtype=dtype,
        name=f"nbseg-slices-{tokenize(files, shape, str(dtype))}",
        meta=np.empty((0,) * (1 + len(shape)), dtype),
    )
    if rgb:  # RGB(A) slices: channels first
        data = da.moveaxis(data, -1, 0)
        dims: tuple[str, ...] = ("c", "z", "y", "x")
    else:
        dims = ("z", "y", "x")
    name = (p.parent.name if _GLOB.search(str(p)) else p.name) or "slices"
    out = xr.DataArray(data, dims=dims, name=name)
    scale: dict[str, float] = {}
    unit = None
    if Path(first).suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(first) as tif:
            sizes = {"y": shape[0], "x": shape[1], **({"z": n} if n > 1 else {})}
            scale, _, unit, _ = _tiff_geometry(tif, sizes, 0)
            scale.pop("z", None)  # one file's ImageJ spacing says nothing of the stack's
    out = _with_geometry(out, scale, None, unit)
    out.attrs.update(
        format="slices",
        files=n,
        first_file=Path(first).name,
        last_file=Path(files[-1]).name,
    )
    return out


def _read_picture(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    image_mod = require("PIL.Image", "reading PNG/JPEG images", shown)
    with image_mod.open(p) as im:
        arr = np.asarray(im.convert("L") if im.mode == "P" else im)
    if arr.ndim == 3:
        out = xr.DataArray(np.moveaxis(arr, -1, 0), dims=("c", "y", "x"), name=p.stem)
    else:
        out = xr.DataArray(arr, dims=("y", "x"), name=p.stem)
    out.attrs["format"] = p.suffix.lower().lstrip(".")
    return out


# -- HDF5 ----------------------------------------------------------------------------------
_H5_SCALE_ATTRS = ("element_size_um", "voxel_size", "resolution", "spacing", "pixel_size")


def _read_hdf5(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    h5py = require("h5py", "reading HDF5 files", shown)
    f = h5py.File(p, "r")
    found: list[tuple[str, Any]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 2:
            found.append((name, obj))

    f.visititems(visit)
    listing = ", ".join(f"{n} {tuple(d.shape)} {d.dtype}" for n, d in found) or "none"
    if dataset is None:
        if len(found) != 1:
            f.close()
            raise InputError(
                f"{shown} holds "
                + (
                    f"several datasets: {listing}; say which one with dataset='NAME' (a config: "
                    "{path: ..., variable: NAME}; the command line: FILE.h5:NAME)."
                    if found
                    else "no 2D or 3D datasets."
                )
            )
        name, dset = found[0]
    else:
        name = str(dataset).strip("/")
        dset = f.get(name)
        if not isinstance(dset, h5py.Dataset):
            f.close()
            raise InputError(f"{shown} has no dataset {dataset!r}; it holds {listing}.")
    labels = [d.label for d in dset.dims] if dset.dims else []
    chunks = dset.chunks or "auto"
    data = _lazy(dset, f"nbseg-h5-{_stamp(p)}-{name}", chunks=chunks, lock=True)
    if labels and all(lab.lower() in ("c", "z", "y", "x") for lab in labels):
        dims = [lab.lower() for lab in labels]
        out = xr.DataArray(data, dims=dims, name=name.split("/")[-1])
        out = out.transpose(*[d for d in ("c", "z", "y", "x") if d in dims])
    else:
        out = _wrap(data, p, name.split("/")[-1])
    attrs = {}
    for k, v in dset.attrs.items():
        v = plain(v)
        if isinstance(v, (str, int, float, bool)) or (
            isinstance(v, list) and len(v) <= 16 and all(isinstance(x, (int, float)) for x in v)
        ):
            attrs[str(k)] = v
    spatial = [str(d) for d in out.dims if str(d) in ngff.SPACE]
    scale: dict[str, float] = {}
    unit = None
    for key in _H5_SCALE_ATTRS:
        v = attrs.get(key)
        if isinstance(v, list) and len(v) == len(spatial) and all(x > 0 for x in v):
            scale = dict(zip(spatial, map(float, v)))
            unit = "micrometer" if key == "element_size_um" else ngff.ngff_unit(attrs.get("unit"))
            break
    out = _with_geometry(out, scale, None, unit)
    out.attrs.update({k: v for k, v in attrs.items() if k not in out.attrs})
    out.attrs.update(format="hdf5", dataset=name)
    return out


# -- NIfTI ---------------------------------------------------------------------------------
def _read_nifti(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    import dask.array as da

    nib = require("nibabel", "reading NIfTI files", shown)
    img = nib.load(str(p))
    shape = tuple(int(n) for n in img.shape)
    if len(shape) > 4 or len(shape) < 2:
        raise InputError(f"{shown} has shape {shape}; nbseg reads 2D and 3D NIfTI images.")
    proxy = img.dataobj
    probe = np.asarray(proxy[tuple(slice(0, 1) for _ in shape)])
    data = _lazy(proxy, f"nbseg-nifti-{_stamp(p)}", chunks="auto")
    if data.dtype != probe.dtype:  # scaled on reading (scl_slope / scl_inter)
        data = data.astype(probe.dtype)
    channels = None
    if len(shape) == 4:
        if shape[3] == 1:
            data = data[..., 0]
        else:
            channels = shape[3]
            data = da.moveaxis(data, 3, 0)
    two_d = data.ndim - (channels is not None) == 2
    if two_d:
        data = data[..., None]
    affine = np.asarray(img.affine, dtype=float)
    orient = nib.orientations
    ornt = orient.ornt_transform(orient.io_orientation(affine), orient.axcodes2ornt("LPS"))
    lead = 1 if channels is not None else 0
    vol_shape = data.shape[lead:]
    for ax, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            index = [slice(None)] * data.ndim
            index[lead + ax] = slice(None, None, -1)
            data = data[tuple(index)]
    order = np.argsort(ornt[:, 0])
    data = data.transpose(*range(lead), *(lead + int(a) for a in order))
    new = affine @ orient.inv_ornt_aff(ornt, vol_shape)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ new  # RAS (NIfTI) → LPS
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))  # (L, P, S) = (x, y, z)
    origin = lps[:3, 3]
    data = data.transpose(*range(lead), *(lead + a for a in (2, 1, 0)))  # → (z, y, x)
    if two_d:
        data = data[(slice(None),) * lead + (0,)]
    dims = (("c",) if channels else ()) + (("y", "x") if two_d else ("z", "y", "x"))
    out = xr.DataArray(data, dims=dims, name=p.name.split(".")[0])
    xyz_unit = img.header.get_xyzt_units()[0]
    unit = {"mm": "millimeter", "micron": "micrometer", "meter": "meter"}.get(xyz_unit)
    sp = {"x": float(spacing[0]), "y": float(spacing[1]), "z": float(spacing[2])}
    og = {"x": float(origin[0]), "y": float(origin[1]), "z": float(origin[2])}
    if two_d:
        sp.pop("z")
    meta = _nifti_meta(img)
    if meta is not None and not channels:
        back = apply_meta(out.data, meta, lambda d: out)
        if back.dims == out.dims:
            back.attrs.setdefault("format", "nifti")
            return back
    out = _with_geometry(out, sp, og, unit)
    descrip = img.header.get("descrip")
    text = bytes(np.asarray(descrip).tobytes()).split(b"\0")[0].decode("latin-1").strip()
    out.attrs.update(format="nifti", orientation="LPS")
    if text:
        out.attrs["description"] = text
    return out


def _nifti_meta(img: Any) -> dict[str, Any] | None:
    for ext in getattr(img.header, "extensions", ()):
        try:
            content = ext.get_content()
            raw = content if isinstance(content, bytes) else bytes(content)
            block = json.loads(raw.decode("utf-8"))
        except (ValueError, TypeError, UnicodeDecodeError, AttributeError):
            continue
        if isinstance(block, dict) and isinstance(block.get(NBSEG_TIFF_KEY), dict):
            meta: dict[str, Any] = block[NBSEG_TIFF_KEY]
            return meta
    return None


# -- MRC -----------------------------------------------------------------------------------
def _read_mrc(p: Path, shown: str, dataset: Any, level: int, pattern: Any) -> xr.DataArray:
    mrcfile = require("mrcfile", "reading MRC files", shown)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mrc = mrcfile.mmap(str(p), mode="r")
    arr = mrc.data
    if arr is None:
        raise InputError(f"Cannot read {shown}: the MRC file holds no data.")
    data = _lazy(arr, f"nbseg-mrc-{_stamp(p)}", chunks="auto")
    out = _wrap(data, p)
    vs = mrc.voxel_size
    size = {"x": float(vs.x), "y": float(vs.y), "z": float(vs.z)}
    h = mrc.header
    org = {"x": float(h.origin.x), "y": float(h.origin.y), "z": float(h.origin.z)}
    start = {"x": int(h.nxstart), "y": int(h.nystart), "z": int(h.nzstart)}
    if not any(org.values()):
        org = {d: start[d] * size[d] for d in org}
    spatial = [str(d) for d in out.dims]
    scale = {d: size[d] for d in spatial if size[d] > 0}
    if len(scale) == len(spatial):
        out = _with_geometry(out, scale, {d: org[d] for d in spatial}, "angstrom")
    out.attrs.update(
        format="mrc",
        mrc_mode=int(h.mode),
        space_group=int(h.ispg),
        labels=[
            bytes(lab).decode("latin-1").strip()
            for lab in h.label[: int(h.nlabl)]
            if bytes(lab).strip()
        ],
    )
    return out


_READERS: dict[str, Callable[[Path, str, Any, int, Any], xr.DataArray]] = {
    "npy": _read_npy,
    "netcdf": _read_netcdf,
    "zarr": _read_zarr,
    "tiff": _read_tiff,
    "slices": _read_slices,
    "picture": _read_picture,
    "hdf5": _read_hdf5,
    "nifti": _read_nifti,
    "mrc": _read_mrc,
}
