"""What the readers and writers share: optional imports, JSON-safe attrs, nbseg's metadata
block, atomic files and folders."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError

#: the formats nbseg reads, for messages
READ_FORMATS = (
    "OME-Zarr (.ome.zarr, NGFF 0.4/0.5)",
    "zarr (.zarr)",
    "TIFF / OME-TIFF (.tif, .tiff; multi-page stacks)",
    "a folder or glob of 2D slices (.tif, .tiff, .png, .jpg)",
    "PNG / JPEG (.png, .jpg)",
    "HDF5 (.h5, .hdf5, .hdf)",
    "NIfTI (.nii, .nii.gz)",
    "MRC (.mrc, .map, .rec)",
    "netCDF (.nc)",
    "NumPy (.npy)",
)
FORMATS_TEXT = "; ".join(READ_FORMATS)

#: the pip package of each optional import
_PACKAGES = {"h5py": "h5py", "nibabel": "nibabel", "mrcfile": "mrcfile", "PIL": "Pillow"}


def require(module: str, what: str, path: str) -> Any:
    """Import the optional ``module`` or raise an :class:`InputError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = _PACKAGES.get(module, module)
        raise InputError(
            f"{path}: {what} needs the optional package {pkg}; install it with "
            f"`pip install nbseg[formats]` (or `pip install {pkg}`)."
        ) from None


# -- JSON-safe values ------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """Tuples → lists, numpy values → Python, paths → text: JSON/YAML-safe."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def plain_attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): plain(v) for k, v in attrs.items()}


def plain_coords(da: xr.DataArray) -> dict[str, Any]:
    """1-D / scalar coords as JSON-safe lists (with their attrs; others are left out)."""
    out = {}
    for k, c in da.coords.items():
        if c.ndim > 1:
            continue
        values = plain(np.asarray(c.values).tolist())
        try:
            json.dumps(values)
        except (TypeError, ValueError):
            continue
        entry = {"dims": [str(d) for d in c.dims], "values": values}
        if c.attrs:
            entry["attrs"] = plain_attrs(c.attrs)
        out[str(k)] = entry
    return out


def nbseg_meta(da: xr.DataArray) -> dict[str, Any]:
    """nbseg's own metadata of an array (dims, name, dtype, attrs, 1-D coords), stored in
    files whose format has no place for them and read back by :func:`apply_meta`."""
    return {
        "dims": [str(d) for d in da.dims],
        "name": None if da.name is None else str(da.name),
        "dtype": da.dtype.name,
        "attrs": plain_attrs(da.attrs),
        "coords": plain_coords(da),
    }


def apply_meta(data: Any, meta: Any, fallback: Callable[[Any], xr.DataArray]) -> xr.DataArray:
    """``data`` as the DataArray ``meta`` (from :func:`nbseg_meta`) describes, or
    ``fallback(data)`` when the metadata does not fit it."""
    if not isinstance(meta, Mapping) or len(meta.get("dims") or ()) != data.ndim:
        return fallback(data)
    dims = tuple(str(d) for d in meta["dims"])
    coords = {}
    for k, v in (meta.get("coords") or {}).items():
        cdims = tuple(v.get("dims", ()))
        if not set(cdims) <= set(dims):
            continue
        values = np.asarray(v["values"])
        if cdims and values.shape != tuple(data.shape[dims.index(d)] for d in cdims):
            continue
        coords[k] = xr.Variable(cdims, values, attrs=dict(v.get("attrs") or {}))
    dtype = meta.get("dtype")
    if isinstance(dtype, str) and dtype != data.dtype.name:
        with contextlib.suppress(TypeError):
            data = data.astype(np.dtype(dtype))
    return xr.DataArray(
        data, dims=dims, coords=coords, attrs=dict(meta.get("attrs") or {}), name=meta.get("name")
    )


# -- atomic writes -------------------------------------------------------------------------
def tmp_sibling(p: Path) -> Path:
    """A unique hidden name beside ``p`` that keeps its suffixes (writers pick the format by
    them)."""
    return p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp{''.join(p.suffixes[-2:])}")


def atomic_file(p: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temp sibling, flush it to disk, then rename it over ``p``: at every
    instant ``p`` is the old file or the new one; a failure removes the temp file."""
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{p.name}.", suffix=f".tmp{''.join(p.suffixes[-2:])}", dir=p.parent
    )
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


def atomic_folder(p: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a new folder beside ``p``, then swap it in: the old folder is moved
    aside, the new one renamed to ``p``, and the old one removed only after (or put back on a
    failure)."""
    tmp = tmp_sibling(p)
    old = None
    try:
        write(tmp)
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
