"""Synthetic sample volumes: nbseg's embedded, offline example data.

Each sample is a deterministic synthetic volume modelled on a real case study, returned as an
:class:`xarray.Dataset` with three variables that share the ``("z", "y", "x")`` geometry:

``image``
    The greyscale volume, ``uint8`` or ``uint16`` like a real CT / EM acquisition, with
    coordinates in µm (attrs ``units``) and attrs ``units`` and ``description``.
``labels``
    The sparse multi-ROI a user would paint: ``int16``, class ids ``0 … n-1`` on the
    labelled slices only and ``-1`` (:data:`UNLABELLED`) everywhere else. Attrs
    ``class_names`` and ``class_colors``.
``truth``
    The complete ground truth (every voxel labelled), for evaluation only.

The Dataset attrs hold ``name``, ``description``, ``labelled_slices`` (list of z indices),
``seed``, ``noise`` and ``spacing`` (voxel size ``(dz, dy, dx)`` in µm).

Samples (:data:`SAMPLES`):

``"fibres"`` (:func:`fibres`)
    Fibre-composite micro-CT: tows (bundles) of parallel cylindrical fibres, mostly in-plane,
    with partial-volume blur, CT noise and a beam-hardening-like intensity drift that defeats
    a global threshold. Two classes.
``"multiphase"`` (:func:`multiphase`)
    Sandstone-like multi-phase micro-CT: pores, a textured clay matrix, grains and dense
    mineral inclusions with overlapping intensity distributions. Four classes.
``"membranes"`` (:func:`membranes`)
    Serial-section EM of neural tissue in the style of ISBI 2012: cells separated by thin
    dark membranes, with dark organelles inside the cells. Two classes, few slices.

Generation takes well under a second at the default sizes; the same arguments always give
identical arrays (numpy ``Generator`` seeded with ``seed``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from .data.multiroi import UNLABELLED
from .errors import InputError, ParamsError

__all__ = ["SAMPLES", "fibres", "load", "membranes", "multiphase", "strokes"]

#: Names accepted by :func:`load`.
SAMPLES: tuple[str, ...] = ("fibres", "multiphase", "membranes")

Shape = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _check_shape(shape: Sequence[int], minimum: Shape) -> Shape:
    try:
        values = tuple(int(s) for s in shape)
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            f"shape must be three integers (z, y, x), got {shape!r}; e.g. shape=(32, 128, 128)"
        ) from None
    if len(values) != 3 or any(int(s) != s for s in shape):
        raise InputError(
            f"shape must be three integers (z, y, x), got {shape!r}; e.g. shape=(32, 128, 128)"
        )
    if any(v < m for v, m in zip(values, minimum)):
        raise InputError(
            f"shape {values} is too small: this sample needs at least {minimum} (z, y, x)"
        )
    return values


def _resolve_slices(labelled_slices: int | Sequence[int], nz: int) -> list[int]:
    """Explicit z indices, or ``n`` indices spread evenly (away from the volume's ends)."""
    if isinstance(labelled_slices, bool):
        raise InputError("labelled_slices must be an int count or a list of z indices, not bool")
    if isinstance(labelled_slices, (int, np.integer)):
        count = int(labelled_slices)
        if not 1 <= count <= nz:
            raise InputError(
                f"labelled_slices={count} must be between 1 and the number of slices ({nz})"
            )
        # the centres of `count` equal bins along z
        return [int(np.floor((i + 0.5) * nz / count)) for i in range(count)]
    try:
        out = [int(z) for z in labelled_slices]
    except (TypeError, ValueError):
        raise InputError(
            f"labelled_slices must be an int count or a list of z indices, got {labelled_slices!r}"
        ) from None
    if not out:
        raise InputError("labelled_slices is empty: give at least one z index")
    bad = [z for z in out if not 0 <= z < nz]
    if bad:
        raise InputError(f"labelled_slices {bad} are outside the volume's z range 0…{nz - 1}")
    if len(set(out)) != len(out):
        raise InputError(f"labelled_slices {out} contains duplicates")
    return sorted(out)


def _check_layer(layer: Any, nz: int) -> tuple[int, int] | None:
    if layer is None:
        return None
    try:
        z0, z1 = (int(v) for v in layer)
        ok = all(float(v) == int(v) for v in layer)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0 <= z0 < z1 <= nz:
        raise InputError(
            f"dense_layer={layer!r} is invalid: give (z0, z1) with 0 <= z0 < z1 <= {nz} "
            "(the volume's z size), or None."
        )
    return z0, z1


def _check_noise(noise: float) -> float:
    try:
        value = float(noise)
    except (TypeError, ValueError):
        raise ParamsError(f"noise must be a number >= 0, got {noise!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ParamsError(f"noise must be a finite number >= 0 (1 = realistic), got {noise!r}")
    return value


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], scale: float) -> np.ndarray:
    """A smooth random field of zero mean and unit std, varying over ``scale`` voxels.

    White noise on a coarse grid (one node every ``scale`` voxels) interpolated with cubic
    B-splines, separably: cheap, and free of the kinks of linear interpolation.
    """
    field = rng.standard_normal(tuple(max(4, int(np.ceil(s / scale)) + 3) for s in shape))
    for axis, size in enumerate(shape):
        nodes = field.shape[axis]
        pos = np.linspace(1.0, nodes - 2.0, size, endpoint=False)
        i = np.floor(pos).astype(np.intp)
        t = pos - i
        weights = (
            (1 - t) ** 3 / 6,
            (3 * t**3 - 6 * t**2 + 4) / 6,
            (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
            t**3 / 6,
        )
        view = [1] * field.ndim
        view[axis] = size
        field = sum(
            (np.take(field, i - 1 + k, axis=axis) * w.reshape(view) for k, w in enumerate(weights)),
            np.zeros(()),
        )
    field = field.astype(np.float32)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _to_uint(values: np.ndarray, dtype: type[np.integer]) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def _dataset(
    name: str,
    image: np.ndarray,
    truth: np.ndarray,
    slices: list[int],
    class_names: list[str],
    class_colors: list[str],
    spacing: tuple[float, float, float],
    description: str,
    image_description: str,
    seed: int,
    noise: float,
) -> xr.Dataset:
    dims = ("z", "y", "x")
    coords = {
        dim: xr.DataArray(
            np.arange(n, dtype=np.float64) * step,
            dims=(dim,),
            attrs={"units": "µm", "long_name": dim},
        )
        for dim, n, step in zip(dims, image.shape, spacing)
    }
    truth = truth.astype(np.int16)
    labels = np.full(truth.shape, UNLABELLED, dtype=np.int16)
    labels[slices] = truth[slices]
    class_attrs = {"class_names": list(class_names), "class_colors": list(class_colors)}
    return xr.Dataset(
        {
            "image": xr.DataArray(
                image,
                dims=dims,
                coords=coords,
                attrs={"units": "grey value", "description": image_description},
            ),
            "labels": xr.DataArray(
                labels,
                dims=dims,
                coords=coords,
                attrs={
                    **class_attrs,
                    "description": f"sparse multi-ROI: slices {slices} labelled, "
                    f"{UNLABELLED} = unlabelled",
                },
            ),
            "truth": xr.DataArray(
                truth,
                dims=dims,
                coords=coords,
                attrs={**class_attrs, "description": "complete ground truth (evaluation only)"},
            ),
        },
        attrs={
            "name": name,
            "description": description,
            "labelled_slices": list(slices),
            "seed": int(seed),
            "noise": float(noise),
            "spacing": [float(s) for s in spacing],
        },
    )


def _grid(shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    return z[:, None, None], y[None, :, None], x[None, None, :]


# ---------------------------------------------------------------------------------------------
# fibres
# ---------------------------------------------------------------------------------------------
def _pack_discs(
    rng: np.random.Generator, radius: float, fibre_radius: float, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping discs (centres, radii) filling a disc of ``radius``.

    A jittered hexagonal packing, as fibres in a tow: a random lattice orientation and
    offset, radii varying by ``± jitter`` and about one site in ten left empty (resin).
    """
    gap = rng.uniform(0.5, 1.2)
    pitch = 2 * fibre_radius * (1 + jitter) + gap
    n = int(np.ceil(radius / pitch)) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    pts = np.stack([i + 0.5 * j, j * np.sqrt(3) / 2], -1).reshape(-1, 2) * pitch
    ang = rng.uniform(0, np.pi / 3)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = pts @ rot.T + rng.uniform(-0.5, 0.5, 2) * pitch
    radii = fibre_radius * rng.uniform(1 - jitter, 1 + jitter, len(pts))
    shift = rng.normal(0, 0.15 * gap, pts.shape)
    pts = pts + np.clip(shift, -0.45 * gap, 0.45 * gap)
    keep = (np.hypot(pts[:, 0], pts[:, 1]) < radius - 0.3 * radii) & (rng.random(len(pts)) > 0.1)
    return pts[keep], radii[keep]


def fibres(
    shape: Sequence[int] = (32, 128, 128),
    labelled_slices: int | Sequence[int] = 3,
    seed: int = 0,
    noise: float = 1.0,
) -> xr.Dataset:
    """Fibre-composite micro-CT: fibre tows in a polymer matrix (binary task).

    Tows (bundles of 10–60 parallel, slightly wavy fibres of radius 2–5 voxels) run in random,
    mostly in-plane (y-x) directions; about one in five is steep enough to show round
    cross-sections in z slices. The image adds partial-volume blur (Gaussian PSF), CT noise
    (Gaussian plus Poisson) and a smooth intensity drift (a beam-hardening-like cupping plus
    a ramp and a low-frequency field) of the order of the fibre/matrix contrast, so a single
    global threshold does not separate the classes; local context does.

    Parameters
    ----------
    shape
        Volume shape ``(z, y, x)``; at least ``(1, 32, 32)``.
    labelled_slices
        z indices of the slices labelled in ``labels``, or a count of slices spread evenly.
    seed
        Seed of the random generator: the same seed gives identical arrays.
    noise
        Noise level relative to the realistic default (``0`` = noise-free, ``2`` = twice as
        noisy).

    Returns
    -------
    xarray.Dataset
        ``image`` (uint16), ``labels`` (int16, sparse) and ``truth`` (int16) with classes
        ``["background", "fibre"]``; voxel size 1 µm.

    Raises
    ------
    InputError
        Bad ``shape`` or ``labelled_slices``.
    ParamsError
        Negative or non-finite ``noise``.
    """
    shape = _check_shape(shape, (1, 32, 32))
    slices = _resolve_slices(labelled_slices, shape[0])
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    zz, yy, xx = _grid(shape)
    centre = np.array([(nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2], dtype=np.float32)

    fibre = np.zeros(shape, dtype=bool)
    claimed = np.zeros(shape, dtype=bool)
    target = 0.85
    res = 0.25  # cross-section raster step, voxels
    for _ in range(80):
        if claimed.mean() >= target:
            break
        # tow direction: mostly in-plane, some steep
        theta = rng.uniform(0, np.pi)
        if rng.random() < 0.3:
            elev = rng.uniform(np.radians(45), np.radians(90))
        else:
            elev = rng.normal(0, np.radians(6))
        d = np.array(
            [np.sin(elev), np.cos(elev) * np.sin(theta), np.cos(elev) * np.cos(theta)],
            dtype=np.float32,
        )
        helper = np.array([1, 0, 0], np.float32) if abs(d[0]) < 0.9 else np.array([0, 1, 0])
        e1 = np.cross(d, helper).astype(np.float32)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1).astype(np.float32)
        fib_r = rng.uniform(2.0, 5.0)
        tow_r = fib_r * rng.uniform(4.0, 7.0)
        # through a random voxel not yet claimed by a tow
        free = np.flatnonzero(~claimed)
        c = np.array(np.unravel_index(free[rng.integers(len(free))], shape), np.float32)
        dz, dy, dx = zz - c[0], yy - c[1], xx - c[2]
        t = dz * d[0] + dy * d[1] + dx * d[2]
        u = dz * e1[0] + dy * e1[1] + dx * e1[2]
        v = dz * e2[0] + dy * e2[1] + dx * e2[2]
        # waviness of the tow
        amp, wavelength, phase = rng.uniform(0, 2.5), rng.uniform(40, 120), rng.uniform(0, 6.3)
        u = u + np.float32(amp) * np.sin(t * np.float32(2 * np.pi / wavelength) + phase)
        inside = (u * u + v * v < tow_r**2) & ~claimed
        if not inside.any():
            continue
        centres, radii = _pack_discs(rng, tow_r, fib_r, jitter=0.08)
        # rasterise the tow cross-section once, then look it up for every voxel
        n = int(np.ceil(2 * tow_r / res)) + 3
        axis = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * res
        table = np.zeros((n, n), dtype=bool)
        for (cu, cv), r in zip(centres, radii):
            table |= (axis[:, None] - cu) ** 2 + (axis[None, :] - cv) ** 2 < r * r
        iu = np.clip(np.rint(u[inside] / res + (n - 1) / 2), 0, n - 1).astype(np.intp)
        iv = np.clip(np.rint(v[inside] / res + (n - 1) / 2), 0, n - 1).astype(np.intp)
        fibre[inside] = table[iu, iv]
        claimed |= inside
    truth = fibre.astype(np.int16)

    # image formation: contrast 1 between matrix (0) and fibre (1)
    value = ndimage.gaussian_filter(fibre.astype(np.float32), 1.0)
    value += 0.08 * _smooth_field(rng, shape, 3.0)  # matrix / sizing inhomogeneity
    r2 = ((yy - centre[1]) / (ny / 2)) ** 2 + ((xx - centre[2]) / (nx / 2)) ** 2
    drift = (
        0.45 * r2  # cupping (beam hardening): brighter towards the edges
        + 0.35 * (xx / nx - 0.5)  # ramp
        + 0.12 * (zz / max(nz, 1) - 0.5)
        + 0.2 * _smooth_field(rng, shape, 48.0)
    )
    value = value + drift
    counts = 22000.0 + 9000.0 * value  # uint16 CT grey values
    if noise > 0:
        gain = 60.0 / noise**2  # Poisson part: std = sqrt(counts * gain) / gain ~ 20 * noise
        counts = rng.poisson(np.maximum(counts, 0) / gain) * gain
        counts += rng.normal(0.0, 2000.0 * noise, size=shape)
    image = _to_uint(counts, np.uint16)
    return _dataset(
        "fibres",
        image,
        truth,
        slices,
        ["background", "fibre"],
        ["#3b4b6b", "#f2a541"],
        (1.0, 1.0, 1.0),
        "Synthetic fibre-composite micro-CT: tows of parallel fibres (radius 2–5 voxels) in a "
        "polymer matrix, mostly in-plane; partial-volume blur, Gaussian + Poisson noise and a "
        "beam-hardening-like intensity drift, so a global threshold is not enough.",
        "synthetic X-ray CT, 16-bit",
        seed,
        noise,
    )


# ---------------------------------------------------------------------------------------------
# multiphase
# ---------------------------------------------------------------------------------------------
def multiphase(
    shape: Sequence[int] = (32, 128, 128),
    labelled_slices: int | Sequence[int] = 4,
    seed: int = 0,
    noise: float = 1.0,
    dense_grains: float = 0.04,
    dense_layer: Sequence[int] | None = None,
) -> xr.Dataset:
    """Sandstone-like multi-phase micro-CT (four classes, dark to bright).

    Rounded grains grow from random seeds (Voronoi cells shrunk from their boundaries by a
    spatially varying gap and cut to a per-grain radius); the pore space between them is
    partly filled by a textured, intermediate-intensity clay ``matrix``; a few grains and
    small inclusions are ``dense`` (bright) minerals. Partial-volume blur at pore/grain
    contacts produces matrix-like intensities and noise makes neighbouring phases overlap,
    so texture and context matter.

    Parameters
    ----------
    shape
        Volume shape ``(z, y, x)``; at least ``(1, 32, 32)``.
    labelled_slices
        z indices of the slices labelled in ``labels``, or a count of slices spread evenly.
    seed
        Seed of the random generator: the same seed gives identical arrays.
    noise
        Noise level relative to the realistic default (``0`` = noise-free).
    dense_grains
        Share of the grains made of the dense mineral (0 … 1; default 0.04, about 2 % of the
        voxels dense). ``0`` leaves only the small dense inclusions: a rare class of about
        0.5 % of the voxels.
    dense_layer
        ``(z0, z1)``: the dense mineral occurs only in the layer ``z0 <= z < z1`` (a heavy-
        mineral lamina): the small inclusions are all placed in it (as many as the whole
        volume would hold) and only the dense grains seeded in it stay dense. ``None``
        (default): everywhere. With ``dense_grains=0`` the dense class is absent from every
        slice outside the layer (inclusions reach 3 slices below it and 4 above), the case a
        few evenly spaced labelled slices miss.

    Returns
    -------
    xarray.Dataset
        ``image`` (uint8), ``labels`` (int16, sparse) and ``truth`` (int16) with classes
        ``["pore", "matrix", "grain", "dense"]``; voxel size 2.5 µm.

    Raises
    ------
    InputError
        Bad ``shape`` or ``labelled_slices``.
    ParamsError
        Negative or non-finite ``noise``.
    """
    shape = _check_shape(shape, (1, 32, 32))
    slices = _resolve_slices(labelled_slices, shape[0])
    noise = _check_noise(noise)
    if not (isinstance(dense_grains, (int, float)) and 0.0 <= float(dense_grains) <= 1.0):
        raise ParamsError(f"dense_grains={dense_grains!r} must be a share between 0 and 1.")
    layer = _check_layer(dense_layer, shape[0])
    rng = np.random.default_rng(seed)

    grain_r = 11.0  # typical grain radius in voxels
    n_seeds = max(4, round(np.prod(shape) / (1.1 * grain_r**3 * 4.19)))
    seeds = (rng.random((n_seeds, 3)) * np.array(shape)).astype(np.intp)
    seeds = np.unique(seeds, axis=0)
    marker = np.ones(shape, dtype=bool)
    marker[tuple(seeds.T)] = False
    ids = np.full(shape, -1, dtype=np.int32)
    ids[tuple(seeds.T)] = np.arange(len(seeds))
    # nearest seed (Voronoi cell) and distance to it
    dist_seed, nearest = ndimage.distance_transform_edt(marker, return_indices=True)
    cell = ids[tuple(nearest)]
    # distance to the cell boundaries
    boundary = np.zeros(shape, dtype=bool)
    for axis in range(3):
        if shape[axis] > 1:
            diff = np.diff(cell, axis=axis) != 0
            lo = [slice(None)] * 3
            lo[axis] = slice(0, -1)
            boundary[tuple(lo)] |= diff
    dist_wall = ndimage.distance_transform_edt(~boundary)

    # pore channels where the field is high, grain contacts (no gap) elsewhere
    gap = 4.0 * (_smooth_field(rng, shape, 16.0) + 0.1)
    gap[gap < 1.2] = -1.0
    radius = rng.uniform(1.0, 1.6, len(seeds)) * grain_r
    grain = (dist_wall > gap) & (dist_seed < radius[cell])
    dense_grain = rng.random(len(seeds)) < float(dense_grains)
    if layer is not None:
        dense_grain &= (seeds[:, 0] >= layer[0]) & (seeds[:, 0] < layer[1])
    truth = np.zeros(shape, dtype=np.int16)  # pore
    clay = _smooth_field(rng, shape, 8.0) > 0.25
    truth[~grain & clay] = 1  # matrix
    truth[grain] = 2
    truth[grain & dense_grain[cell]] = 3
    # small dense inclusions
    zz, yy, xx = _grid(shape)
    n_inc = max(1, int(np.prod(shape) / 12000))
    for _ in range(n_inc):
        c = rng.random(3) * np.array(shape)
        if layer is not None:  # the same draws, squeezed into the layer
            c[0] = layer[0] + c[0] / shape[0] * (layer[1] - layer[0])
        r = rng.uniform(1.5, 3.5)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        ball = (zz[sl[0]] - c[0]) ** 2 + (yy[:, sl[1]] - c[1]) ** 2 + (
            xx[:, :, sl[2]] - c[2]
        ) ** 2 < r * r
        truth[sl][ball] = 3

    # image formation (8-bit grey values)
    base = np.array([35.0, 88.0, 128.0, 215.0], dtype=np.float32)
    value = base[truth]
    grain_shift = rng.normal(0, 5.0, len(seeds)).astype(np.float32)
    value += np.where(truth == 2, grain_shift[cell], 0)
    texture = _smooth_field(rng, shape, 1.5)
    value += np.where(truth == 1, 14.0 * texture, 4.0 * texture)
    value = ndimage.gaussian_filter(value, 1.0)
    value += 8.0 * _smooth_field(rng, shape, 64.0)
    if noise > 0:
        value += rng.normal(0.0, 13.0 * noise, size=shape)
    image = _to_uint(value, np.uint8)
    return _dataset(
        "multiphase",
        image,
        truth,
        slices,
        ["pore", "matrix", "grain", "dense"],
        ["#2c1e5a", "#3f8fbf", "#9fd35a", "#fde725"],
        (2.5, 2.5, 2.5),
        "Synthetic sandstone-like micro-CT with four phases (dark to bright): pores, a "
        "textured clay matrix partly filling them, rounded grains and dense mineral "
        "inclusions; blur and noise make neighbouring phases overlap in intensity.",
        "synthetic X-ray micro-CT, 8-bit",
        seed,
        noise,
    )


# ---------------------------------------------------------------------------------------------
# membranes
# ---------------------------------------------------------------------------------------------
def membranes(
    shape: Sequence[int] = (8, 128, 128),
    labelled_slices: int | Sequence[int] = 3,
    seed: int = 0,
    noise: float = 1.0,
) -> xr.Dataset:
    """Serial-section EM of neural tissue, ISBI-2012 style (interior vs. membrane).

    Cells are an additively weighted Voronoi tessellation of seeds drifting slowly from
    section to section, with curvy walls (a smooth random warp) drawn as 2–4 pixel dark
    membranes. Cell interiors carry a mottled texture and dark organelles (mitochondria-like
    blobs and vesicle rings) that a threshold confuses with membranes; the illumination is
    uneven. Voxel size 4 × 4 nm in-plane, 50 nm between sections.

    Parameters
    ----------
    shape
        Volume shape ``(z, y, x)``; at least ``(1, 32, 32)``.
    labelled_slices
        z indices of the slices labelled in ``labels``, or a count of slices spread evenly.
    seed
        Seed of the random generator: the same seed gives identical arrays.
    noise
        Noise level relative to the realistic default (``0`` = noise-free).

    Returns
    -------
    xarray.Dataset
        ``image`` (uint8), ``labels`` (int16, sparse) and ``truth`` (int16) with classes
        ``["interior", "membrane"]``.

    Raises
    ------
    InputError
        Bad ``shape`` or ``labelled_slices``.
    ParamsError
        Negative or non-finite ``noise``.
    """
    shape = _check_shape(shape, (1, 32, 32))
    slices = _resolve_slices(labelled_slices, shape[0])
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape

    cell_r = 20.0
    margin = 2 * cell_r
    area = (ny + 2 * margin) * (nx + 2 * margin)
    n_cells = max(4, round(area / (np.pi * cell_r**2) * 1.3))
    pos = rng.uniform(-margin, 1.0, (n_cells, 2)) + rng.uniform(0, 1, (n_cells, 2)) * np.array(
        [ny + margin, nx + margin]
    )
    vel = rng.normal(0, 1.0, (n_cells, 2))
    weight = rng.gamma(4.0, 1.5, n_cells)  # additive weights: bigger and smaller cells
    half_width = 0.9 + 0.6 * rng.random(n_cells)  # per-cell membrane half width (pixels)

    zz, yy, xx = _grid(shape)
    warp_y = 4.0 * _smooth_field(rng, shape, 14.0)
    warp_x = 4.0 * _smooth_field(rng, shape, 14.0)
    py = np.broadcast_to(yy, shape) + warp_y
    px = np.broadcast_to(xx, shape) + warp_x

    d1 = np.full(shape, np.inf, dtype=np.float32)
    d2 = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    for k in range(n_cells):
        cy = (pos[k, 0] + vel[k, 0] * zz).astype(np.float32)
        cx = (pos[k, 1] + vel[k, 1] * zz).astype(np.float32)
        d = np.sqrt((py - cy) ** 2 + (px - cx) ** 2) - np.float32(weight[k])
        closer = d < d1
        d2 = np.where(closer, d1, np.minimum(d2, d))
        owner = np.where(closer, k, owner)
        d1 = np.where(closer, d, d1)
    wall = 0.5 * (d2 - d1)  # ~ distance to the cell wall
    membrane = wall < half_width[owner]
    truth = membrane.astype(np.int16)

    # image formation, in "darkness" units (membrane = 1)
    dark = membrane.astype(np.float32)
    # organelles: dark blobs (mitochondria) and vesicle rings, inside cells only
    inner = wall > half_width[owner] + 2.5
    organelle = np.zeros(shape, dtype=np.float32)
    n_org = max(1, int(nz * ny * nx / 1200))
    for _ in range(n_org):
        c = np.array([rng.uniform(-1, nz), rng.uniform(0, ny), rng.uniform(0, nx)])
        a, b = rng.uniform(2.0, 7.0), rng.uniform(1.5, 3.5)
        ang = rng.uniform(0, np.pi)
        depth = rng.uniform(0.8, 2.5)  # extent in sections
        ring = rng.random() < 0.5  # vesicle ring, else mitochondrion-like blob
        level = rng.uniform(0.6, 0.9)
        ext = np.array([depth, a, a])
        lo = np.maximum(np.floor(c - ext).astype(int), 0)
        hi = np.minimum(np.ceil(c + ext).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(p, q) for p, q in zip(lo, hi))
        ca, sa = np.cos(ang), np.sin(ang)
        oy, ox = yy[:, sl[1]] - c[1], xx[:, :, sl[2]] - c[2]
        ry, rx = oy * ca + ox * sa, -oy * sa + ox * ca
        q = (ry / a) ** 2 + (rx / b) ** 2 + ((zz[sl[0]] - c[0]) / depth) ** 2
        body = (q < 1) & (q > 0.45) if ring else q < 1
        organelle[sl] = np.maximum(organelle[sl], level * body)
    dark += organelle * inner
    dark = ndimage.gaussian_filter(dark, (0.0, 1.0, 1.0))
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0, 1.5, 1.5))
    dark += 0.9 * texture
    value = 150.0 - 70.0 * dark
    illum = 1.0 + 0.12 * _smooth_field(rng, shape, 60.0)
    corner = np.exp(-((yy - 0.1 * ny) ** 2 + (xx - 0.05 * nx) ** 2) / (2 * (0.15 * nx) ** 2))
    value = value * illum * (1.0 - 0.35 * corner)
    if noise > 0:
        value += rng.normal(0.0, 18.0 * noise, size=shape)
    image = _to_uint(value, np.uint8)
    return _dataset(
        "membranes",
        image,
        truth,
        slices,
        ["interior", "membrane"],
        ["#4c72b0", "#c44e52"],
        (0.05, 0.004, 0.004),
        "Synthetic serial-section EM (ISBI-2012 style): cells with thin dark membranes, dark "
        "organelles inside the cells, uneven illumination and noise; few sections.",
        "synthetic transmission EM, 8-bit",
        seed,
        noise,
    )


_LOADERS: dict[str, Callable[..., xr.Dataset]] = {
    "fibres": fibres,
    "multiphase": multiphase,
    "membranes": membranes,
}


def load(name: str, **kwargs: Any) -> xr.Dataset:
    """Generate the sample called ``name`` (one of :data:`SAMPLES`).

    Parameters
    ----------
    name
        ``"fibres"``, ``"multiphase"`` or ``"membranes"``.
    **kwargs
        Passed to the sample's function (``shape``, ``labelled_slices``, ``seed``,
        ``noise``).

    Returns
    -------
    xarray.Dataset
        Variables ``image``, ``labels`` and ``truth``; see the module documentation.

    Raises
    ------
    InputError
        Unknown ``name`` or bad geometry arguments.
    ParamsError
        Bad ``noise``.
    """
    if not isinstance(name, str) or name not in _LOADERS:
        raise InputError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    unknown = sorted(set(kwargs) - {"shape", "labelled_slices", "seed", "noise"})
    if unknown:
        raise InputError(
            f"unknown argument(s) {unknown} for sample {name!r}; accepted: shape, "
            "labelled_slices, seed, noise"
        )
    return _LOADERS[name](**kwargs)


def strokes(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Simulated user strokes: ~``fraction`` of the labelled voxels of dense ``labels``
    ``(z, y, x)`` kept as short random 3-pixel-wide strokes (10–60 px), each inside one
    class as a scribble stays; the rest becomes ``-1`` (unlabelled). Deterministic per seed.
    """
    if not 0.0 < fraction <= 1.0:
        raise ParamsError(f"fraction={fraction!r} is invalid: give a share in (0, 1].")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.full_like(labels, UNLABELLED)
    target = fraction * labels.size
    kept = 0
    z, h, w = labels.shape
    while kept < target:
        zz, y, x = rng.integers(z), rng.integers(h), rng.integers(w)
        angle = rng.uniform(0, np.pi)
        length = rng.integers(10, 60)
        t = np.arange(length)
        ys = np.clip((y + t * np.sin(angle)).astype(int), 0, h - 1)
        xs = np.clip((x + t * np.cos(angle)).astype(int), 0, w - 1)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
                same = labels[zz, yy, xx] == labels[zz, y, x]
                out[zz, yy[same], xx[same]] = labels[zz, yy[same], xx[same]]
        kept = int((out >= 0).sum())
    return out
