"""Arrays in files: the one place nbseg reads and writes them.

:func:`read_array` opens an image / multi-ROI / mask file as an :class:`xarray.DataArray`
(every format :func:`nbseg.open_image` reads: OME-Zarr, zarr, TIFF stacks, slice folders,
HDF5, NIfTI, MRC, netCDF, ``.npy``; lazily where the format allows); :func:`write_array` writes
one, atomically, refusing to replace an existing path unless told to; :func:`check_output_path`
refuses an output that would overwrite one of the inputs. The formats themselves are
:mod:`nbseg.formats` (readers and writers).

Output formats (``ARRAY_SUFFIXES``):

``.npy``
    The values only (never pickled); read back with dims ``(y, x)`` / ``(z, y, x)``.
``.tif`` / ``.tiff``
    tifffile; ImageJ hyperstacks (voxel size as resolution / spacing) where the dims and dtype
    allow; nbseg stores the dims, 1-D coords, name and attrs as JSON and reads them back.
``.zarr``
    An xarray dataset with one variable (coords and attrs kept); read lazily (dask).
``.ome.zarr``
    OME-Zarr (NGFF 0.4), multiscale; labels with ``class_names`` as a label image.
``.nii`` / ``.nii.gz``
    NIfTI-1, the voxel size and origin in the affine.
``.nc``
    netCDF (netCDF3 with scipy, so attributes that are not numbers or strings, such as
    ``class_names`` lists, are stored as JSON text and decoded on reading, and integer types
    netCDF3 lacks are widened and cast back).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import InputError
from .formats import WRITE_SUFFIXES, is_input_path, open_array, output_suffix, write_file
from .paths import check_output_path, check_overwrite, source_paths

__all__ = [
    "ARRAY_SUFFIXES",
    "array_suffix",
    "check_output_path",
    "check_overwrite",
    "is_input_path",
    "read_array",
    "source_paths",
    "write_array",
]

#: the suffixes :func:`write_array` writes (and :func:`read_array` reads, among others)
ARRAY_SUFFIXES = WRITE_SUFFIXES
#: the output suffix of a path (``".nii.gz"``, ``".ome.zarr"``, ...) or None
array_suffix = output_suffix


# -- reading ---------------------------------------------------------------------------------
def read_array(ref: str | os.PathLike[str] | dict[str, Any], base: Path | None = None) -> Any:
    """Open an image / multi-ROI / mask file as an :class:`xarray.DataArray`.

    ``ref`` is a path or ``{"path": ..., "variable": ...}`` (relative paths are relative to
    ``base``; ``variable`` picks the array of an HDF5 / zarr / netCDF file, or an OME-Zarr
    sub-image such as ``labels/cells``). Every format of :func:`nbseg.open_image` is read
    (lazily, dask-backed, where the format allows; coords from the voxel size); a
    multi-channel file comes as one DataArray with a leading ``c`` dim (the several-inputs
    convention splits it). 2D arrays get dims ``(y, x)``, 3D ones ``(z, y, x)`` (files written
    by :func:`write_array` keep their own). The file's path is in ``encoding["source"]``.
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
    return open_array(p, dataset=variable, shown=shown)


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
    pickled), ``.tif``/``.tiff`` (ImageJ-compatible where possible; dims, coords, attrs kept),
    ``.zarr`` (an xarray dataset with one variable ``name``, coords and attrs kept),
    ``.ome.zarr`` (labels with ``class_names`` as an OME-Zarr label image; inside an OME-Zarr
    image as ``<image>/labels/<name>``), ``.nii``/``.nii.gz`` or ``.nc``. The data is
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
    return write_file(data, path, overwrite=overwrite, name=name)
