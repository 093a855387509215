"""Arrays in files: the one place nbseg reads and writes them.

:func:`read_array` opens an image / multi-ROI / mask file as an :class:`xarray.DataArray`;
:func:`write_array` writes one, atomically, refusing to replace an existing path unless told
to; :func:`check_output_path` refuses an output that would overwrite one of the inputs.

Formats (``ARRAY_SUFFIXES``):

``.npy``
    The values only (never pickled); read back with dims ``(y, x)`` / ``(z, y, x)``.
``.tif`` / ``.tiff``
    tifffile; nbseg stores the dims, 1-D coords, name and attrs as JSON in the image
    description and reads them back (other TIFFs get dims by their number of axes).
``.zarr``
    An xarray dataset with one variable (coords and attrs kept); read lazily (dask).
``.nc``
    netCDF (netCDF3 with scipy, so attributes that are not numbers or strings, such as
    ``class_names`` lists, are stored as JSON text and decoded on reading, and integer types
    netCDF3 lacks are widened and cast back).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import InputError, NbsegError
from .paths import check_output_path, check_overwrite, source_paths

__all__ = [
    "ARRAY_SUFFIXES",
    "check_output_path",
    "check_overwrite",
    "read_array",
    "source_paths",
    "write_array",
]

ARRAY_SUFFIXES = (".zarr", ".tif", ".tiff", ".npy", ".nc")

#: attribute listing the attrs stored as JSON text (netCDF)
_JSON_ATTRS = "nbseg_json_attrs"
#: attribute naming the dtype an array had before netCDF3 widened it
_DTYPE_ATTR = "nbseg_dtype"
#: key of nbseg's block in a TIFF's JSON description
_TIFF_KEY = "nbseg"
#: netCDF3 lacks these integer types: stored widened, cast back on reading
_NC3_WIDER = {"uint8": "int16", "uint16": "int32", "uint32": "float64", "int64": "float64"}


# -- reading ---------------------------------------------------------------------------------
def read_array(ref: str | os.PathLike[str] | dict[str, Any], base: Path | None = None) -> Any:
    """Open an image / multi-ROI / mask file as an :class:`xarray.DataArray`.

    ``ref`` is a path or ``{"path": ..., "variable": ...}`` (relative paths are relative to
    ``base``). Supported: ``.npy`` (never unpickled), ``.tif``/``.tiff``, ``.zarr`` (an
    array, or a variable of an xarray dataset: lazily, dask-backed) and ``.nc`` (netCDF;
    ``variable`` picks one of several). 2D arrays get dims ``(y, x)``, 3D ones ``(z, y, x)``
    (files written by :func:`write_array` keep their own). The file's path is in
    ``encoding["source"]``.
    """
    if isinstance(ref, dict):
        unknown = set(ref) - {"path", "variable"}
        if unknown or "path" not in ref:
            raise InputError(
                f"An array reference is a path or {{path: ..., variable: ...}}; got keys "
                f"{sorted(ref)}."
            )
        path, variable = ref["path"], ref.get("variable")
        if variable is not None and not isinstance(variable, str):
            raise InputError(f"variable={variable!r} must be the name of a variable (text).")
    else:
        path, variable = ref, None
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(
            f"An array reference is a path or {{path: ..., variable: ...}}; got "
            f"{type(path).__name__} {path!r}."
        )
    given = os.fspath(path)
    p = Path(given).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    # messages name the path as given, and where it led when that differs
    shown = repr(given) if str(p) == given else f"{given!r} ({str(p)!r})"
    suffix = p.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise InputError(
            f"{shown}: unsupported file type {suffix or '(none)'}; use one of "
            f"{', '.join(ARRAY_SUFFIXES)}."
        )
    _check_readable(p, suffix, shown)
    try:
        da = _read(p, suffix, variable)
    except NbsegError:
        raise
    except OSError as err:
        raise InputError(f"Cannot read {shown}: {err.strerror or err}.") from None
    except Exception as err:
        raise InputError(f"Cannot read {shown}: {type(err).__name__}: {err}") from None
    da.encoding["source"] = str(p)
    return da


def _check_readable(p: Path, suffix: str, shown: str) -> None:
    """Refuse, naming the path, a missing file, a folder for a file (or a file for a zarr
    store), a parent that is a file, and a path nbseg may not read."""
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
    if suffix == ".zarr":
        if not is_dir:
            raise InputError(
                f"Cannot read {shown}: it is a file, but a .zarr store is a folder; give the "
                "store's folder."
            )
        if not _is_zarr_store(p):
            raise InputError(
                f"Cannot read {shown}: the folder is not a zarr store (it has no zarr.json, "
                ".zgroup or .zarray)."
            )
    elif is_dir:
        raise InputError(f"Cannot read {shown}: it is a folder, not a {suffix} file.")
    if not os.access(p, os.R_OK) or (is_dir and not os.access(p, os.X_OK)):
        raise InputError(f"Cannot read {shown}: permission denied (check its permissions).")
    if suffix == ".npy":
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


def _read(p: Path, suffix: str, variable: str | None) -> xr.DataArray:
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
        return _wrap(np.asarray(arr), p)
    if suffix in (".tif", ".tiff"):
        return _read_tiff(p)
    if suffix == ".nc":
        ds = xr.open_dataset(p)
        return _decoded(_pick(ds, variable, p))
    import zarr

    node = zarr.open(str(p), mode="r")
    if isinstance(node, zarr.Array):
        if variable is not None:
            raise InputError(f"{str(p)!r} is a single zarr array; drop variable={variable!r}.")
        import dask.array as da

        return _wrap(da.from_zarr(node), p)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        return _pick(xr.open_zarr(p), variable, p)


def _wrap(arr: Any, p: Path) -> xr.DataArray:
    if arr.ndim not in (2, 3):
        raise InputError(
            f"{str(p)!r} holds an array of shape {arr.shape}; nbseg reads 2D (y, x) or 3D "
            "(z, y, x) arrays."
        )
    return xr.DataArray(arr, dims=("z", "y", "x")[-arr.ndim :], name=p.stem)


def _pick(ds: xr.Dataset, variable: str | None, p: Path) -> xr.DataArray:
    names = list(ds.data_vars)
    if variable is None:
        if len(names) != 1:
            raise InputError(
                f"{str(p)!r} holds the variables {names}; say which one with "
                "{path: ..., variable: NAME}."
            )
        return ds[names[0]]
    if variable not in ds.data_vars:
        raise InputError(f"{str(p)!r} has no variable {variable!r}; it holds {names}.")
    return ds[variable]


def _read_tiff(p: Path) -> xr.DataArray:
    import tifffile

    with tifffile.TiffFile(p) as tif:
        arr = tif.asarray()
        shaped = tif.shaped_metadata or ()
    meta = shaped[0].get(_TIFF_KEY) if shaped and isinstance(shaped[0], dict) else None
    if not isinstance(meta, dict) or len(meta.get("dims") or ()) != arr.ndim:
        return _wrap(arr, p)
    dims = tuple(meta["dims"])
    coords = {
        k: (tuple(v["dims"]), np.asarray(v["values"]))
        for k, v in (meta.get("coords") or {}).items()
        if set(v.get("dims", ())) <= set(dims)
    }
    return xr.DataArray(
        arr, dims=dims, coords=coords, attrs=meta.get("attrs") or {}, name=meta.get("name")
    )


def _decoded(da: xr.DataArray) -> xr.DataArray:
    """Undo what :func:`write_array` did for netCDF: JSON attrs, widened integer types."""
    attrs = dict(da.attrs)
    keys = attrs.pop(_JSON_ATTRS, None)
    if keys is not None:
        for k in json.loads(keys):
            if k in attrs:
                attrs[k] = json.loads(attrs[k])
    dtype = attrs.pop(_DTYPE_ATTR, None)
    if keys is None and dtype is None:
        return da
    da = da.copy()
    da.attrs = attrs
    if dtype is not None:
        da = da.astype(dtype)
        da.attrs = attrs
    return da


# -- writing ---------------------------------------------------------------------------------
def write_array(
    data: Any,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    name: str | None = None,
) -> Path:
    """Write a DataArray (or numpy array) to ``path``, atomically; returns the path.

    The format follows the suffix (see the module docstring): ``.npy`` (values only, never
    pickled), ``.tif``/``.tiff`` (dims, coords, attrs in the description), ``.zarr`` (an
    xarray dataset with one variable ``name``, coords and attrs kept) or ``.nc``. The data is
    written beside the target and renamed over it (a zarr store: written as a new folder,
    then swapped, the old one kept until the new one is complete), so a failure leaves the
    old file or nothing. Missing parent folders are created.

    Parameters
    ----------
    data
        The array; a dask-backed DataArray is computed while writing.
    path
        The file or store to write.
    overwrite
        Replace an existing ``path``; without it an existing path is an :class:`InputError`.
    name
        The variable name in a ``.zarr`` / ``.nc`` dataset (default: ``data.name``, else
        ``"data"``).
    """
    p = Path(os.fspath(path)).expanduser()
    suffix = p.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise InputError(
            f"Cannot write {str(p)!r}: unsupported file type {suffix or '(none)'}; use one of "
            f"{', '.join(ARRAY_SUFFIXES)}."
        )
    check_overwrite(p, overwrite)
    if p.exists() and (p.is_dir() != (suffix == ".zarr")):
        kind = "a folder" if p.is_dir() else "a file"
        raise InputError(
            f"Cannot write {str(p)!r}: it exists and is {kind}; nbseg replaces only an array "
            "of the same kind. Give a new path."
        )
    if p.is_dir() and any(p.iterdir()) and not _is_zarr_store(p):
        raise InputError(
            f"Cannot write {str(p)!r}: it is a non-empty folder that is not a zarr store; give "
            "a new path (nbseg never deletes other data, even with overwrite=True)."
        )
    da = _as_dataarray(data, name)
    blocker = next((a for a in p.parents if a.exists() or a.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise InputError(f"Cannot write {str(p)!r}: {str(blocker)!r} is a file, not a folder.")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".zarr":
            _write_zarr(da, p)
        else:
            writer = {".npy": _write_npy, ".nc": _write_nc}.get(suffix, _write_tiff)
            _atomic_file(p, lambda tmp: writer(da, tmp))
    except NbsegError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise InputError(f"Cannot write {str(p)!r}: {reason}.") from None
    return p


def _as_dataarray(data: Any, name: str | None) -> xr.DataArray:
    if isinstance(data, xr.DataArray):
        da = data
    else:
        arr = np.asarray(data)
        if arr.dtype == object:
            raise InputError(
                f"write_array: data of dtype object cannot be written; give a numeric array, "
                f"got {type(data).__name__}."
            )
        dims = ("z", "y", "x")[-arr.ndim :] if 1 <= arr.ndim <= 3 else None
        da = xr.DataArray(arr, dims=dims)
    return da.rename(name or da.name or "data")


def _is_zarr_store(path: Path) -> bool:
    return any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))


def _tmp_sibling(p: Path) -> Path:
    return p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp{p.suffix}")


def _atomic_file(p: Path, write: Any) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{p.suffix}", dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_npy(da: xr.DataArray, tmp: Path) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(da.values), allow_pickle=False)


def _axes(dims: tuple[Any, ...]) -> str:
    letters = {"z": "Z", "y": "Y", "x": "X", "class": "C", "c": "C", "t": "T"}
    return "".join(letters.get(str(d).lower(), "Q") for d in dims)


def _write_tiff(da: xr.DataArray, tmp: Path) -> None:
    import tifffile

    meta = {
        "dims": [str(d) for d in da.dims],
        "name": None if da.name is None else str(da.name),
        "attrs": _plain_attrs(da.attrs),
        "coords": _plain_coords(da),
    }
    tifffile.imwrite(
        tmp,
        np.asarray(da.values),
        photometric="minisblack",
        metadata={"axes": _axes(da.dims), _TIFF_KEY: meta},
    )


def _plain_coords(da: xr.DataArray) -> dict[str, Any]:
    """1-D / scalar coords as JSON-safe lists (others are left out of a TIFF)."""
    out = {}
    for k, c in da.coords.items():
        if c.ndim > 1:
            continue
        values = _plain(np.asarray(c.values).tolist())
        try:
            json.dumps(values)
        except (TypeError, ValueError):
            continue
        out[str(k)] = {"dims": [str(d) for d in c.dims], "values": values}
    return out


def _write_nc(da: xr.DataArray, tmp: Path) -> None:
    da = da.copy(deep=False)
    attrs = _plain_attrs(da.attrs)
    as_json = [
        k for k, v in attrs.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)
    ]
    for k in as_json:
        attrs[k] = json.dumps(attrs[k])
    if as_json:
        attrs[_JSON_ATTRS] = json.dumps(as_json)
    wider = _NC3_WIDER.get(da.dtype.name)
    if wider is not None:
        attrs[_DTYPE_ATTR] = da.dtype.name
        da = da.astype(wider)
    da.attrs = attrs
    for c in da.coords.values():
        c.attrs = {
            k: v for k, v in _plain_attrs(c.attrs).items() if isinstance(v, (str, int, float))
        }
    da.to_netcdf(tmp)


def _write_zarr(da: xr.DataArray, p: Path) -> None:
    """Write a new store beside ``p``, then swap it in (the old one is removed only after)."""
    da = da.copy(deep=False)
    da.attrs = _plain_attrs(da.attrs)
    for c in da.coords.values():
        c.attrs = _plain_attrs(c.attrs)
    # text as variable-length strings (fixed-width unicode has no zarr v3 specification)
    text = {k: c.astype(object) for k, c in da.coords.items() if c.dtype.kind == "U"}
    ds = da.assign_coords(text).to_dataset()
    tmp = _tmp_sibling(p)
    old = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            ds.to_zarr(tmp, mode="w-", consolidated=True)
        if p.exists():
            old = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(p, old)
        try:
            os.replace(tmp, p)
        except BaseException:
            if old is not None:
                os.replace(old, p)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _plain(value: Any) -> Any:
    """Tuples → lists, numpy values → Python, paths → text: JSON/YAML-safe."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _plain_attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in attrs.items()}
