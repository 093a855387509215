"""`nbseg.open_image` / `nbseg.save_labels` (nbseg.formats): every format round-trips on
small files written here, big ones open lazily, voxel sizes become coords, label images keep
their class names and colours, writes are atomic, and bad files are named."""

import json
import sys

import numpy as np
import pytest
import torch
import xarray as xr

import nbseg
from nbseg import InputError, open_image, save_labels
from nbseg.cli import main
from nbseg.formats import readers
from nbseg.io import read_array, write_array

from .helpers import blobs, ready_model

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _volume(shape=(5, 12, 10), dtype=np.uint16):
    return (np.arange(np.prod(shape)).reshape(shape) % 251).astype(dtype)


def _labels(shape=(5, 12, 10)):
    values = (np.arange(np.prod(shape)).reshape(shape) % 3).astype(np.int16)
    values[0, 0, :3] = -1  # unlabelled
    z, y, x = (np.arange(n) for n in shape)
    coords = {"z": z * 2.0 + 1, "y": y * 0.5 - 3, "x": x * 0.5 + 4}
    return xr.DataArray(values, dims=("z", "y", "x"), coords=coords, name="labels")


NAMES = ["background", "fibre", "pore"]
COLORS = ["#000000", "#ff0000", "#00ff00"]


def _is_lazy(da):
    import dask.array

    return isinstance(da.data, dask.array.Array)


# -- TIFF ----------------------------------------------------------------------------------
@pytest.fixture
def chunk_reads(monkeypatch):
    """The pixel chunks tifffile's zarr store hands out (metadata keys left out)."""
    import tifffile.zarr as tz

    keys = []
    real = tz.ZarrTiffStore.get

    async def spy(self, key, *args, **kwargs):
        if not key.startswith(("zarr.json", ".z")):
            keys.append(key)
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(tz.ZarrTiffStore, "get", spy)
    return keys


def test_imagej_tiff_stack_opens_lazily_with_its_voxel_size(tmp_path, chunk_reads):
    vol = _volume((40, 16, 12))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        vol,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
    )
    img = open_image(path)
    assert _is_lazy(img) and img.dims == ("z", "y", "x") and img.shape == vol.shape
    assert chunk_reads == []  # opening read no pixels
    np.testing.assert_array_equal(img[7].values, vol[7])
    assert chunk_reads == ["7.0.0"]  # one page for one slice
    np.testing.assert_allclose(img.coords["z"].values[:3], [0, 2, 4])
    np.testing.assert_allclose(img.coords["x"].values[:3], [0, 0.25, 0.5])
    assert img.coords["x"].attrs["units"] == "micrometer"
    assert img.attrs["voxel_size"] == [2.0, 0.25, 0.25]
    assert img.attrs["format"] == "imagej-tiff" and img.encoding["source"] == str(path)


def test_ome_tiff_physical_sizes_and_channels(tmp_path):
    vol = np.stack([_volume(), _volume() + 1])  # (c, z, y, x)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path,
        vol.transpose(1, 0, 2, 3),
        ome=True,
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeX": 0.5,
            "PhysicalSizeY": 0.5,
            "PhysicalSizeZ": 3.0,
            "Channel": {"Name": ["dapi", "gfp"]},
        },
    )
    chans = open_image(path)
    assert isinstance(chans, list) and len(chans) == 2
    for i, c in enumerate(chans):
        assert c.dims == ("z", "y", "x") and _is_lazy(c)
        np.testing.assert_array_equal(c.values, vol[i])
        assert c.attrs["voxel_size"] == [3.0, 0.5, 0.5] and c.attrs["format"] == "ome-tiff"
    assert chans[1].attrs["channel_name"] == "gfp"
    np.testing.assert_array_equal(open_image(path, channel="gfp").values, vol[1])
    np.testing.assert_array_equal(open_image(path, channel=0).values, vol[0])
    with pytest.raises(InputError, match=r"2 channels .*channel=5"):
        open_image(path, channel=5)
    with pytest.raises(InputError, match=r"no channel 'red'.*dapi"):
        open_image(path, channel="red")
    # read_array keeps the channels as a c dim (the several-inputs convention splits it)
    both = read_array(path)
    assert both.dims == ("c", "z", "y", "x")


def test_plain_multipage_tiff_has_no_invented_voxel_size(tmp_path):
    vol = _volume()
    tifffile.imwrite(tmp_path / "plain.tif", vol)
    img = open_image(tmp_path / "plain.tif")
    assert img.dims == ("z", "y", "x") and "voxel_size" not in img.attrs
    assert not img.coords
    np.testing.assert_array_equal(img.values, vol)


def test_big_sparse_tiff_opens_at_once(tmp_path):
    import time

    path = tmp_path / "big.tif"  # 2 GB of pages on disk as a sparse file (headers only)
    tifffile.imwrite(path, shape=(2000, 1024, 1024), dtype="uint8", metadata={"axes": "ZYX"})
    t0 = time.perf_counter()
    img = open_image(path)
    assert time.perf_counter() - t0 < 2
    assert img.shape == (2000, 1024, 1024) and _is_lazy(img)


# -- slices --------------------------------------------------------------------------------
def _write_slices(folder, vol, suffix):
    from PIL import Image

    folder.mkdir()
    for i, page in enumerate(vol):  # names that sort wrongly as text: s0, s5, s10, ...
        name = folder / f"s{i * 5}{suffix}"
        if suffix == ".png":
            Image.fromarray(page).save(name)
        else:
            tifffile.imwrite(name, page, imagej=True, resolution=(2, 2), metadata={"unit": "um"})


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_a_folder_of_slices_opens_lazily_in_natural_order(tmp_path, monkeypatch, suffix):
    pytest.importorskip("PIL")
    vol = _volume((12, 16, 10), np.uint8 if suffix == ".png" else np.uint16)
    folder = tmp_path / "scan"
    _write_slices(folder, vol, suffix)
    reads = []
    real = readers._read_slice
    monkeypatch.setattr(readers, "_read_slice", lambda *a: reads.append(a[0]) or real(*a))
    img = open_image(folder)
    assert _is_lazy(img) and img.shape == vol.shape and img.dtype == vol.dtype
    assert reads == []  # shape and dtype from the first file's header
    np.testing.assert_array_equal(img[2].values, vol[2])
    assert reads == [str(folder / f"s10{suffix}")]
    np.testing.assert_array_equal(img.values, vol)
    if suffix == ".tif":  # the slices' pixel size; no z spacing is invented
        np.testing.assert_allclose(img.coords["x"].values[:2], [0, 0.5])
        assert "z" not in img.coords
    # a glob, and pattern= in a folder holding two kinds
    np.testing.assert_array_equal(open_image(str(folder / f"*{suffix}")).values, vol)
    (folder / "notes.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=r"pattern="):
        open_image(folder)
    np.testing.assert_array_equal(open_image(folder, pattern=f"s*{suffix}").values, vol)


def test_a_thousand_slices_open_without_reading_them(tmp_path, monkeypatch):
    import time

    folder = tmp_path / "ct"
    folder.mkdir()
    page = np.zeros((64, 64), np.uint16)
    for i in range(1000):
        tifffile.imwrite(folder / f"slice_{i:04d}.tif", page)
    reads = []
    monkeypatch.setattr(readers, "_read_slice", lambda *a: reads.append(a) or page)
    t0 = time.perf_counter()
    img = open_image(folder)
    assert time.perf_counter() - t0 < 2
    assert img.shape == (1000, 64, 64) and reads == []


def test_slices_of_another_shape_are_named_when_read(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "a1.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(folder / "a2.tif", np.zeros((8, 9), np.uint8))
    img = open_image(folder)
    with pytest.raises(InputError, match=r"a2.tif' has shape \(8, 9\).*a1.tif"):
        img.values  # noqa: B018


def test_rgb_slices_are_three_channels(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    folder = tmp_path / "rgb"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (3, 8, 6, 3), dtype=np.uint8)
    for i, page in enumerate(rgb):
        Image.fromarray(page).save(folder / f"{i}.png")
    chans = open_image(folder)
    assert len(chans) == 3
    np.testing.assert_array_equal(chans[2].values, rgb[..., 2])


# -- OME-Zarr --------------------------------------------------------------------------------
def _ngff(path, version, levels, axes, scales, translations=None, extra=None):
    fmt = 2 if version == "0.4" else 3
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    datasets = []
    for k, arr in enumerate(levels):
        kw = {"dimension_names": [a["name"] for a in axes]} if fmt == 3 else {}
        g.create_array(str(k), data=arr, chunks=(1, *arr.shape[1:]), **kw)
        ts = [{"type": "scale", "scale": scales[k]}]
        if translations:
            ts.append({"type": "translation", "translation": translations[k]})
        datasets.append({"path": str(k), "coordinateTransformations": ts})
    ms = {"axes": axes, "datasets": datasets, "name": "cells"}
    block = {"multiscales": [ms], **(extra or {})}
    if version == "0.4":
        ms["version"] = "0.4"
        g.attrs.update(block)
    else:
        g.attrs.update({"ome": {"version": "0.5", **block}})
    return path


SPACE = [{"name": d, "type": "space", "unit": "micrometer"} for d in "zyx"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels_and_scale_to_coords(tmp_path, version):
    vol = _volume((4, 16, 12))
    half = vol[:, ::2, ::2]
    path = _ngff(
        tmp_path / "img.ome.zarr",
        version,
        [vol, half],
        SPACE,
        [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0]],
        [[10.0, 0.0, 0.0], [10.0, 0.25, 0.25]],
    )
    img = open_image(path)
    assert _is_lazy(img) and img.dims == ("z", "y", "x") and img.name == "cells"
    np.testing.assert_array_equal(img.values, vol)
    np.testing.assert_allclose(img.coords["z"].values, [10, 12, 14, 16])
    np.testing.assert_allclose(img.coords["x"].values[:2], [0, 0.5])
    assert img.coords["y"].attrs["units"] == "micrometer"
    assert img.attrs["ngff_version"] == version and img.attrs["levels"] == [[4, 16, 12], [4, 8, 6]]
    low = open_image(path, level=1)
    np.testing.assert_array_equal(low.values, half)
    np.testing.assert_allclose(low.coords["x"].values[:2], [0.25, 1.25])
    assert low.attrs["voxel_size"] == [2.0, 1.0, 1.0]
    with pytest.raises(InputError, match=r"2 resolution level.*level=2"):
        open_image(path, level=2)


def test_ome_zarr_channels_time_and_opening_reads_no_chunks(tmp_path):
    vol = np.stack([_volume(), _volume() + 7])[None]  # (t, c, z, y, x)
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, *SPACE]
    omero = {"omero": {"channels": [{"label": "dapi"}, {"label": "gfp"}]}}
    path = _ngff(tmp_path / "tc.ome.zarr", "0.5", [vol], axes, [[1, 1, 3.0, 1.0, 1.0]], None, omero)
    for chunk in (path / "0" / "c").rglob("*"):  # break every chunk: opening must not care
        if chunk.is_file():
            chunk.write_bytes(b"broken")
    chans = open_image(path)
    assert [c.attrs["channel_name"] for c in chans] == ["dapi", "gfp"]
    assert chans[0].dims == ("z", "y", "x")
    with pytest.raises(Exception):  # noqa: B017 - the codec's own error, when read
        chans[0].values  # noqa: B018


def test_ome_zarr_with_several_time_points_is_refused(tmp_path):
    vol = np.zeros((3, 4, 8, 8), np.uint8)
    axes = [{"name": "t", "type": "time"}, *SPACE]
    path = _ngff(tmp_path / "t.ome.zarr", "0.4", [vol], axes, [[1, 1, 1, 1]])
    with pytest.raises(InputError, match=r"t.ome.zarr' holds 3 time points"):
        open_image(path)


# -- plain zarr ----------------------------------------------------------------------------
def test_plain_zarr_arrays_groups_and_nbseg_stores(tmp_path):
    vol = _volume()
    zarr.create_array(str(tmp_path / "a.zarr"), data=vol)
    img = open_image(tmp_path / "a.zarr")
    assert _is_lazy(img) and img.dims == ("z", "y", "x")
    np.testing.assert_array_equal(img.values, vol)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("raw", data=vol)
    g.create_array("seg/cells", data=vol.astype(np.int16))
    with pytest.raises(InputError, match=r"several arrays: raw \(5, 12, 10\) uint16, seg/cells"):
        open_image(tmp_path / "g.zarr")
    np.testing.assert_array_equal(open_image(tmp_path / "g.zarr", dataset="seg/cells"), vol)
    with pytest.raises(InputError, match="no array 'nope'"):
        open_image(tmp_path / "g.zarr", dataset="nope")
    # nbseg's own xarray stores read as before: coords, attrs, name
    labels = _labels().assign_attrs(class_names=NAMES)
    write_array(labels, tmp_path / "l.zarr")
    back = open_image(tmp_path / "l.zarr")
    assert _is_lazy(back) and back.name == "labels" and back.attrs["class_names"] == NAMES
    np.testing.assert_array_equal(back.coords["x"], labels.coords["x"])


# -- HDF5, NIfTI, MRC, netCDF, npy ---------------------------------------------------------
def test_hdf5_dataset_selection_is_lazy_and_ambiguity_lists_them(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    vol = _volume()
    path = tmp_path / "beam.h5"
    with h5py.File(path, "w") as f:
        f["entry/raw"] = vol
        f["entry/raw"].attrs["element_size_um"] = [2.0, 0.5, 0.5]
        f["entry/mask"] = vol > 3
        f["entry/title"] = np.bytes_("scan")  # not an image: not listed
    with pytest.raises(
        InputError, match=r"beam.h5' holds several datasets: entry/mask .*entry/raw"
    ):
        open_image(path)
    reads = []
    real = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda s, k: reads.append(k) or real(s, k))
    img = open_image(path, dataset="entry/raw")
    assert _is_lazy(img) and reads == []
    np.testing.assert_array_equal(img.values, vol)
    assert reads and img.attrs["voxel_size"] == [2.0, 0.5, 0.5]
    np.testing.assert_allclose(img.coords["z"].values[:2], [0, 2])
    assert img.coords["z"].attrs["units"] == "micrometer"
    with pytest.raises(InputError, match=r"no dataset 'raw'.*entry/mask"):
        open_image(path, dataset="raw")
    assert read_array({"path": str(path), "variable": "entry/mask"}).dtype == bool


def test_nifti_is_oriented_lps_with_its_spacing(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, (6, 7, 5)).astype(np.int16)  # (i, j, k) on disk
    affine = np.array(  # RAS, axes permuted and flipped: i → -S, j → R, k → A
        [[0, 0.5, 0, -20.0], [0, 0, 0.75, 30.0], [-2.0, 0, 0, 50.0], [0, 0, 0, 1.0]]
    )
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    path = tmp_path / "head.nii.gz"
    nib.save(img, path)
    out = open_image(path)
    assert out.dims == ("z", "y", "x") and _is_lazy(out)
    assert out.attrs["voxel_size"] == [2.0, 0.75, 0.5] and out.attrs["orientation"] == "LPS"
    assert out.coords["x"].attrs["units"] == "millimeter"
    # every output voxel holds the value of the file voxel at its physical position
    inv = np.linalg.inv(affine)
    values = out.values
    for zi, yi, xi in rng.integers(0, 5, (20, 3)):
        x, y, z = (float(out.coords[d][i]) for d, i in zip("xyz", (xi, yi, zi)))
        i, j, k = np.rint(inv @ [-x, -y, z, 1.0])[:3].astype(int)  # LPS → RAS → voxel
        assert values[zi, yi, xi] == data[i, j, k]
    # z goes inferior → superior, y anterior → posterior, x right → left
    assert np.all(np.diff(out.coords["z"]) > 0) and np.all(np.diff(out.coords["x"]) > 0)


def test_mrc_voxel_size_in_angstrom(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    vol = _volume().astype(np.float32)
    path = tmp_path / "tomo.mrc"
    with mrcfile.new(path) as m:
        m.set_data(vol)
        m.voxel_size = (1.5, 1.5, 3.0)  # x, y, z
    img = open_image(path)
    assert _is_lazy(img) and img.dims == ("z", "y", "x")
    np.testing.assert_array_equal(img.values, vol)
    assert img.attrs["voxel_size"] == [3.0, 1.5, 1.5] and img.attrs["units"] == "angstrom"
    np.testing.assert_allclose(img.coords["z"].values[:2], [0, 3.0])


def test_netcdf_and_npy_as_before(tmp_path):
    labels = _labels().assign_attrs(class_names=NAMES)
    write_array(labels, tmp_path / "l.nc")
    back = open_image(tmp_path / "l.nc")
    assert back.attrs["class_names"] == NAMES and back.dtype == np.int16
    np.testing.assert_array_equal(back.values, labels.values)
    np.save(tmp_path / "v.npy", _volume())
    assert open_image(tmp_path / "v.npy").dims == ("z", "y", "x")


# -- save_labels -----------------------------------------------------------------------------
SUFFIXES = [".ome.zarr", ".tif", ".nii.gz", ".zarr", ".nc"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_labels_round_trips_with_classes_and_geometry(tmp_path, suffix):
    if suffix == ".nii.gz":
        pytest.importorskip("nibabel")
    labels = _labels()
    path = save_labels(labels, tmp_path / f"seg{suffix}", class_names=NAMES, colors=COLORS)
    assert path == tmp_path / f"seg{suffix}"
    back = open_image(path)
    assert back.dims == labels.dims and back.dtype == np.int16
    np.testing.assert_array_equal(back.values, labels.values)
    assert back.attrs["class_names"] == NAMES and back.attrs["class_colors"] == COLORS
    for d in "zyx":
        np.testing.assert_allclose(back.coords[d].values, labels.coords[d].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"seg{suffix}"]  # no temp left
    with pytest.raises(InputError, match=rf"seg{suffix}' already exists; pass overwrite=True"):
        save_labels(labels, path)
    save_labels(labels.where(labels != 2, 1).astype(np.int16), path, overwrite=True)
    assert int(open_image(path).max()) == 1


def test_ome_zarr_label_image_metadata_and_levels(tmp_path):
    labels = xr.DataArray(
        np.random.default_rng(0).integers(0, 3, (2, 128, 96)).astype(np.int16),
        dims=("z", "y", "x"),
        coords={"z": [0.0, 4.0], "y": np.arange(128) * 0.5, "x": np.arange(96) * 0.5},
    )
    labels.coords["x"].attrs["units"] = "um"
    path = save_labels(labels, tmp_path / "seg.ome.zarr", class_names=NAMES, colors=COLORS)
    attrs = json.loads((path / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert {a.get("unit") for a in ms["axes"]} == {"micrometer"}
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]  # x: 96 → 48 (24 < 32 stops)
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [4.0, 1.0, 1.0]
    label = attrs["image-label"]
    assert label["colors"][1] == {"label-value": 1, "rgba": [255, 0, 0, 255]}
    assert label["properties"][2] == {"label-value": 2, "class": "pore"}
    # level 1 is the most frequent label of each 2 x 2 block
    lvl1 = open_image(path, level=1).values
    blocks = labels.values.reshape(2, 64, 2, 48, 2).transpose(0, 1, 3, 2, 4).reshape(2, 64, 48, 4)
    counts = (blocks[..., None] == blocks[..., None, :]).sum(-1)
    expected = np.take_along_axis(blocks, counts.argmax(-1)[..., None], -1)[..., 0]
    np.testing.assert_array_equal(lvl1, expected)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_written_into_an_ome_zarr_image(tmp_path, version):
    vol = _volume((3, 16, 12))
    image = _ngff(tmp_path / "img.ome.zarr", version, [vol], SPACE, [[2.0, 0.5, 0.5]])
    seg = (vol % 2).astype(np.int16)  # numpy: the image's voxel size is used
    save_labels(seg, image / "labels" / "cells", class_names=["bg", "cell"])
    save_labels(seg, image / "labels" / "nuclei", class_names=["bg", "nucleus"])
    meta = image / "labels" / (".zattrs" if version == "0.4" else "zarr.json")
    listed = json.loads(meta.read_text())
    listed = listed if version == "0.4" else listed["attributes"]["ome"]
    assert listed["labels"] == ["cells", "nuclei"]
    back = open_image(image, dataset="labels/cells")
    assert back.attrs["class_names"] == ["bg", "cell"] and back.attrs["ngff_version"] == version
    np.testing.assert_array_equal(back.values, seg)
    assert back.attrs["voxel_size"] == [2.0, 0.5, 0.5]
    with pytest.raises(InputError, match=r"labels have shape .*full-resolution shape"):
        save_labels(seg[:, :8], image / "labels" / "bad")
    with pytest.raises(InputError, match=r"label image goes to .*labels/x"):
        save_labels(seg, image / "x")
    with pytest.raises(InputError, match="labels group of an OME-Zarr image"):
        open_image(image / "labels")


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    from nbseg import ngff

    labels = _labels()
    for suffix in (".tif", ".ome.zarr"):
        path = save_labels(labels, tmp_path / f"seg{suffix}", class_names=NAMES)

        def broken(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(tifffile, "imwrite", broken)
        monkeypatch.setattr(ngff, "finish_multiscale", broken)
        with pytest.raises(InputError, match=rf"seg{suffix}'.*No space left on device"):
            save_labels(labels + 1, path, overwrite=True, class_names=[*NAMES, "x"])
        monkeypatch.undo()
        np.testing.assert_array_equal(open_image(path).values, labels.values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.ome.zarr", "seg.tif"]


def test_imagej_tiff_keeps_the_voxel_size_for_fiji(tmp_path):
    labels = _labels().astype(np.int64)  # stored as int16 for ImageJ, read back as int64
    path = save_labels(labels, tmp_path / "seg.tif", class_names=NAMES)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.series[0].dtype == np.int16
        assert tif.imagej_metadata["spacing"] == 2.0
        assert tif.pages[0].tags["XResolution"].value == (2, 1)  # 2 pixels per unit
    assert open_image(path).dtype == np.int64


def test_save_labels_refuses_what_is_not_labels(tmp_path):
    with pytest.raises(InputError, match="integer class ids, got dtype float32"):
        save_labels(np.zeros((4, 4), np.float32), tmp_path / "a.tif")
    with pytest.raises(InputError, match=r"hold class 2 but only 2 class names"):
        save_labels(np.full((4, 4), 2, np.int16), tmp_path / "a.tif", class_names=["a", "b"])
    with pytest.raises(InputError, match=r"2 class names but 1 colours"):
        save_labels(np.zeros((4, 4), np.int16), tmp_path / "a.tif", class_names=["a", "b"],
                    colors=["#000000"])  # fmt: skip
    with pytest.raises(InputError, match=r"colour 'red' is not '#rrggbb'"):
        save_labels(np.zeros((4, 4), np.int16), tmp_path / "a.tif", colors=["red"])
    with pytest.raises(InputError, match=r"unsupported file type \.png"):
        save_labels(np.zeros((4, 4), np.int16), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


# -- bad files -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("x.xyz", b"?", r"x.xyz': unsupported file type .xyz; nbseg reads OME-Zarr.*NIfTI"),
        ("broken.tif", b"not a tiff", r"Cannot read '.*broken.tif' as TIFF: .*nbseg reads"),
        ("broken.h5", b"not hdf5", r"Cannot read '.*broken.h5' as HDF5"),
        ("broken.nii.gz", b"not nifti", r"Cannot read '.*broken.nii.gz' as NIfTI"),
        ("broken.mrc", b"not mrc" * 200, r"Cannot read '.*broken.mrc' as MRC"),
        ("broken.png", b"not png", r"Cannot read '.*broken.png' as a PNG/JPEG image"),
    ],
)
def test_unknown_or_broken_files_are_named(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=pattern):
        open_image(path)
    with pytest.raises(InputError, match=pattern):
        read_array(path)


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "a.h5").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(InputError, match=r"needs the optional package h5py.*nbseg\[formats\]"):
        open_image(tmp_path / "a.h5")


def test_bad_arguments_are_named(tmp_path):
    np.save(tmp_path / "v.npy", _volume())
    with pytest.raises(InputError, match="level=-1"):
        open_image(tmp_path / "v.npy", level=-1)
    with pytest.raises(InputError, match="level=1 applies to OME-Zarr"):
        open_image(tmp_path / "v.npy", level=1)
    with pytest.raises(InputError, match="dataset= picks an array"):
        open_image(tmp_path / "v.npy", dataset="x")
    with pytest.raises(InputError, match="pattern= applies to a folder"):
        open_image(tmp_path / "v.npy", pattern="*.tif")
    with pytest.raises(InputError, match="one channel; drop channel=1"):
        open_image(tmp_path / "v.npy", channel=1)
    with pytest.raises(InputError, match=r"No files match"):
        open_image(str(tmp_path / "none" / "*.tif"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty': the folder holds no image slices"):
        open_image(tmp_path / "empty")


# -- segmenting into OME-Zarr ----------------------------------------------------------------
def test_segment_streams_into_an_ome_zarr_label_image(tmp_path):
    model = ready_model("2D", classes=3)
    image, _, _ = blobs((3, 70, 66))
    stack = tmp_path / "stack.tif"
    write_array(image, stack)
    lazy = open_image(stack)
    assert _is_lazy(lazy)
    expected = nbseg.segment(model, image)
    out = nbseg.segment(model, lazy, out=tmp_path / "seg.ome.zarr")
    assert _is_lazy(out)
    np.testing.assert_array_equal(out.values, expected.values)
    attrs = json.loads((tmp_path / "seg.ome.zarr" / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
    assert [p["class"] for p in attrs["image-label"]["properties"]] == list(model.class_names)
    for d in ms["datasets"]:  # every level listed is there
        assert (tmp_path / "seg.ome.zarr" / d["path"] / ".zarray").is_file()
    back = open_image(tmp_path / "seg.ome.zarr")
    np.testing.assert_array_equal(back.values, expected.values)
    assert back.attrs["class_names"] == list(model.class_names)
    assert back.attrs["class_colors"] == list(model.class_colors)
    np.testing.assert_allclose(back.coords["y"].values, image.coords["y"].values)
    with pytest.raises(InputError, match="already holds a zarr store"):
        nbseg.segment(model, lazy, out=tmp_path / "seg.ome.zarr")
    with pytest.raises(InputError, match="OME-Zarr output holds a label image"):
        nbseg.segment(model, lazy, out=tmp_path / "p.ome.zarr", probabilities=True)


def test_segment_into_the_labels_of_an_ome_zarr_image(tmp_path):
    model = ready_model("2D", classes=2)
    image, _, _ = blobs((2, 40, 36))
    vol = image.values
    path = _ngff(tmp_path / "img.ome.zarr", "0.5", [vol], SPACE, [[2.0, 0.5, 0.5]])
    img = open_image(path)
    expected = nbseg.segment(model, image)
    nbseg.segment(model, img, out=path / "labels" / "blobs")
    back = open_image(path, dataset="labels/blobs")
    np.testing.assert_array_equal(back.values, expected.values)
    listed = json.loads((path / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    assert listed["labels"] == ["blobs"]


def test_cli_segments_a_tiff_stack_into_ome_zarr(tmp_path, capsys):
    model = ready_model("2D")
    model_path = model.save(tmp_path / "m.nbseg")
    image, _, _ = blobs((2, 32, 32))
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, page in enumerate(image.values):
        tifffile.imwrite(folder / f"z{i}.tif", page)
    out = tmp_path / "seg.ome.zarr"
    assert main(["segment", str(model_path), str(folder), str(out)]) == 0
    back = open_image(out)
    np.testing.assert_array_equal(back.values, nbseg.segment(model, image.values).values)
    nii = tmp_path / "seg.nii.gz"
    pytest.importorskip("nibabel")
    assert main(["segment", str(model_path), str(folder), str(nii)]) == 0
    np.testing.assert_array_equal(open_image(nii).values, back.values)
    assert main(["segment", str(model_path), str(folder), str(tmp_path / "s.png")]) == 1
    assert ".ome.zarr" in capsys.readouterr().err


def test_a_training_config_reads_a_slice_folder_and_an_ome_zarr(tmp_path):
    import yaml

    image, labels, _ = blobs((4, 32, 32), labelled=(1, 2))
    folder = tmp_path / "scan"
    folder.mkdir()
    for i, page in enumerate(image.values):
        tifffile.imwrite(folder / f"z{i}.tif", page)
    save_labels(labels, tmp_path / "labels.ome.zarr", class_names=["background", "blob"])
    config = {
        "model": {"architecture": "unet", "class_count": 2, "parameters": {"filters": 4}},
        "training_sets": [{"input": "scan", "output": "labels.ome.zarr", "name": "scan"}],
        "validation": 0,
        "params": {"patch_size": 16, "batch_size": 2, "epochs": 1},
        "output": "m.nbseg",
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    (tset,) = nbseg.load_config(tmp_path / "train.yaml").build_training_sets()
    np.testing.assert_array_equal(np.asarray(tset.output.values), labels.values)
    np.testing.assert_array_equal(np.asarray(tset.input_list[0].values), image.values)
