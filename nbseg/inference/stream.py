"""Segment volumes larger than memory: block by block over dask, into a zarr store.

The output is cut into blocks (by default a few sliding-window strides per axis, or whole
slices for 2D/2.5D models; ``chunks=`` sets it). Each block is one dask task that

1. lists the tiles of the *whole volume's* tile grid (MONAI placement, see
   :mod:`nbseg.inference.tiling`) that meet the block, skipping those outside the mask,
2. reads its input region, the union of those tiles (plus the 2.5D slice offsets in z), straight
   from the source (the task computes its own dask slice, so neighbouring blocks share no
   in-memory chunks and nothing waits in memory for a neighbour),
3. normalises it with the model's normalisation, predicts the tiles in the order of the
   in-memory path and accumulates the Gaussian-weighted probabilities and weights,
4. crops the block, normalises and takes the arg-max (``-1`` outside the mask / coverage).

Every voxel of a block therefore receives exactly the tiles, weights and summation order of
in-memory :func:`nbseg.segment`: the result is the same (probabilities to float rounding of the
network, labels equal). Tiles that straddle a block border are predicted once per block they
meet; block borders fall on tile starts, so that is one extra tile per axis and block.

With ``out=`` the blocks are written into a zarr store (an xarray dataset with the input's
coords, one chunk per block) and a lazy DataArray over it is returned; an ``out`` ending in
``.ome.zarr`` (or ``<image>/labels/<name>`` inside an OME-Zarr image) is an OME-Zarr label
image instead: level 0 block by block, then the downsampled levels chunk by chunk and the NGFF
metadata (:mod:`nbseg.ngff`), so memory stays flat either way. Without ``out=`` (a
dask-backed image), the result is a **lazy** dask-backed DataArray of the same blocks: nothing
is computed until it is written (``.to_zarr``) or loaded. Peak memory is the working set of
the blocks running at once (one per dask thread/worker), whatever the volume size.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
import warnings
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from .. import ngff
from ..data.trainingset import as_dataarray
from ..errors import InputError
from ..jobs import Cancelled
from ..paths import check_output_path
from ..progress import Progress, ProgressCallback
from .predictor import VolumePredictor, checked_inputs
from .settings import InferenceSettings
from .tiling import PadMode, blend, output_attrs, pad_plan, resolve_window, tile_starts

if TYPE_CHECKING:
    from ..model import Model

#: voxels per output block when ``chunks`` is not given (working set ~ 100 MB for a small model)
DEFAULT_BLOCK_VOXELS = 2**21

# All network calls of a process run one at a time on one thread: tasks on dask threads (or
# in-process distributed workers) share the model, ``VolumePredictor.predict`` switches it to
# eval mode, and torch's activations then always come from one thread's malloc arena (with a
# call per dask thread, each thread's arena keeps its own copy: measured +70 % peak RSS, 3D).
_NETWORK: ThreadPoolExecutor | None = None
_NETWORK_LOCK = threading.Lock()


def _network_thread() -> ThreadPoolExecutor:
    global _NETWORK
    with _NETWORK_LOCK:
        if _NETWORK is None:
            _NETWORK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbseg-network")
        return _NETWORK


# -- block geometry ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """The whole-volume geometry every block task needs (small, picklable)."""

    shape: tuple[int, int, int]  # real volume (z, y, x); a 2D image has z = 1
    pads: tuple[int, int, int]  # padding after each axis (volume thinner than the window)
    pad_mode: PadMode
    window: tuple[int, int, int]
    starts: tuple[tuple[int, ...] | None, tuple[int, ...], tuple[int, ...]]  # z None for 2D
    z_offsets: tuple[int, ...]  # 2.5D slice offsets (0 for 2D)
    is3d: bool
    probabilities: bool
    class_count: int


def _axis_tiles(starts: Sequence[int], w: int, b0: int, b1: int) -> list[int]:
    return [s for s in starts if s < b1 and s + w > b0]


def _block_region(plan: _Plan, block: tuple[slice, slice, slice]) -> tuple[list[int], ...]:
    """Tile starts per axis meeting ``block`` (z: the block's slices for 2D/2.5D)."""
    out = []
    for a, sl in enumerate(block):
        if a == 0 and not plan.is3d:
            out.append(list(range(sl.start, sl.stop)))
        else:
            starts = plan.starts[a]
            assert starts is not None  # only z has no starts, in 2D/2.5D
            out.append(_axis_tiles(starts, plan.window[a], sl.start, sl.stop))
    return tuple(out)


def _region_bounds(plan: _Plan, tiles: tuple[list[int], ...]) -> list[tuple[int, int]]:
    """Input region ``[lo, hi)`` per axis in padded coordinates."""
    bounds = []
    for a, ts in enumerate(tiles):
        if a == 0 and not plan.is3d:
            lo = max(0, ts[0] + min(plan.z_offsets))
            hi = min(plan.shape[0], ts[-1] + max(plan.z_offsets) + 1)
        else:
            lo, hi = ts[0], ts[-1] + plan.window[a]
        bounds.append((lo, hi))
    return bounds


def _read_padded(
    source: Any, plan: _Plan, bounds: list[tuple[int, int]], mode: PadMode | Literal["constant"]
) -> np.ndarray:
    """Read ``bounds`` of a (z, y, x) source, padded like the in-memory path."""
    real = tuple(slice(lo, min(hi, n)) for (lo, hi), n in zip(bounds, plan.shape))
    arr = source.read(real)
    pads = [(0, hi - min(hi, n)) for (lo, hi), n in zip(bounds, plan.shape)]
    if any(p for _, p in pads):
        # only an axis shorter than the window is padded; its region is then the whole axis,
        # so padding the region equals cropping the padded volume
        arr = np.pad(arr, pads, mode=mode)
    return arr


class _Source:
    """One input (or the mask) cut to a block's region: a numpy view, or a dask slice whose
    graph is culled to the region and computed with the synchronous scheduler inside the block
    task, so each block reads only its own region and keeps nothing in memory for others."""

    def __init__(self, data: Any, two_d: bool, origin: tuple[int, ...]) -> None:
        self.data = data
        self.two_d = two_d
        self.origin = origin

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        local = tuple(slice(s.start - o, s.stop - o) for s, o in zip(region, self.origin))
        part = self.data[local[1:] if self.two_d else local]
        if hasattr(part, "compute"):
            part = part.compute(scheduler="sync")
        arr = np.asarray(part)
        return arr[None] if self.two_d else arr


def _cut(data: Any, two_d: bool, bounds: list[tuple[int, int]], shape: Sequence[int]) -> _Source:
    """A source for one block's region: dask graphs culled to the region, numpy views."""
    real = tuple(slice(lo, min(hi, n)) for (lo, hi), n in zip(bounds, shape))
    sl = real[1:] if two_d else real
    part = data[sl]
    if hasattr(part, "dask"):
        import dask

        (part,) = dask.optimize(part)
    return _Source(part, two_d, tuple(s.start for s in real))


# -- the block task ------------------------------------------------------------------------
class _Job:
    """What every block task shares: the model, the inference settings and the plan."""

    def __init__(self, model: Model, plan: _Plan, settings: InferenceSettings) -> None:
        self.model = model
        self.plan = plan
        self.settings = settings
        self._predictor: VolumePredictor | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_predictor"] = None  # rebuilt where the task runs
        return state

    @property
    def predictor(self) -> VolumePredictor:
        if self._predictor is None:
            self._predictor = VolumePredictor(self.model, self.plan.window, self.settings)
        return self._predictor

    def run(
        self, block: tuple[slice, slice, slice], inputs: list[_Source], mask: _Source | None
    ) -> np.ndarray:
        plan = self.plan
        tiles_ax = _block_region(plan, block)
        bounds = _region_bounds(plan, tiles_ax)
        origin = [lo for lo, _ in bounds]
        wz, wy, wx = plan.window
        zs = tiles_ax[0]
        m = None
        if mask is not None:
            m = _read_padded(mask, plan, bounds, "constant").astype(bool)
        tiles = []
        for z in zs:
            for y in tiles_ax[1]:
                for x in tiles_ax[2]:
                    t = (z - origin[0], y - origin[1], x - origin[2])
                    if (
                        m is not None
                        and not m[t[0] : t[0] + wz, t[1] : t[1] + wy, t[2] : t[2] + wx].any()
                    ):
                        continue
                    tiles.append(t)
        bshape = tuple(sl.stop - sl.start for sl in block)
        if not tiles:  # wholly outside the mask: nothing to read or predict
            acc = np.zeros((plan.class_count, *bshape), np.float32)
            return blend(acc, np.zeros(bshape, np.float32), None, plan.probabilities)
        norm = self.model.normalisation
        assert norm is not None
        vol = np.stack(
            [
                norm.apply(_checked(_read_padded(src, plan, bounds, plan.pad_mode), i, origin), i)
                for i, src in enumerate(inputs)
            ]
        )
        z_local = None if plan.is3d else [z - origin[0] for z in zs]
        local = [slice(sl.start - o, sl.stop - o) for sl, o in zip(block, origin)]
        crop = local if plan.is3d else local[1:]
        # accumulate over the block only (not its halo), on the process's network thread
        acc, wsum = (
            _network_thread()
            .submit(self.predictor.predict, vol, z_indices=z_local, tiles=tiles, crop=crop)
            .result()
        )
        del vol
        return blend(acc, wsum, None if m is None else m[tuple(local)], plan.probabilities)


def _checked(arr: np.ndarray, index: int, origin: Sequence[int]) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            where = (np.argwhere(bad)[0] + np.asarray(origin)).tolist()
            raise InputError(
                f"image {index} holds NaN/inf values (first at index {where} of the volume, as "
                "(z, y, x)); replace them (e.g. image.fillna(0)) or mask them out."
            )
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise InputError(f"image {index} has dtype {arr.dtype}; images must be numeric.")
    return arr


def _run_block(
    job: _Job, block: tuple[slice, slice, slice], inputs: list[_Source], mask: _Source | None
) -> np.ndarray:
    set_mmap_threshold(STREAMING_MMAP_THRESHOLD)  # where the task runs (a worker, maybe)
    try:
        return job.run(block, inputs, mask)
    finally:
        _release_freed_memory()


#: glibc ``M_MMAP_THRESHOLD`` while streaming: allocations from 4 MiB up (activations, tiles,
#: block accumulators) get their own mappings, returned to the OS when freed. With glibc's
#: default *dynamic* threshold, which rises to the size of the largest block freed, they come
#: from the heap instead, and fragmentation let the peak RSS creep up with the volume (3D, 128²
#: slices, 128 → 1024 slices: 659 → 833 MiB; with 4 MiB: 566 → 598 MiB; `benchmarks/
#: streaming.py`). It costs ~10 % throughput in page faults.
STREAMING_MMAP_THRESHOLD = 4 * 2**20
#: set when a streamed segmentation ends: the top of glibc's dynamic range (32 MiB on 64-bit),
#: so later work (training) allocates from the heap as it would have by default
RELAXED_MMAP_THRESHOLD = 32 * 2**20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def set_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD, nbytes)``); ``False`` where the
    C library is not glibc."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, int(nbytes)))


def _release_freed_memory() -> None:
    """Give freed heap back to the OS after a block (glibc ``malloc_trim``).

    Each dask worker thread allocates from its own glibc arena, and glibc keeps the freed pages
    of those arenas: without this, peak RSS crept up with the number of blocks (3D, 128² × 64
    → 512 slices: 562 → 888 MiB). A no-op where glibc is not the allocator.
    """
    trim = _MALLOC_TRIM
    if trim is not None:
        trim(0)


def _find_libc_function(name: str) -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, name)
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_libc_function("malloc_trim")
_MALLOPT = _find_libc_function("mallopt")


def _write_block(
    result: np.ndarray, target: Any, region: tuple[slice, ...], shape: tuple[int, ...]
) -> int:
    """Write one block (its own zarr chunk(s)); return its voxel count for progress."""
    target[region] = result.reshape(shape)  # a 2D image's block drops its z of 1
    return int(np.prod(result.shape[-3:]))


# -- blocks --------------------------------------------------------------------------------
def block_shape(
    shape: tuple[int, int, int],
    window: tuple[int, int, int],
    overlap: float,
    is3d: bool,
    chunks: Any = None,
    dims: Sequence[Hashable] = ("z", "y", "x"),
    target: int = DEFAULT_BLOCK_VOXELS,
) -> tuple[int, int, int]:
    """Output block (= zarr chunk) shape ``(z, y, x)``.

    ``chunks``: an int (every axis), a tuple per image dim, a ``{dim: size}`` dict, or None:
    about ``target`` voxels, axes split into near-equal blocks of a whole number of window
    strides (block borders then fall on tile starts, so a tile straddling a border is predicted
    twice at most), whole slices for 2D/2.5D models when a slice fits the budget.
    """
    two_d = len(dims) == 2
    if chunks is not None:
        if isinstance(chunks, int):
            c = [chunks] * 3
        elif isinstance(chunks, dict):
            unknown = set(chunks) - set(dims)
            if unknown:
                raise InputError(f"chunks names {sorted(unknown)}, not dims of the image {dims}.")
            c = [chunks.get(d, n) for d, n in zip(("z", *dims) if two_d else dims, shape)]
        else:
            c = list(chunks)
            if len(c) != len(dims):
                raise InputError(
                    f"chunks {tuple(chunks)} must give one size per image dim {tuple(dims)}."
                )
            c = ([1] if two_d else []) + c
        if any(not isinstance(v, (int, np.integer)) or v < 1 for v in c):
            raise InputError(f"chunks must be positive integers, got {chunks!r}.")
        return (int(min(c[0], shape[0])), int(min(c[1], shape[1])), int(min(c[2], shape[2])))
    steps = [max(1, int(w * (1 - overlap))) for w in window]

    def split(n: int, side: float, step: int) -> int:
        # about n / side equal blocks, each a whole number of strides (no thin last block)
        count = max(1, round(n / side))
        return min(n, math.ceil(math.ceil(n / count) / step) * step)

    if is3d:
        side = target ** (1 / 3)
        return (
            split(shape[0], side, steps[0]),
            split(shape[1], side, steps[1]),
            split(shape[2], side, steps[2]),
        )
    plane = shape[1] * shape[2]
    if plane <= target:
        return (max(1, min(shape[0], target // plane)), shape[1], shape[2])
    side = math.sqrt(target)
    return (1, split(shape[1], side, steps[1]), split(shape[2], side, steps[2]))


def _blocks(shape: Sequence[int], bshape: Sequence[int]) -> list[tuple[slice, slice, slice]]:
    ranges = [range(0, n, b) for n, b in zip(shape, bshape)]
    return [
        (
            slice(z, min(z + bshape[0], shape[0])),
            slice(y, min(y + bshape[1], shape[1])),
            slice(x, min(x + bshape[2], shape[2])),
        )
        for z in ranges[0]
        for y in ranges[1]
        for x in ranges[2]
    ]


# -- output store --------------------------------------------------------------------------
def _is_zarr_store(path: Path) -> bool:
    return any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))


def _check_out(out: Any, overwrite: bool) -> Path:
    if not isinstance(out, (str, os.PathLike)):
        raise InputError(f"out must be a path to a zarr store (str or Path), got {type(out)}.")
    path = Path(out)
    if not path.exists():
        if not path.parent.exists():
            raise InputError(f"out={str(path)!r}: the folder {str(path.parent)!r} does not exist.")
        return path
    if not path.is_dir():
        raise InputError(
            f"out={str(path)!r} exists and is a file, not a zarr store; give a new path (nbseg "
            "never overwrites other files)."
        )
    if not any(path.iterdir()):
        return path
    if not _is_zarr_store(path):
        raise InputError(
            f"out={str(path)!r} is a non-empty folder that is not a zarr store; give a new "
            "path (nbseg never deletes other data, even with overwrite=True)."
        )
    if not overwrite:
        raise InputError(
            f"out={str(path)!r} already holds a zarr store; pass overwrite=True to replace it or "
            "give a new path."
        )
    return path


def _is_ome_out(out: Any) -> bool:
    """``out`` names an OME-Zarr label image: ``*.ome.zarr``, or a path without a suffix inside
    an OME-Zarr image (``<image>/labels/<name>``)."""
    if not isinstance(out, (str, os.PathLike)):
        return False
    p = Path(os.fspath(out))
    return ngff.is_ome_zarr_path(p) or (not p.suffix and ngff.image_root_of(p) is not None)


def _check_ome_out(out: Any, overwrite: bool) -> Path:
    path = Path(os.fspath(out))
    root = ngff.image_root_of(path)
    if root is None:
        return _check_out(out, overwrite)
    labels = root / "labels"
    if path.absolute().parent != labels.absolute():
        raise InputError(
            f"out={str(path)!r} lies inside the OME-Zarr image {str(root)!r}; a label image goes "
            f"to {str(labels / path.name)!r}."
        )
    if not labels.exists():
        return path  # the labels group is created with the label image
    return _check_out(out, overwrite)


def _ome_level0(
    path: Path, root: Path | None, ref: xr.DataArray, dtype: Any, chunks: tuple[int, ...]
) -> Any:
    """The full-resolution array of a new OME-Zarr label image at ``path`` (inside the image
    ``root`` when given: its NGFF version, its shape checked, its labels group made)."""
    import zarr

    version = ngff.DEFAULT_VERSION
    if root is not None:
        fmt = ngff.zarr_format_of(root)
        version = "0.5" if fmt == 3 else "0.4"
        image = ngff.image_level0_shape(root)
        mine = {str(d): int(n) for d, n in zip(ref.dims, ref.shape)}
        if any(image.get(d) != n for d, n in mine.items()):
            raise InputError(
                f"out={str(path)!r}: the image segmented has shape {mine} but the OME-Zarr image "
                f"{str(root)!r} has {image}; its labels must have its full-resolution shape."
            )
        zarr.open_group(str(root / "labels"), mode="a", zarr_format=fmt)
    return ngff.create_level0(path, ref.shape, [str(d) for d in ref.dims], dtype, chunks, version)


# -- entry point ---------------------------------------------------------------------------
def segment_streaming(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    mask: xr.DataArray | None = None,
    settings: InferenceSettings | None = None,
    *,
    out: Any = None,
    progress: ProgressCallback | None = None,
    client: Any = None,
    overwrite: bool = False,
    stop_event: threading.Event | None = None,
    **overrides: Any,
) -> xr.DataArray:
    """Segment block by block (see the module docstring); the result equals :func:`segment`.

    Parameters
    ----------
    image, mask
        DataArrays ``(z, y, x)`` / ``(y, x)``, numpy- or dask-backed (e.g. ``xr.open_zarr``,
        a lazily read TIFF stack). A dask mask is read block by block too.
    settings, **overrides
        The :class:`~nbseg.inference.settings.InferenceSettings` (keywords override them);
        ``chunks`` is the output block shape (see :func:`block_shape`), each block one task.
    out
        Path of a zarr store to write (created; an existing store only with ``overwrite=True``,
        never a file, a non-empty non-zarr folder or one of the inputs). The labels (int16,
        ``-1`` outside the mask) or probabilities (float32, leading ``class`` dim) are variable
        ``labels`` / ``probabilities`` of an xarray dataset with the image's coords and attrs,
        chunked by block. ``*.ome.zarr`` (or ``<image>/labels/<name>`` inside an OME-Zarr
        image): an OME-Zarr label image with the model's class names and colours, the voxel
        size from the image's coords, and downsampled levels (labels only). Returns ``xr.open_zarr(out)[name]`` (lazy). Without ``out`` returns a
        lazy dask-backed DataArray (nothing computed yet, ``progress`` is not called).
    client
        A ``dask.distributed.Client`` to run the blocks on (the default client if one is
        active); otherwise dask's threaded scheduler. Workers must see ``out`` and the source.
    progress
        Called with a :class:`nbseg.progress.Progress` record (``unit="chunk"``, ``eta_s``
        from the voxels left, ``extra["voxels_per_s"]``) once before the first block
        (``done=0``, ``eta_s=None``) and after each block written.
    stop_event
        Set it (from any thread) to stop after the blocks in flight: raises
        :class:`nbseg.jobs.Cancelled` (the store keeps the blocks written so far).
    """
    import dask
    import dask.array as da

    images = checked_inputs(model, image)
    ref = images[0]
    if mask is not None:
        mask = as_dataarray(mask, "mask")
        if mask.shape != ref.shape:
            raise InputError(f"mask has shape {mask.shape} but the image has {ref.shape}.")
    s = InferenceSettings.build(settings, **overrides)
    overlap, probabilities = s.overlap, s.probabilities
    if out is not None and isinstance(out, (str, os.PathLike)):
        check_output_path(out, [*images, mask])  # before anything is touched
    ome = _is_ome_out(out)
    if ome and probabilities:
        raise InputError(
            f"out={os.fspath(out)!r}: an OME-Zarr output holds a label image; write "
            "probabilities to a .zarr store."
        )
    if out is None:
        path = None
    else:
        path = _check_ome_out(out, overwrite) if ome else _check_out(out, overwrite)

    two_d = ref.ndim == 2
    size = ref.shape  # 2 or 3 dims (checked_inputs)
    shape = (1, size[0], size[1]) if two_d else (size[0], size[1], size[2])
    spec = model.spec
    is3d = spec.input_dimension == "3D"
    win = resolve_window(model, s.window, shape)
    pads, mode = pad_plan(shape, win, is3d)
    padded = [n + p for n, p in zip(shape, pads)]
    plan = _Plan(
        shape=shape,
        pads=(pads[0], pads[1], pads[2]),
        pad_mode=mode,
        window=win,
        starts=(
            tuple(tile_starts(padded[0], win[0], overlap)) if is3d else None,
            tuple(tile_starts(padded[1], win[1], overlap)),
            tuple(tile_starts(padded[2], win[2], overlap)),
        ),
        z_offsets=tuple(spec.slice_offsets) if spec.input_dimension == "2.5D" else (0,),
        is3d=is3d,
        probabilities=probabilities,
        class_count=spec.class_count,
    )
    bshape = block_shape(shape, win, overlap, is3d, s.chunks, ref.dims)
    blocks = _blocks(shape, bshape)
    job = _Job(model, plan, s)

    token = uuid.uuid4().hex[:12]
    job_d = dask.delayed(job, name=f"nbseg-job-{token}")
    datas = [im.data for im in images]
    mdata = None if mask is None else mask.data
    block_results = []
    for i, block in enumerate(blocks):
        tiles_ax = _block_region(plan, block)
        bounds = _region_bounds(plan, tiles_ax)
        srcs = [_cut(d, two_d, bounds, shape) for d in datas]
        msrc = None if mdata is None else _cut(mdata, two_d, bounds, shape)
        block_results.append(
            dask.delayed(_run_block)(
                job_d, block, srcs, msrc, dask_key_name=f"nbseg-block-{token}-{i}"
            )
        )

    k = spec.class_count
    name = "probabilities" if probabilities else "labels"
    dtype = np.float32 if probabilities else np.int16
    dims = (("class",) if probabilities else ()) + tuple(ref.dims)
    coords: dict[Hashable, Any] = {c: v for c, v in ref.coords.items()}
    if probabilities:
        coords["class"] = np.array(model.class_names, dtype=object)  # variable-length str
    attrs = output_attrs(model, ref)

    def out_region(block: tuple[slice, ...]) -> tuple[slice, ...]:
        sp = block[1:] if two_d else block
        return ((slice(None),) if probabilities else ()) + tuple(sp)

    if path is None:
        gz, gy, gx = (len(range(0, n, b)) for n, b in zip(shape, bshape))
        pieces = []
        for block, res in zip(blocks, block_results):
            full = ((k,) if probabilities else ()) + tuple(sl.stop - sl.start for sl in block)
            arr = da.from_delayed(res, shape=full, dtype=dtype)
            pieces.append(arr[(slice(None), 0) if probabilities else (0,)] if two_d else arr)
        nested: list[Any] = [
            [pieces[(z * gy + y) * gx : (z * gy + y + 1) * gx] for y in range(gy)]
            for z in range(gz)
        ]
        if two_d:
            nested = nested[0]
        data = da.block([nested] if probabilities else nested)  # class axis: one block
        return xr.DataArray(data, dims=dims, coords=coords, attrs=attrs, name=name)

    # the store: xarray metadata and coords now, the data block by block
    import zarr

    out_chunks = ((k,) if probabilities else ()) + (tuple(bshape[1:]) if two_d else bshape)
    out_shape = ((k,) if probabilities else ()) + tuple(ref.shape)
    assert path is not None
    root = ngff.image_root_of(path) if ome else None
    if ome:  # an OME-Zarr label image: level 0 block by block, then the pyramid
        target = _ome_level0(path, root, ref, dtype, out_chunks)
    else:
        template = xr.Dataset(
            {
                name: xr.DataArray(
                    da.zeros(out_shape, dtype=dtype, chunks=out_chunks), dims=dims, attrs=attrs
                )
            },
            coords=coords,
        )
        encoding = {name: {"chunks": out_chunks, "_FillValue": None}}
        with warnings.catch_warnings():  # consolidated metadata is not yet in the zarr v3 spec
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            template.to_zarr(path, mode="w", compute=False, encoding=encoding, consolidated=True)
        target = zarr.open_group(str(path), mode="r+")[name]
    writes = [
        dask.delayed(_write_block)(
            res,
            target,
            out_region(block),
            ((k,) if probabilities else ()) + tuple(sl.stop - sl.start for sl in block[two_d:]),
            dask_key_name=f"nbseg-write-{token}-{i}",
        )
        for i, (block, res) in enumerate(zip(blocks, block_results))
    ]
    try:
        _compute(writes, blocks, client, progress, f"nbseg-write-{token}-", stop_event)
    finally:
        set_mmap_threshold(RELAXED_MMAP_THRESHOLD)
    if ome:
        sdims = [str(d) for d in ref.dims]
        meta = {"dims": sdims, "name": name, "dtype": np.dtype(dtype).name, "attrs": attrs}
        geometry = ngff.geometry_of(ref)
        if root is not None and not geometry.known:  # an image without coords: the OME-Zarr's
            geometry = ngff.image_geometry(root)
        ngff.finish_multiscale(
            path,
            sdims,
            geometry,
            label=True,
            class_names=list(model.class_names),
            colors=list(model.class_colors),
            nbseg_meta=ngff.json_safe(meta),
            source="../../" if root is not None else None,
            name=name,
        )
        if root is not None:
            ngff.add_label_to_image(root, path.name)
        return xr.DataArray(da.from_zarr(target), dims=dims, coords=coords, attrs=attrs, name=name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        return xr.open_zarr(str(path), consolidated=True)[name]


def _compute(
    writes: list[Any],
    blocks: list[tuple[slice, slice, slice]],
    client: Any,
    progress: ProgressCallback | None,
    prefix: str,
    stop_event: threading.Event | None = None,
) -> None:
    import dask

    total = len(writes)
    sizes = [int(np.prod([sl.stop - sl.start for sl in b])) for b in blocks]
    voxels_total = sum(sizes)
    t0 = time.perf_counter()
    state = {"done": 0, "voxels": 0}

    def record(done: int, voxels: int) -> Progress:
        """Chunks done, with the ETA from the voxels left (blocks differ in size)."""
        dt = max(time.perf_counter() - t0, 1e-9)
        rate = voxels / dt
        return Progress(
            done=done,
            total=total,
            unit="chunk",
            rate=done / dt if done else None,
            eta_s=(voxels_total - voxels) / rate if rate > 0 else None,
            elapsed_s=dt,
            extra={"voxels_per_s": rate},
        )

    def report(voxels: int) -> None:
        state["done"] += 1
        state["voxels"] += voxels
        if progress is not None:
            progress(record(state["done"], state["voxels"]))
        if stop_event is not None and stop_event.is_set():  # no block starts after this
            raise Cancelled("The segmentation was stopped.")

    if progress is not None:
        progress(record(0, 0))
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is not None:
        from distributed import as_completed

        futures = client.compute(writes)
        try:
            for fut in as_completed(futures):
                report(fut.result())
        finally:
            for fut in futures:
                fut.release()
        return
    from dask.callbacks import Callback

    def posttask(key: Any, result: Any, dsk: Any, st: Any, worker_id: Any) -> None:
        if isinstance(key, str) and key.startswith(prefix):
            report(int(result))

    with Callback(posttask=posttask):
        dask.compute(*writes, scheduler="threads")
