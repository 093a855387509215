"""Write arrays and label images to files, atomically, by suffix (:data:`WRITE_SUFFIXES`).

``.npy``
    The values only (never pickled).
``.tif`` / ``.tiff``
    tifffile. (z, y, x) / (y, x) arrays of uint8, uint16, int16 or float32 (and labels that
    fit one of them) are ImageJ hyperstacks: the voxel size is the resolution and ImageJ's
    ``spacing`` and ``unit``, so Fiji shows it; nbseg's dims, coords, name and attrs go in the
    ImageJ properties as JSON. Other arrays get them in a JSON image description.
``.zarr``
    An xarray dataset with one variable (coords and attrs kept).
``.ome.zarr``
    OME-Zarr (NGFF 0.4): a multiscale image; integer arrays with ``class_names`` (and
    :func:`save_labels`) are label images with the classes' colours and names. A path
    ``<image>/labels/<name>`` inside an OME-Zarr image adds a label image to it (in the image's
    NGFF version, listed in its ``labels`` group).
``.nii`` / ``.nii.gz``
    NIfTI-1 (nibabel): (z, y, x) in LPS+ as :mod:`nbseg.formats.readers` reads it, the voxel
    size and origin in the affine; nbseg's metadata in a JSON extension.
``.nc``
    netCDF (netCDF3 with scipy, so attributes that are not numbers or strings, such as
    ``class_names`` lists, are stored as JSON text and decoded on reading, and integer types
    netCDF3 lacks are widened and cast back).

Every write goes to a temp sibling that is renamed over the target (a folder: moved in, the
old one removed only after), so a failure leaves the old file or nothing.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import ngff
from ..data.multiroi import default_class_colors
from ..errors import InputError, NbsegError
from ..paths import check_overwrite
from ._common import atomic_file, atomic_folder, nbseg_meta, plain_attrs, require
from .readers import DTYPE_ATTR, JSON_ATTRS, NBSEG_TIFF_KEY, is_zarr_store

__all__ = ["WRITE_SUFFIXES", "output_suffix", "save_labels", "write_file"]

WRITE_SUFFIXES = (".zarr", ".ome.zarr", ".tif", ".tiff", ".npy", ".nc", ".nii", ".nii.gz")
_FOLDERS = (".zarr", ".ome.zarr")
#: netCDF3 lacks these integer types: stored widened, cast back on reading
_NC3_WIDER = {"uint8": "int16", "uint16": "int32", "uint32": "float64", "int64": "float64"}
_IMAGEJ_DTYPES = ("uint8", "uint16", "int16", "float32")


def output_suffix(path: str | os.PathLike[str]) -> str | None:
    """The suffix of :data:`WRITE_SUFFIXES` that ``path``'s name ends in (the longest), else
    ``".ome.zarr"`` for a path without one inside an OME-Zarr image, else None."""
    p = Path(os.fspath(path))
    name = p.name.lower()
    for s in sorted(WRITE_SUFFIXES, key=len, reverse=True):
        if name.endswith(s) and len(name) > len(s):
            return s
    if not p.suffix and ngff.image_root_of(p) is not None:
        return ".ome.zarr"
    return None


# -- entry points ---------------------------------------------------------------------------
def write_file(
    data: Any,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    name: str | None = None,
    label: bool | None = None,
) -> Path:
    """Write a DataArray (or numpy array) to ``path`` by its suffix, atomically; returns the
    path (see :func:`nbseg.io.write_array`). ``label``: write a label image (OME-Zarr
    ``image-label``); default: integer data with ``class_names``."""
    p = Path(os.fspath(path)).expanduser()
    suffix = output_suffix(p)
    if suffix is None:
        raise InputError(
            f"Cannot write {str(p)!r}: unsupported file type {_shown_suffix(p)}; use one of "
            f"{', '.join(WRITE_SUFFIXES)}."
        )
    check_overwrite(p, overwrite)
    if p.exists() and (p.is_dir() != (suffix in _FOLDERS)):
        kind = "a folder" if p.is_dir() else "a file"
        raise InputError(
            f"Cannot write {str(p)!r}: it exists and is {kind}; nbseg replaces only an array "
            "of the same kind. Give a new path."
        )
    if p.is_dir() and any(p.iterdir()) and not is_zarr_store(p):
        raise InputError(
            f"Cannot write {str(p)!r}: it is a non-empty folder that is not a zarr store; give "
            "a new path (nbseg never deletes other data, even with overwrite=True)."
        )
    da = _as_dataarray(data, name)
    blocker = next((a for a in p.parents if a.exists() or a.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise InputError(f"Cannot write {str(p)!r}: {str(blocker)!r} is a file, not a folder.")
    if label is None:
        label = da.dtype.kind in "iub" and "class_names" in da.attrs
    try:
        if suffix == ".ome.zarr":
            _write_ome_zarr(da, p, label)
            return p
        p.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".zarr":
            _write_zarr(da, p)
        elif suffix in (".nii", ".nii.gz"):
            _write_nifti_checked(da, p)
        else:
            writer = {".npy": _write_npy, ".nc": _write_nc}.get(suffix)
            if writer is None:
                atomic_file(p, lambda tmp: _write_tiff(da, tmp, label=bool(label)))
            else:
                atomic_file(p, lambda tmp: writer(da, tmp))
    except NbsegError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise InputError(f"Cannot write {str(p)!r}: {reason}.") from None
    return p


def save_labels(
    labels: Any,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    class_names: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
) -> Path:
    """Write a label volume (integer class ids, ``-1`` unlabelled) to ``path`` by suffix,
    atomically, with its class names and colours; returns the path.

    ``.ome.zarr``: an OME-Zarr label image (``image-label`` colours and a ``class`` property
    per value, 2× downsampled levels by the most frequent label) — standalone, or into an
    OME-Zarr image when ``path`` is ``<image>/labels/<name>``; ``.tif`` (ImageJ hyperstack,
    voxel size kept), ``.nii.gz`` / ``.nii``, ``.zarr``, ``.nc`` (and ``.npy``, values only).
    :func:`nbseg.open_image` reads them back with ``attrs["class_names"]`` and
    ``attrs["class_colors"]``.

    Parameters
    ----------
    labels
        A DataArray ``(z, y, x)`` / ``(y, x)`` (coords give the voxel size and origin) or a
        numpy array; numpy- or dask-backed.
    path
        The file or store; an existing one is replaced only with ``overwrite=True``.
    class_names, colors
        Names and ``"#rrggbb"`` colours of classes 0, 1, ...; default: the labels'
        ``class_names`` / ``class_colors`` attrs (colours: nbseg's palette).
    """
    if isinstance(labels, xr.DataArray):
        da = labels
    else:
        arr = np.asarray(labels)
        if arr.ndim not in (2, 3):
            raise InputError(
                f"save_labels: labels of shape {arr.shape}; give a 2D (y, x) or 3D (z, y, x) array."
            )
        da = xr.DataArray(arr, dims=("z", "y", "x")[-arr.ndim :])
    if da.dtype.kind not in "iub":
        raise InputError(
            f"save_labels: labels must be integer class ids, got dtype {da.dtype}; write "
            "probabilities with nbseg.io.write_array, or cast the labels (.astype('int16'))."
        )
    bad = [str(d) for d in da.dims if str(d) not in ngff.SPACE]
    if bad or da.ndim not in (2, 3):
        raise InputError(
            f"save_labels: labels have dims {tuple(map(str, da.dims))}; a label image has dims "
            "(z, y, x) or (y, x)."
        )
    names = list(class_names) if class_names is not None else da.attrs.get("class_names")
    cols = list(colors) if colors is not None else da.attrs.get("class_colors")
    if names is not None:
        names = list(names)
        if not names or not all(isinstance(n, str) for n in names):
            raise InputError(f"save_labels: class_names={names!r} must be a list of text.")
    if cols is not None:
        cols = list(cols)
        for c in cols:
            if not isinstance(c, str):
                raise InputError(f"save_labels: colors={cols!r} must be '#rrggbb' text.")
            ngff.hex_to_rgba(c)
    if names and not cols:
        cols = default_class_colors(len(names))
    if names and cols and len(cols) != len(names):
        raise InputError(
            f"save_labels: {len(names)} class names but {len(cols)} colours; give one colour per "
            "class."
        )
    if names and da.chunks is None and da.size:
        top = int(np.max(da.values))
        if top >= len(names):
            raise InputError(
                f"save_labels: the labels hold class {top} but only {len(names)} class names "
                f"{names}; name every class."
            )
    da = da.copy(deep=False)
    if names:
        da.attrs["class_names"] = names
    if cols:
        da.attrs["class_colors"] = cols
    return write_file(da, path, overwrite=overwrite, name=str(da.name or "labels"), label=True)


def _shown_suffix(p: Path) -> str:
    name = p.name.lower()
    if name.endswith(".gz") and len(p.suffixes) > 1:
        return "".join(p.suffixes[-2:]).lower()
    return p.suffix.lower() or "(none)"


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


def _spatial_first(da: xr.DataArray) -> xr.DataArray:
    """Channel-like dims first, then z, y, x (OME-Zarr's axis order)."""
    lead = [d for d in da.dims if str(d) not in ngff.SPACE]
    space = [d for d in ("z", "y", "x") if d in da.dims]
    return da.transpose(*lead, *space)


# -- formats --------------------------------------------------------------------------------
def _write_npy(da: xr.DataArray, tmp: Path) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, np.asarray(da.values), allow_pickle=False)


def _axes(dims: tuple[Any, ...]) -> str:
    letters = {"z": "Z", "y": "Y", "x": "X", "class": "C", "c": "C", "t": "T"}
    return "".join(letters.get(str(d).lower(), "Q") for d in dims)


def _imagej_unit(unit: str | None) -> str | None:
    return {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm"}.get(unit or "", unit)


def _pages(data: Any, dtype: np.dtype) -> Any:
    """The 2D pages of a (z, y, x) array in order, a dask chunk of slices at a time."""
    if getattr(data, "chunks", None) is None or data.ndim == 2:
        arr = np.asarray(data).astype(dtype, copy=False)
        yield from (arr[None] if arr.ndim == 2 else arr)
        return
    z0 = 0
    for n in data.chunks[0]:
        block = np.asarray(data[z0 : z0 + n].compute()).astype(dtype, copy=False)
        yield from block
        z0 += n


def _write_tiff(da: xr.DataArray, tmp: Path, label: bool = False) -> None:
    import tifffile

    meta = nbseg_meta(da)
    dims = [str(d) for d in da.dims]
    space = [d for d in ("z", "y", "x") if d in dims]
    dtype = da.dtype
    imagej = dims == space and len(dims) >= 2 and {"y", "x"} <= set(dims)
    if imagej and dtype.name not in _IMAGEJ_DTYPES:
        if dtype.kind == "b":
            dtype = np.dtype(np.uint8)
        elif label and dtype.kind in "iu" and da.size:
            lo, hi = (int(v) for v in (da.min().values, da.max().values))
            if lo >= 0 and hi < 256:
                dtype = np.dtype(np.uint8)
            elif lo >= -(2**15) and hi < 2**15:
                dtype = np.dtype(np.int16)
            elif lo >= 0 and hi < 2**16:
                dtype = np.dtype(np.uint16)
            else:
                imagej = False
        else:
            imagej = False
    if not imagej:
        tifffile.imwrite(
            tmp,
            np.asarray(da.values),
            photometric="minisblack",
            metadata={"axes": _axes(da.dims), NBSEG_TIFF_KEY: meta},
        )
        return
    g = ngff.geometry_of(da)
    step = dict(zip(g.dims, g.scale))
    metadata: dict[str, Any] = {"axes": "".join(d.upper() for d in dims)}
    kw: dict[str, Any] = {}
    if g.known:
        kw["resolution"] = (1 / abs(step["x"]), 1 / abs(step["y"]))
        if "z" in step:
            metadata["spacing"] = abs(step["z"])
    unit = _imagej_unit(g.unit)
    if unit:
        metadata["unit"] = unit
    metadata["Properties"] = {NBSEG_TIFF_KEY: json.dumps(meta)}
    tifffile.imwrite(
        tmp,
        _pages(da.data, dtype),
        shape=da.shape,
        dtype=dtype,
        imagej=True,
        photometric="minisblack",
        metadata=metadata,
        **kw,
    )


def _write_nc(da: xr.DataArray, tmp: Path) -> None:
    da = da.copy(deep=False)
    attrs = plain_attrs(da.attrs)
    as_json = [
        k for k, v in attrs.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)
    ]
    for k in as_json:
        attrs[k] = json.dumps(attrs[k])
    if as_json:
        attrs[JSON_ATTRS] = json.dumps(as_json)
    wider = _NC3_WIDER.get(da.dtype.name)
    if wider is not None:
        attrs[DTYPE_ATTR] = da.dtype.name
        da = da.astype(wider)
    da.attrs = attrs
    for c in da.coords.values():
        c.attrs = {
            k: v for k, v in plain_attrs(c.attrs).items() if isinstance(v, (str, int, float))
        }
    da.to_netcdf(tmp)


def _write_zarr(da: xr.DataArray, p: Path) -> None:
    """Write a new store beside ``p``, then swap it in (the old one is removed only after)."""
    da = da.copy(deep=False)
    da.attrs = plain_attrs(da.attrs)
    for c in da.coords.values():
        c.attrs = plain_attrs(c.attrs)
    # text as variable-length strings (fixed-width unicode has no zarr v3 specification)
    text = {k: c.astype(object) for k, c in da.coords.items() if c.dtype.kind == "U"}
    ds = da.assign_coords(text).to_dataset()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            ds.to_zarr(tmp, mode="w-", consolidated=True)

    atomic_folder(p, write)


def _write_nifti_checked(da: xr.DataArray, p: Path) -> None:
    nib = require("nibabel", "writing NIfTI files", repr(str(p)))
    bad = [str(d) for d in da.dims if str(d) not in ngff.SPACE]
    if bad or da.ndim not in (2, 3):
        raise InputError(
            f"Cannot write {str(p)!r}: NIfTI holds (z, y, x) or (y, x) arrays; this one has dims "
            f"{tuple(map(str, da.dims))}. Write it as .zarr or .ome.zarr."
        )
    atomic_file(p, lambda tmp: _write_nifti(nib, _spatial_first(da), tmp))


def _write_nifti(nib: Any, da: xr.DataArray, tmp: Path) -> None:
    meta = nbseg_meta(da)
    arr = np.asarray(da.values)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    data = arr.T  # (z, y, x) → (x, y, z)
    g = ngff.geometry_of(da)
    step = dict(zip(g.dims, g.scale))
    start = dict(zip(g.dims, g.translation))
    lps = np.eye(4)
    for i, d in enumerate(("x", "y", "z")):
        lps[i, i] = step.get(d, 1.0)
        lps[i, 3] = start.get(d, 0.0)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS → RAS (NIfTI's)
    img = nib.Nifti1Image(data, affine, dtype=data.dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    unit = {"millimeter": "mm", "micrometer": "micron", "meter": "meter"}.get(g.unit or "")
    if unit:
        img.header.set_xyzt_units(xyz=unit)
    content = json.dumps({NBSEG_TIFF_KEY: meta}).encode("utf-8")
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, content))  # 6: comment
    nib.save(img, str(tmp))


def _write_ome_zarr(da: xr.DataArray, p: Path, label: bool) -> None:
    import zarr

    da = _spatial_first(da)
    dims = [str(d) for d in da.dims]
    root = ngff.image_root_of(p)
    version = ngff.DEFAULT_VERSION
    source = None
    if root is not None:
        labels_dir = root / "labels"
        if p.absolute().parent != labels_dir.absolute():
            raise InputError(
                f"Cannot write {str(p)!r}: it lies inside the OME-Zarr image {str(root)!r}; a "
                f"label image goes to {str(labels_dir / p.name)!r}."
            )
        fmt = ngff.zarr_format_of(root)
        version = "0.5" if fmt == 3 else "0.4"
        image_shape = ngff.image_level0_shape(root)
        mine = {d: int(n) for d, n in zip(dims, da.shape) if d in ngff.SPACE}
        if any(image_shape.get(d) != n for d, n in mine.items()):
            raise InputError(
                f"Cannot write {str(p)!r}: the labels have shape {mine} but the image "
                f"{str(root)!r} has {image_shape}; labels of an image have its full-resolution "
                "shape."
            )
        source = "../../"
        zarr.open_group(str(labels_dir), mode="a", zarr_format=fmt)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
    geometry = ngff.geometry_of(da)
    if root is not None and not geometry.known:  # labels without coords: the image's voxels
        geometry = ngff.image_geometry(root)
    meta = nbseg_meta(da)
    chunks = ngff.chunk_guess(da.shape, dims)
    names = da.attrs.get("class_names") if label else None
    colors = da.attrs.get("class_colors") if label else None

    def write(tmp: Path) -> None:
        arr = ngff.create_level0(tmp, da.shape, dims, da.dtype, chunks, version)
        if da.chunks is not None:
            da.data.rechunk(arr.chunks).to_zarr(arr)
        else:
            arr[...] = np.asarray(da.values)
        ngff.finish_multiscale(
            tmp,
            dims,
            geometry,
            label=label,
            class_names=names,
            colors=colors,
            nbseg_meta=meta,
            source=source,
            name=None if da.name is None else str(da.name),
        )

    atomic_folder(p, write)
    if root is not None:
        ngff.add_label_to_image(root, p.name)
