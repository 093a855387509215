"""Streaming segmentation (dask input and/or zarr output) equals in-memory `segment`."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import nbseg
from nbseg.inference.stream import block_shape
from nbseg.progress import Progress

from .helpers import blobs, ready_model


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # tiny networks: a second intra-op thread only adds spin-waits on a shared CI machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(dim="2D", classes=3, **spec_kw):
    return ready_model(dim, classes, **spec_kw)


MODELS = {
    "2D": lambda: _model("2D"),
    "2.5D": lambda: _model("2.5D", slices=3, slice_spacing=2),
    "3D": lambda: _model("3D"),
}


def _disc_mask(image):
    _, y, x = np.indices(image.shape)
    inside = (y - 30) ** 2 + (x - 25) ** 2 < 22**2
    inside[2] = False  # one slice wholly outside
    return xr.DataArray(inside, dims=image.dims, coords=image.coords)


def _assert_same(streamed_p, ref_p, streamed_l=None, ref_l=None):
    """Probabilities equal to float rounding; labels equal where the arg-max is not a tie."""
    np.testing.assert_allclose(streamed_p, ref_p, atol=1e-5)
    if streamed_l is not None:
        top2 = np.sort(ref_p, axis=0)[-2:]
        clear = (top2[1] - top2[0]) > 1e-4
        assert ((streamed_l == ref_l) | ~clear).all()
        assert ((streamed_l == -1) == (ref_l == -1)).all()


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("dim", ["2D", "2.5D", "3D"])
def test_lazy_input_equals_in_memory(dim, masked):
    m = MODELS[dim]()
    image, _, _ = blobs((9, 70, 60))
    mask = _disc_mask(image) if masked else None
    ref_p = nbseg.segment(m, image, mask, probabilities=True).values
    ref_l = nbseg.segment(m, image, mask).values
    calls = []
    m.network.register_forward_hook(lambda mod, i, o: calls.append(1))
    lazy = image.chunk({"z": 4, "y": 32, "x": 40})
    lazy_mask = None if mask is None else mask.chunk({"z": 5})
    # odd block sizes: block borders cut through tiles and 2.5D slice neighbourhoods
    labels = nbseg.segment(m, lazy, lazy_mask, chunks=(2, 17, 23))
    probs = nbseg.segment(m, lazy, lazy_mask, chunks=(3, 40, 30), probabilities=True)
    assert labels.chunks is not None and not calls  # lazy: nothing predicted yet
    assert labels.dims == image.dims and labels.dtype == np.int16
    assert labels.attrs["class_names"] == m.class_names and labels.attrs["units"] == "um"
    assert (labels.z.values == image.z.values).all()
    assert probs.dims == ("class", *image.dims) and list(probs["class"].values) == m.class_names
    _assert_same(probs.values, ref_p, labels.values, ref_l)
    if masked:
        assert (labels.values[~mask.values] == -1).all() and (labels.values[2] == -1).all()
        assert (labels.values[mask.values] >= 0).all()


def test_default_blocks_and_small_images_equal_in_memory(tmp_path):
    m3 = _model("3D")
    thin, _, _ = blobs((3, 20, 24))  # thinner than the window on every axis: padded
    ref = nbseg.segment(m3, thin, probabilities=True).values
    got = nbseg.segment(m3, thin.chunk({"z": 1}), probabilities=True).values
    _assert_same(got, ref)
    m2 = _model("2D")
    image, _, _ = blobs((1, 70, 60))
    plane = image.isel(z=0)
    ref = nbseg.segment(m2, plane, probabilities=True)
    got = nbseg.segment(m2, plane.chunk({"y": 30}), probabilities=True, chunks={"y": 24})
    assert got.dims == ("class", "y", "x")
    _assert_same(got.values, ref.values)
    lab = nbseg.segment(m2, plane.chunk({"y": 30}))
    assert lab.dims == ("y", "x") and lab.shape == plane.shape
    stored = nbseg.segment(m2, plane, out=tmp_path / "plane.zarr", chunks=(32, 32))
    assert stored.dims == ("y", "x") and (stored.values == lab.values).all()
    stored_p = nbseg.segment(m2, plane, out=tmp_path / "p.zarr", probabilities=True)
    assert stored_p.dims == ("class", "y", "x")
    _assert_same(stored_p.values, ref.values)
    # default block: a whole number of strides (3D), whole slices (2D) within the budget
    assert block_shape((100, 512, 512), (16, 32, 32), 0.25, True, target=48**3) == (60, 48, 48)
    assert block_shape((64, 128, 128), (32, 32, 32), 0.25, True) == (64, 128, 128)
    assert block_shape((100, 512, 512), (1, 64, 64), 0.25, False, target=2**20) == (4, 512, 512)


def test_zarr_out_round_trip(tmp_path):
    m = _model("2D")
    image, _, _ = blobs((5, 50, 44))
    mask = _disc_mask(image)
    ref = nbseg.segment(m, image, mask)
    out = tmp_path / "labels.zarr"
    got = nbseg.segment(m, image, mask, out=out, chunks=(2, 32, 32))
    assert got.chunks is not None  # lazy over the store
    assert got.dims == image.dims and got.dtype == np.int16 and got.name == "labels"
    assert got.attrs["class_colors"] == m.class_colors and got.attrs["model"] == m.name
    assert (got.x.values == image.x.values).all() and (got.values == ref.values).all()
    again = xr.open_zarr(out)["labels"]
    assert again.dtype == np.int16 and (again.values == ref.values).all()
    assert again.encoding["chunks"] == (2, 32, 32)
    assert again.attrs["class_names"] == m.class_names and again.attrs["units"] == "um"
    probs = nbseg.segment(m, image, out=tmp_path / "p.zarr", probabilities=True)
    _assert_same(probs.values, nbseg.segment(m, image, probabilities=True).values)


@pytest.mark.parametrize("dim", ["2D", "3D"])
def test_streamed_tta_equals_in_memory_tta(tmp_path, dim):
    m = MODELS[dim]()
    image, _, _ = blobs((6, 44, 40))
    ref = nbseg.segment(m, image, probabilities=True, tta=True).values
    got = nbseg.segment(m, image, out=tmp_path / "p.zarr", probabilities=True, tta=True)
    _assert_same(got.values, ref)
    assert np.abs(ref - nbseg.segment(m, image, probabilities=True).values).max() > 1e-6


def test_dask_input_from_zarr_streams_into_zarr(tmp_path):
    m = MODELS["2.5D"]()
    image, _, _ = blobs((8, 48, 40))
    image.to_dataset(name="image").to_zarr(
        tmp_path / "in.zarr", consolidated=False, encoding={"image": {"chunks": (3, 20, 20)}}
    )
    lazy = xr.open_zarr(tmp_path / "in.zarr", consolidated=False)["image"]
    assert lazy.chunks is not None
    got = nbseg.segment(m, lazy, out=tmp_path / "out.zarr", chunks=(3, 48, 40))
    assert (got.values == nbseg.segment(m, image).values).all()


def test_distributed_client_gives_the_same_result(tmp_path):
    from distributed import Client, LocalCluster

    m = MODELS["3D"]()
    image, _, _ = blobs((10, 40, 40))
    mask = _disc_mask(image)
    ref = nbseg.segment(m, image, mask, probabilities=True).values
    seen = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster,
        Client(cluster) as client,
    ):
        got = nbseg.segment(
            m,
            image.chunk({"z": 5}),
            mask,
            out=tmp_path / "d.zarr",
            probabilities=True,
            chunks=(6, 24, 24),
            client=client,
            progress=seen.append,
        )
        _assert_same(got.values, ref)
        lazy = nbseg.segment(m, image.chunk({"z": 5}), mask, chunks=(6, 24, 24))
        labels = lazy.compute()  # the lazy result computes on the client too
    assert (labels.values == nbseg.segment(m, image, mask).values).all()
    assert [p.done for p in seen] == list(range(9)) and seen[-1].total == 8


def test_progress_reports_increasing_counts(tmp_path):
    m = _model("2D")
    image, _, _ = blobs((6, 40, 40))
    seen = []
    nbseg.segment(
        m, image.chunk({"z": 2}), out=tmp_path / "o.zarr", chunks=(1, 40, 20), progress=seen.append
    )
    assert all(isinstance(p, Progress) and p.unit == "chunk" for p in seen)
    assert [p.done for p in seen] == list(range(13))
    assert {p.total for p in seen} == {12}
    assert set(seen[0].extra) == {"voxels_per_s"}
    assert [p.total for p in seen] == [12] * len(seen)
    assert seen[0].eta_s is None and all(p.extra["voxels_per_s"] > 0 for p in seen[1:])
    etas = [p.eta_s for p in seen[1:]]
    assert etas[-1] == 0 and all(e >= 0 for e in etas)
    assert seen[-1].finished and all(p.rate > 0 for p in seen[1:])


def test_out_path_checks(tmp_path):
    m = _model("2D")
    image, _, _ = blobs((2, 32, 32))
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    with pytest.raises(nbseg.InputError, match="is a file"):
        nbseg.segment(m, image, out=afile, overwrite=True)
    assert afile.read_text() == "keep me"
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "scan.tif").write_bytes(b"II*\x00")
    with pytest.raises(nbseg.InputError, match="not a zarr store"):
        nbseg.segment(m, image, out=folder, overwrite=True)
    assert (folder / "scan.tif").read_bytes() == b"II*\x00"
    with pytest.raises(nbseg.InputError, match="does not exist"):
        nbseg.segment(m, image, out=tmp_path / "missing" / "o.zarr")
    empty = tmp_path / "empty"
    empty.mkdir()
    first = nbseg.segment(m, image, out=empty).values  # an empty folder is fine
    with pytest.raises(nbseg.InputError, match="overwrite=True"):
        nbseg.segment(m, image + 300, out=empty)
    assert (xr.open_zarr(empty)["labels"].values == first).all()  # untouched
    replaced = nbseg.segment(m, image + 300, out=empty, overwrite=True)
    assert (replaced.values == nbseg.segment(m, image + 300).values).all()


def test_bad_lazy_input_is_a_clear_error(tmp_path):
    m = _model("2D")
    image, _, _ = blobs((4, 32, 32))
    bad = image.copy()
    bad.values[3, 5, 7] = np.nan
    with pytest.raises(nbseg.InputError, match=r"NaN/inf .*\[3, 5, 7\]"):
        nbseg.segment(m, bad.chunk({"z": 1}), out=tmp_path / "o.zarr", chunks=(1, 32, 32))
    with pytest.raises(nbseg.InputError, match="mask has shape"):
        nbseg.segment(m, image.chunk(), image.isel(z=slice(0, 2)) > 0)
    with pytest.raises(nbseg.InputError, match="chunks"):
        nbseg.segment(m, image.chunk(), chunks=(4, 4))
    with pytest.raises(nbseg.InputError, match="untrained"):
        nbseg.segment(nbseg.generate_model(m.spec), image.chunk())


# -- peak memory -------------------------------------------------------------------------
MEASURE = textwrap.dedent(
    """
    import ctypes, gc, json, sys, time
    import numpy as np, torch, xarray as xr, zarr, dask.array as da
    import nbseg

    torch.set_num_threads(1)
    tmp = sys.argv[1]

    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) * 1024 for l in fh if l.startswith(key))

    def reset_peak():
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return status("VmRSS")

    dim = sys.argv[3]
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=3,
        input_dimension=dim,
        parameters={"filters": 4, "depth": 2},
    )
    model = nbseg.generate_model(spec)
    model.normalisation = nbseg.Normalisation(low=[0.0], high=[255.0])
    model.params = nbseg.TrainingParams(patch_size=16 if dim == "3D" else 32)
    yx, block = (64, (16, 64, 64)) if dim == "3D" else (128, (4, 128, 128))
    rng = np.random.default_rng(0)

    def volume(nz):
        path = f"{tmp}/in_{nz}.zarr"
        arr = zarr.create_array(path, shape=(nz, yx, yx), chunks=(8, yx, yx), dtype="uint8")
        for z in range(0, nz, 8):
            arr[z : z + 8] = rng.integers(0, 255, (8, yx, yx), dtype=np.uint8)
        return xr.DataArray(da.from_zarr(zarr.open_array(path, mode="r")), dims=("z", "y", "x"))

    result = {"streamed": {}, "in_memory": {}}
    nbseg.segment(model, volume(8), out=f"{tmp}/warm.zarr", chunks=block)  # warm up
    for nz in (int(v) for v in sys.argv[2].split(",")):
        src = volume(nz)
        base = reset_peak()
        t0 = time.perf_counter()
        nbseg.segment(model, src, out=f"{tmp}/out_{nz}.zarr", chunks=block)
        result["streamed"][nz] = [status("VmHWM") - base, time.perf_counter() - t0]
    src = src.load()
    base = reset_peak()
    nbseg.segment(model, src)  # the in-memory path on the largest volume, for comparison
    result["in_memory"][nz] = [status("VmHWM") - base, 0]
    print(json.dumps(result))
    """
)


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or sys.platform != "linux",
    reason="peak-RSS reset needs Linux /proc/self/clear_refs",
)
@pytest.mark.parametrize("dim", ["2D", "3D"])
def test_peak_memory_does_not_grow_with_volume_size(tmp_path, dim):
    # 2D: z x 128², blocks of 4 slices (8, 16, 32 blocks); 3D: z x 64², blocks of 16 x 64²
    # (4, 8, 32 blocks)
    sizes = (32, 64, 128) if dim == "2D" else (64, 128, 512)
    yx = 128 if dim == "2D" else 64
    res = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path), ",".join(map(str, sizes)), dim],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout.strip().splitlines()[-1])
    streamed = {int(k): v[0] / 2**20 for k, v in data["streamed"].items()}
    in_memory = data["in_memory"][str(sizes[-1])][0] / 2**20
    print("peak RSS growth MiB", streamed, "in memory", in_memory)
    largest_f32 = sizes[-1] * yx * yx * 4 / 2**20  # the normalised volume alone: 8 / 4 MiB
    # the measurement sees the in-memory path grow with the volume ...
    assert in_memory > 4 * largest_f32
    # ... while streaming stays flat: 4x the voxels, same peak (within 30 % + 4 MiB noise)
    assert streamed[sizes[-1]] <= 1.3 * streamed[sizes[0]] + 4
    assert streamed[sizes[-1]] < in_memory / 3


@pytest.mark.parametrize("dim", ["2D", "2.5D", "3D"])
def test_preview_of_a_lazy_volume_reads_a_slab_only(dim):
    m = MODELS[dim]()
    image, _, _ = blobs((40, 40, 40))
    loaded = set()

    def note(block, block_info=None):
        loaded.add(block_info[0]["chunk-location"][0])
        return block

    lazy = image.copy(data=image.chunk({"z": 1}).data.map_blocks(note, dtype=image.dtype))
    for z in (0, 20, 39):
        loaded.clear()
        pv = nbseg.preview(m, lazy, z)
        assert pv.chunks is None and pv.dims == ("y", "x")
        assert (pv.values == nbseg.preview(m, image, z).values).all()
        need = {
            "2D": {z},
            "2.5D": {min(39, max(0, z + o)) for o in (-2, 0, 2)},
            "3D": set(range(min(max(0, z - 8), 24), min(max(0, z - 8), 24) + 16)),
        }[dim]
        assert need <= loaded <= set(range(min(need), max(need) + 1))
