"""OME-Zarr (OME-NGFF 0.4 and 0.5): metadata, voxel geometry and multiscale label images (a
leaf module: zarr, dask, numpy and xarray only; :mod:`nbseg.formats` and streamed segmentation
both write through it).

An OME-Zarr *image* is a zarr group whose ``multiscales`` metadata lists its resolution levels
(arrays ``0``, ``1``, ...), each with a ``scale`` (and optionally ``translation``) coordinate
transformation per axis; NGFF 0.4 keeps it in the group's ``.zattrs`` (zarr format 2), 0.5 in
``zarr.json`` under ``attributes.ome`` (zarr format 3). A *label image* is such a group with an
``image-label`` block (colours and properties per label value); inside an image it lives at
``<image>/labels/<name>``, listed in ``<image>/labels``' ``labels`` attribute.

nbseg writes label images with the classes' names (``properties[].class``) and colours, a
few levels downsampled 2× in y and x by the most frequent label (ties: the first voxel), and
its own metadata (dims, attrs) under the ``nbseg`` attribute so that they read back exactly.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from .errors import InputError

__all__ = [
    "NGFF_VERSIONS",
    "Geometry",
    "Multiscale",
    "add_label_to_image",
    "create_level0",
    "downsample",
    "finish_multiscale",
    "geometry_of",
    "group_attrs",
    "hex_to_rgba",
    "image_geometry",
    "image_root_of",
    "is_ome_zarr_path",
    "json_safe",
    "label_metadata",
    "ngff_unit",
    "ome_attrs",
    "pyramid_factors",
    "read_multiscale",
    "rgba_to_hex",
]

NGFF_VERSIONS = ("0.4", "0.5")
#: the version nbseg writes a standalone label image in (0.4: zarr format 2, read by most tools)
DEFAULT_VERSION = "0.4"
#: key of nbseg's own metadata block in a group's attributes
NBSEG_KEY = "nbseg"
SPACE = ("z", "y", "x")

#: NGFF's space units (the spec's list) and the abbreviations people write for them
_UNITS = {
    "angstrom": ("Å", "a", "ang", "angstroms"),
    "nanometer": ("nm", "nanometers", "nanometre", "nanometres"),
    "micrometer": ("um", "µm", "μm", "micron", "microns", "micrometre", "micrometres"),
    "millimeter": ("mm", "millimeters", "millimetre", "millimetres"),
    "centimeter": ("cm", "centimeters", "centimetre"),
    "meter": ("m", "meters", "metre", "metres"),
    "picometer": ("pm",),
    "inch": ("in", "inches"),
}
_UNIT_ALIASES = {a.lower(): k for k, aliases in _UNITS.items() for a in (k, *aliases)}


def ngff_unit(unit: Any) -> str | None:
    """``unit`` as NGFF spells it (``"um"`` → ``"micrometer"``); other text as given, None for
    none / ``"pixel"``."""
    if not isinstance(unit, str) or not unit.strip():
        return None
    u = unit.strip()
    if u.lower() in ("pixel", "pixels", "px", "unknown", "none"):
        return None
    return _UNIT_ALIASES.get(u.lower(), _UNIT_ALIASES.get(u, u))


def is_ome_zarr_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s name ends in ``.ome.zarr`` (any case)."""
    return Path(os.fspath(path)).name.lower().endswith(".ome.zarr")


def json_safe(value: Any) -> Any:
    """``value`` with numpy values as Python ones, tuples as lists and anything else JSON
    cannot hold as text (attributes written into zarr metadata)."""

    def default(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, (set, frozenset)):
            return sorted(v, key=str)
        return os.fspath(v) if isinstance(v, os.PathLike) else str(v)

    return json.loads(json.dumps(value, default=default))


# -- geometry: coords <-> scale and translation -------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Voxel size, origin and unit per spatial dim (in the DataArray's dim order)."""

    dims: tuple[str, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    unit: str | None
    known: bool  # False: no coords said anything (scale 1, origin 0)

    def coords(self, shape: Sequence[int]) -> dict[str, Any]:
        return coords_from(self.dims, shape, self.scale, self.translation, self.unit)


def coords_from(
    dims: Sequence[str],
    shape: Sequence[int],
    scale: Sequence[float],
    translation: Sequence[float],
    unit: str | None,
) -> dict[str, Any]:
    """1-D coords ``translation + index * scale`` per dim, with attribute ``units``."""
    attrs = {"units": unit} if unit else {}
    return {
        d: xr.Variable(d, float(t) + np.arange(n) * float(s), attrs=dict(attrs))
        for d, n, s, t in zip(dims, shape, scale, translation)
    }


def geometry_of(da: xr.DataArray) -> Geometry:
    """The spatial geometry a DataArray's coords state: per ``z``/``y``/``x`` dim the step of
    its coordinate (uniform spacing assumed; the mean step), the first value, and the unit
    (the coords' ``units``/``unit`` attribute, else the array's)."""
    dims = tuple(str(d) for d in da.dims if str(d) in SPACE)
    scale, trans, unit, known = [], [], None, False
    voxel = da.attrs.get("voxel_size")
    for i, d in enumerate(dims):
        s, t = 1.0, 0.0
        c = da.coords[d] if d in da.coords else None  # noqa: SIM401 (.get makes up a range)
        values = None
        if c is not None and c.ndim == 1 and np.issubdtype(c.dtype, np.number):
            values = np.asarray(c.values, dtype=float)
        if values is not None and len(values) >= 2 and np.all(np.isfinite(values)):
            s = float((values[-1] - values[0]) / (len(values) - 1)) or 1.0
            t = float(values[0])
            known = True
        else:
            if values is not None and len(values) == 1 and np.isfinite(values[0]):
                t = float(values[0])
            if isinstance(voxel, (list, tuple)) and len(voxel) == len(dims):
                s, known = float(voxel[i]), True
        if c is not None and unit is None:
            unit = ngff_unit(c.attrs.get("units", c.attrs.get("unit")))
        scale.append(s)
        trans.append(t)
    if unit is None:
        unit = ngff_unit(da.attrs.get("units", da.attrs.get("unit")))
    return Geometry(dims, tuple(scale), tuple(trans), unit, known)


# -- colours ------------------------------------------------------------------------------
def hex_to_rgba(color: str) -> list[int]:
    """``"#rrggbb"`` / ``"#rrggbbaa"`` → ``[r, g, b, a]`` (0-255)."""
    h = color.strip().lstrip("#")
    if len(h) not in (6, 8) or any(ch not in "0123456789abcdefABCDEF" for ch in h):
        raise InputError(f"colour {color!r} is not '#rrggbb'; give colours as '#rrggbb' text.")
    rgba = [int(h[i : i + 2], 16) for i in range(0, len(h), 2)]
    return rgba + [255] * (4 - len(rgba))


def rgba_to_hex(rgba: Sequence[Any]) -> str:
    """``[r, g, b(, a)]`` (0-255, or 0-1 floats) → ``"#rrggbb"``."""
    vals = [float(v) for v in list(rgba)[:3]]
    if all(v <= 1.0 for v in vals) and any(isinstance(v, float) and v % 1 for v in rgba[:3]):
        vals = [v * 255 for v in vals]
    return "#" + "".join(f"{max(0, min(255, round(v))):02x}" for v in vals)


# -- reading ------------------------------------------------------------------------------
def ome_attrs(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The NGFF block of a group's attributes (0.5: ``attrs["ome"]``; 0.4: the attributes
    themselves) with its ``version``, or None when the group holds no NGFF metadata."""
    if isinstance(attrs.get("ome"), Mapping):
        block = dict(attrs["ome"])
        block.setdefault("version", "0.5")
        return block
    if any(k in attrs for k in ("multiscales", "labels", "image-label", "plate", "well")):
        block = dict(attrs)
        ms = block.get("multiscales")
        version = None
        if isinstance(ms, list) and ms and isinstance(ms[0], Mapping):
            version = ms[0].get("version")
        block.setdefault("version", str(version or "0.4"))
        return block
    return None


@dataclass
class Multiscale:
    """One ``multiscales`` entry: axes, and per level its path, scale and translation."""

    version: str
    axes: list[dict[str, Any]]
    paths: list[str]
    scales: list[list[float]]
    translations: list[list[float]]
    name: str | None = None
    image_label: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # omero, nbseg ...

    @property
    def axis_names(self) -> list[str]:
        return [str(a.get("name")) for a in self.axes]

    @property
    def unit(self) -> str | None:
        units = {a.get("unit") for a in self.axes if a.get("type") == "space" and a.get("unit")}
        return str(units.pop()) if len(units) == 1 else None


def _transform(ts: Any, kind: str, n: int, default: float) -> list[float]:
    for t in ts or ():
        if isinstance(t, Mapping) and t.get("type") == kind and kind in t:
            vals = [float(v) for v in t[kind]]
            if len(vals) == n:
                return vals
    return [default] * n


def read_multiscale(block: Mapping[str, Any], where: str) -> Multiscale:
    """The first ``multiscales`` entry of an NGFF block (see :func:`ome_attrs`); an
    :class:`InputError` naming ``where`` when it is missing or malformed."""
    ms = block.get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], Mapping):
        raise InputError(f"{where} has no OME-Zarr 'multiscales' metadata.")
    m = ms[0]
    axes_raw = m.get("axes")
    datasets = m.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError(f"{where}: its 'multiscales' metadata lists no datasets.")
    if axes_raw is None:  # NGFF 0.3 and older: t c z y x
        axes_raw = ["t", "c", "z", "y", "x"]
    axes = [
        {"name": a, "type": "channel" if a == "c" else "time" if a == "t" else "space"}
        if isinstance(a, str)
        else dict(a)
        for a in axes_raw
    ]
    n = len(axes)
    top = m.get("coordinateTransformations")
    gscale = _transform(top, "scale", n, 1.0)
    gtrans = _transform(top, "translation", n, 0.0)
    paths, scales, trans = [], [], []
    for d in datasets:
        if not isinstance(d, Mapping) or "path" not in d:
            raise InputError(f"{where}: a dataset of its 'multiscales' metadata has no path.")
        ts = d.get("coordinateTransformations")
        s = _transform(ts, "scale", n, 1.0)
        t = _transform(ts, "translation", n, 0.0)
        paths.append(str(d["path"]))
        scales.append([a * b for a, b in zip(s, gscale)])
        trans.append([a * g + b for a, g, b in zip(t, gscale, gtrans)])
    label = block.get("image-label")
    extra = {k: block[k] for k in ("omero", NBSEG_KEY) if k in block}
    return Multiscale(
        version=str(block.get("version") or m.get("version") or "0.4"),
        axes=axes,
        paths=paths,
        scales=scales,
        translations=trans,
        name=m.get("name") if isinstance(m.get("name"), str) else None,
        image_label=dict(label) if isinstance(label, Mapping) else None,
        extra=extra,
    )


def label_classes(image_label: Mapping[str, Any]) -> tuple[list[str] | None, list[str] | None]:
    """Class names and colours (``"#rrggbb"``) by label value 0, 1, ... from an
    ``image-label`` block (None where it does not give them for every value from 0)."""
    names: dict[int, str] = {}
    colors: dict[int, str] = {}
    for p in image_label.get("properties") or ():
        if isinstance(p, Mapping) and "label-value" in p:
            for key in ("class", "name", "label-name", "label"):
                if isinstance(p.get(key), str):
                    names[int(p["label-value"])] = p[key]
                    break
    for c in image_label.get("colors") or ():
        if isinstance(c, Mapping) and "label-value" in c and isinstance(c.get("rgba"), list):
            colors[int(c["label-value"])] = rgba_to_hex(c["rgba"])

    def ordered(d: dict[int, str]) -> list[str] | None:
        values = sorted(v for v in d if v >= 0)
        if not values or values != list(range(len(values))):
            return None
        return [d[v] for v in values]

    return ordered(names), ordered(colors)


def image_root_of(path: str | os.PathLike[str]) -> Path | None:
    """The OME-Zarr image ``path`` lies inside (an ancestor group with ``multiscales`` that
    is not a label image), or None."""
    p = Path(os.fspath(path)).expanduser().absolute()
    for parent in p.parents:
        attrs = group_attrs(parent)
        if attrs is None:
            continue
        block = ome_attrs(attrs)
        if block is not None and "multiscales" in block and "image-label" not in block:
            return parent
    return None


def group_attrs(folder: Path) -> dict[str, Any] | None:
    """The attributes of the zarr group at ``folder`` read from its metadata file (v3
    ``zarr.json``, v2 ``.zattrs``), or None when it is not a group."""
    try:
        v3 = folder / "zarr.json"
        if v3.is_file():
            meta = json.loads(v3.read_text())
            if meta.get("node_type") != "group":
                return None
            return dict(meta.get("attributes") or {})
        if (folder / ".zgroup").is_file():
            z = folder / ".zattrs"
            return dict(json.loads(z.read_text())) if z.is_file() else {}
    except (OSError, ValueError):
        return None
    return None


def zarr_format_of(image_root: Path) -> Literal[2, 3]:
    return 3 if (image_root / "zarr.json").is_file() else 2


# -- writing ------------------------------------------------------------------------------
def pyramid_factors(
    shape: Sequence[int], dims: Sequence[str], min_size: int = 32, max_levels: int = 4
) -> list[tuple[int, ...]]:
    """Per level the total downsampling factor per dim: ``y`` and ``x`` halve while both
    stay at least ``min_size`` voxels, up to ``max_levels`` levels (level 0 included)."""
    yx = [i for i, d in enumerate(dims) if d in ("y", "x")]
    out = [tuple(1 for _ in dims)]
    f = 1
    while len(out) < max_levels and yx and all(shape[i] // (f * 2) >= min_size for i in yx):
        f *= 2
        out.append(tuple(f if i in yx else 1 for i in range(len(dims))))
    return out


def _mode_reduce(x: np.ndarray, axis: tuple[int, ...] | None = None, **_: Any) -> np.ndarray:
    """The most frequent value over ``axis`` (ties: the first in C order)."""
    if axis is None:  # dask asks for its meta
        return x
    keep = [i for i in range(x.ndim) if i not in axis]
    moved = np.transpose(x, (*keep, *axis))
    flat = moved.reshape(*moved.shape[: len(keep)], -1)
    n = flat.shape[-1]
    counts = np.zeros(flat.shape, np.int16)
    for j in range(n):
        counts += flat == flat[..., j : j + 1]
    best = np.argmax(counts, axis=-1)
    return np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]


def _mean_reduce(x: np.ndarray, axis: tuple[int, ...] | None = None, **_: Any) -> np.ndarray:
    if axis is None:
        return x
    return np.mean(x, axis=axis, dtype=np.float64).astype(x.dtype)


def downsample(arr: Any, factors: Sequence[int], how: str = "mode") -> Any:
    """A dask array downsampled by ``factors`` per axis: ``"mode"`` (labels: the most frequent
    value of each block) or ``"mean"``; an axis not divisible by its factor is padded with its
    edge values first (dask aligns the chunks to the factors)."""
    import dask.array as da

    if all(f == 1 for f in factors):
        return arr
    pads = [(0, (-n) % f) for n, f in zip(arr.shape, factors)]
    if any(p for _, p in pads):
        arr = da.pad(arr, pads, mode="edge")
    reduce = _mode_reduce if how == "mode" else _mean_reduce
    axes = {i: int(f) for i, f in enumerate(factors) if f > 1}
    return da.coarsen(reduce, arr, axes, trim_excess=False)


def _axes_meta(dims: Sequence[str], unit: str | None) -> list[dict[str, Any]]:
    out = []
    for d in dims:
        if d in SPACE:
            a = {"name": d, "type": "space"}
            if unit:
                a["unit"] = unit
        elif d in ("c", "channel", "class"):
            a = {"name": "c", "type": "channel"}
        elif d == "t":
            a = {"name": "t", "type": "time"}
        else:
            raise InputError(
                f"OME-Zarr axes are t, c, z, y, x; the array has dim {d!r}. Rename it or write "
                "a .zarr store."
            )
        out.append(a)
    return out


def label_metadata(
    class_names: Sequence[str] | None,
    colors: Sequence[str] | None,
    version: str,
    source: str | None = None,
) -> dict[str, Any]:
    """An ``image-label`` block: a colour and a ``class`` property per label value."""
    block: dict[str, Any] = {"version": version}
    if colors:
        block["colors"] = [{"label-value": i, "rgba": hex_to_rgba(c)} for i, c in enumerate(colors)]
    if class_names:
        block["properties"] = [{"label-value": i, "class": n} for i, n in enumerate(class_names)]
    if source:
        block["source"] = {"image": source}
    if version != "0.4":
        block.pop("version")  # 0.5: the version is the ome block's
    return block


def multiscales_metadata(
    dims: Sequence[str],
    geometry: Geometry,
    factors: Sequence[Sequence[int]],
    version: str,
    name: str | None = None,
) -> dict[str, Any]:
    scale0 = dict(zip(geometry.dims, geometry.scale))
    trans0 = dict(zip(geometry.dims, geometry.translation))
    datasets = []
    for k, f in enumerate(factors):
        scale = [scale0.get(d, 1.0) * fi for d, fi in zip(dims, f)]
        # a downsampled voxel's centre sits half its extra extent past the first voxel's
        trans = [trans0.get(d, 0.0) + (fi - 1) * scale0.get(d, 1.0) / 2 for d, fi in zip(dims, f)]
        ts: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if any(t != 0 for t in trans):
            ts.append({"type": "translation", "translation": trans})
        datasets.append({"path": str(k), "coordinateTransformations": ts})
    m: dict[str, Any] = {"axes": _axes_meta(dims, geometry.unit), "datasets": datasets}
    if version == "0.4":
        m = {"version": "0.4", **m}
    if name:
        m["name"] = name
    return m


def create_level0(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    dims: Sequence[str],
    dtype: Any,
    chunks: Sequence[int],
    version: str = DEFAULT_VERSION,
) -> Any:
    """A new (empty) OME-Zarr group at ``path`` with its full-resolution array ``0``; returns
    the array (write the data, then call :func:`finish_multiscale`)."""
    import zarr

    if version not in NGFF_VERSIONS:
        raise InputError(f"OME-Zarr version {version!r}: nbseg writes {NGFF_VERSIONS}.")
    _axes_meta(dims, None)  # refuse dims OME-Zarr has no axis for, before writing
    fmt: Literal[2, 3] = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    kw: dict[str, Any] = {}
    if fmt == 2:
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kw["dimension_names"] = [("c" if d in ("channel", "class") else d) for d in dims]
    return group.create_array(
        "0",
        shape=tuple(int(n) for n in shape),
        chunks=tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape)),
        dtype=np.dtype(dtype),
        fill_value=0,
        **kw,
    )


def finish_multiscale(
    path: str | os.PathLike[str],
    dims: Sequence[str],
    geometry: Geometry,
    *,
    label: bool,
    class_names: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    nbseg_meta: Mapping[str, Any] | None = None,
    source: str | None = None,
    name: str | None = None,
    min_size: int = 32,
    max_levels: int = 4,
) -> None:
    """Write the downsampled levels of the group at ``path`` from its array ``0`` (chunk by
    chunk with dask: memory stays bounded by a few chunks) and its NGFF metadata (multiscales;
    for a label image also ``image-label``; nbseg's own block)."""
    import dask.array as da
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    fmt = group.metadata.zarr_format
    version = "0.4" if fmt == 2 else "0.5"
    base = group["0"]
    assert isinstance(base, zarr.Array)
    factors = pyramid_factors(base.shape, dims, min_size, max_levels)
    how = "mode" if label or not np.issubdtype(base.dtype, np.floating) else "mean"
    prev = da.from_zarr(base)
    for k in range(1, len(factors)):
        step = [f // g for f, g in zip(factors[k], factors[k - 1])]
        down = downsample(prev, step, how)
        kw: dict[str, Any] = {}
        if fmt == 2:
            kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        else:
            kw["dimension_names"] = [("c" if d in ("channel", "class") else d) for d in dims]
        target = group.create_array(
            str(k),
            shape=down.shape,
            chunks=tuple(min(c, n) for c, n in zip(base.chunks, down.shape)),
            dtype=base.dtype,
            fill_value=0,
            overwrite=True,
            **kw,
        )
        down.rechunk(target.chunks).to_zarr(target, compute=True)
        prev = da.from_zarr(target)
    block: dict[str, Any] = {
        "multiscales": [multiscales_metadata(dims, geometry, factors, version, name)]
    }
    if label:
        block["image-label"] = label_metadata(class_names, colors, version, source)
    attrs: dict[str, Any] = {"ome": {"version": "0.5", **block}} if version == "0.5" else block
    if nbseg_meta:
        attrs[NBSEG_KEY] = dict(nbseg_meta)
    group.attrs.update(attrs)


def add_label_to_image(image_root: Path, name: str) -> None:
    """List ``name`` in ``<image_root>/labels``' ``labels`` attribute (creating the group)."""
    import zarr

    fmt = zarr_format_of(image_root)
    labels = zarr.open_group(str(image_root / "labels"), mode="a", zarr_format=fmt)
    attrs: dict[str, Any] = dict(labels.attrs.asdict())
    if fmt == 3:
        ome = dict(attrs.get("ome") or {"version": "0.5"})
        names = list(ome.get("labels") or [])
        if name not in names:
            ome["labels"] = [*names, name]
        labels.attrs.update({"ome": ome})
    else:
        names = list(attrs.get("labels") or [])
        if name not in names:
            labels.attrs.update({"labels": [*names, name]})


def image_level0_shape(image_root: Path) -> dict[str, int]:
    """The spatial size per axis name of an OME-Zarr image's full-resolution level."""
    import zarr

    group = zarr.open_group(str(image_root), mode="r")
    block = ome_attrs(group.attrs.asdict()) or {}
    ms = read_multiscale(block, repr(str(image_root)))
    arr = group[ms.paths[0]]
    assert isinstance(arr, zarr.Array)
    return {n: int(s) for n, s in zip(ms.axis_names, arr.shape) if n in SPACE}


def image_geometry(image_root: Path) -> Geometry:
    """The full-resolution geometry (spatial axes) of an OME-Zarr image."""
    import zarr

    group = zarr.open_group(str(image_root), mode="r")
    block = ome_attrs(group.attrs.asdict()) or {}
    ms = read_multiscale(block, repr(str(image_root)))
    keep = [i for i, n in enumerate(ms.axis_names) if n in SPACE]
    return Geometry(
        dims=tuple(ms.axis_names[i] for i in keep),
        scale=tuple(ms.scales[0][i] for i in keep),
        translation=tuple(ms.translations[0][i] for i in keep),
        unit=ms.unit,
        known=True,
    )


def chunk_guess(shape: Sequence[int], dims: Sequence[str], target: int = 2**22) -> tuple[int, ...]:
    """Chunks of about ``target`` voxels: whole (y, x) planes when they fit, else tiles."""
    out = [int(n) if d in ("y", "x") else 1 for n, d in zip(shape, dims)]
    plane = math.prod(n for n, d in zip(shape, dims) if d in ("y", "x")) or 1
    if plane > target:
        side = int(math.sqrt(target))
        out = [min(n, side) if d in ("y", "x") else 1 for n, d in zip(shape, dims)]
    elif "z" in dims:
        zi = list(dims).index("z")
        out[zi] = max(1, min(int(shape[zi]), target // plane))
    return tuple(out)
