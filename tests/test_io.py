"""`nbseg.io`: reading and writing arrays (round trips, overwrite and input protection)."""

import numpy as np
import pytest
import xarray as xr

import nbseg
from nbseg.cli import main
from nbseg.config import load_array
from nbseg.io import ARRAY_SUFFIXES, check_output_path, read_array, write_array

from .helpers import blobs, ready_model

SUFFIXES = [".npy", ".tif", ".tiff", ".zarr", ".nc", ".ome.zarr", ".nii", ".nii.gz"]
DTYPES = ["int16", "uint8", "float32", "bool", "int64"]


def _labels(dtype="int16", dims=("z", "y", "x")):
    shape = (3, 5, 4)[-len(dims) :]
    values = (np.arange(np.prod(shape)).reshape(shape) % 3).astype(dtype)
    coords = {d: np.arange(n) * 0.5 + 1 for d, n in zip(dims, shape)}
    attrs = {
        "class_names": ["background", "fibre", "pore"],
        "class_colors": ["#000000", "#ff0000", "#00ff00"],
        "model": "m",
        "spacing": (0.5, 0.5, 2.0),
        "voxel_size": np.float32(0.5),
    }
    return xr.DataArray(values, dims=dims, coords=coords, attrs=attrs, name="labels")


def test_load_array_is_read_array_and_suffixes_are_shared():
    assert load_array is read_array
    assert set(SUFFIXES) == set(ARRAY_SUFFIXES)
    assert nbseg.config.is_input_path is nbseg.io.is_input_path


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip(tmp_path, suffix, dtype):
    da = _labels(dtype)
    path = write_array(da, tmp_path / f"labels{suffix}")
    assert path == tmp_path / f"labels{suffix}"
    back = read_array(path).load()
    assert back.dims == da.dims and back.dtype == da.dtype
    np.testing.assert_array_equal(back.values, da.values)
    assert back.encoding["source"] == str(path)
    if suffix == ".npy":  # values only
        return
    assert back.name == "labels"
    for d in da.dims:
        np.testing.assert_array_equal(back.coords[d].values, da.coords[d].values)
    assert back.attrs["class_names"] == ["background", "fibre", "pore"]
    assert back.attrs["class_colors"] == ["#000000", "#ff0000", "#00ff00"]
    assert back.attrs["model"] == "m"
    assert list(back.attrs["spacing"]) == [0.5, 0.5, 2.0]
    assert float(back.attrs["voxel_size"]) == 0.5
    # nothing left beside the target
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"labels{suffix}"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_2d_numpy_and_other_dims(tmp_path, suffix):
    arr = np.arange(20, dtype=np.float32).reshape(4, 5)
    back = read_array(write_array(arr, tmp_path / f"a{suffix}"))
    assert back.dims == ("y", "x")
    np.testing.assert_array_equal(back.values, arr)
    if suffix not in (".npy", ".nii", ".nii.gz"):  # NIfTI: spatial dims only
        probs = xr.DataArray(np.zeros((2, 3, 4), np.float32), dims=("class", "y", "x"))
        probs = probs.assign_coords({"class": ["a", "b"]})
        back = read_array(write_array(probs, tmp_path / f"p{suffix}", name="probabilities"))
        assert back.dims == ("class", "y", "x") and back.name == "probabilities"
        assert list(back.coords["class"].values) == ["a", "b"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_overwrite_is_refused_unless_asked(tmp_path, suffix):
    path = tmp_path / f"labels{suffix}"
    first = _labels()
    write_array(first, path)
    with pytest.raises(nbseg.InputError, match="pass overwrite=True") as info:
        write_array(first + 1, path)
    assert str(path) in str(info.value)
    np.testing.assert_array_equal(read_array(path).values, first.values)  # untouched
    write_array(first + 1, path, overwrite=True)
    np.testing.assert_array_equal(read_array(path).values, first.values + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp left


def test_overwrite_never_replaces_other_kinds_of_data(tmp_path):
    folder = tmp_path / "data.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(nbseg.InputError, match="not a zarr store"):
        write_array(_labels(), folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"
    (tmp_path / "x.npy").mkdir()
    with pytest.raises(nbseg.InputError, match="is a folder"):
        write_array(_labels(), tmp_path / "x.npy", overwrite=True)


def test_unsupported_suffix_and_unwritable_path(tmp_path):
    with pytest.raises(nbseg.InputError, match=r"\.png.*\.zarr"):
        write_array(_labels(), tmp_path / "labels.png")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    target = blocker / "labels.npy"  # a folder that is a file
    with pytest.raises(nbseg.InputError, match="is a file, not a folder") as info:
        write_array(_labels(), target)
    assert repr(str(target)) in str(info.value)
    # the OS refuses the name (as the temp file beside it): named as given, with the reason
    target = tmp_path / ("x" * 250 + ".tif")
    with pytest.raises(nbseg.InputError) as info:
        write_array(_labels(), target)
    msg = str(info.value)
    assert repr(str(target)) in msg and "File name too long" in msg and ".tmp" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_failed_zarr_write_keeps_the_old_store(tmp_path, monkeypatch):
    path = tmp_path / "labels.zarr"
    write_array(_labels(), path)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(nbseg.InputError, match="No space left on device"):
        write_array(_labels() + 1, path, overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_array(path).values, _labels().values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_output_inside_or_containing_an_input_is_refused(tmp_path):
    store = tmp_path / "data.zarr"
    write_array(_labels(), store)
    for out, how in [
        (store, "is"),
        (store / "labels" / "x.npy", "lies inside"),
        (tmp_path, "contains"),
    ]:
        with pytest.raises(nbseg.InputError, match=f"{how} the input"):
            check_output_path(out, [store])
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    with pytest.raises(nbseg.InputError, match="is the input"):
        check_output_path(link, [{"path": store, "variable": "labels"}])
    lazy = xr.open_zarr(store)["labels"]  # found through the dask graph
    with pytest.raises(nbseg.InputError, match="is the input"):
        check_output_path(store, [lazy])
    with pytest.raises(nbseg.InputError, match="is the input"):
        check_output_path(store, [read_array(store)])
    assert check_output_path(tmp_path / "other.zarr", [store, lazy]) == tmp_path / "other.zarr"


def test_segment_out_on_its_own_input_store_is_refused(tmp_path):
    m = ready_model("2D")
    image, _, _ = blobs((2, 32, 32))
    store = tmp_path / "image.zarr"
    write_array(image, store, name="image")
    for lazy in (xr.open_zarr(store)["image"], read_array(store)):
        with pytest.raises(nbseg.InputError, match="is the input"):
            nbseg.segment(m, lazy, out=store, overwrite=True)
        np.testing.assert_array_equal(read_array(store).values, image.values)  # still there
    mask_store = tmp_path / "mask.zarr"
    write_array(xr.ones_like(image, dtype=bool), mask_store, name="mask")
    with pytest.raises(nbseg.InputError, match="is the input"):
        nbseg.segment(m, image, read_array(mask_store), out=mask_store, overwrite=True)
    assert read_array(mask_store).values.all()


def test_cli_segment_refuses_an_existing_output_without_overwrite(tmp_path, capsys):
    model = ready_model("2D")
    model_path = model.save(tmp_path / "m.nbseg")
    image, _, _ = blobs((2, 32, 32))
    src = tmp_path / "image.npy"
    np.save(src, image.values)
    out = tmp_path / "seg.npy"
    out.write_bytes(b"old")
    assert main(["segment", str(model_path), str(src), str(out)]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(out) in err and "Traceback" not in err
    assert out.read_bytes() == b"old"
    assert main(["segment", str(model_path), str(src), str(out), "--overwrite"]) == 0
    np.testing.assert_array_equal(np.load(out), nbseg.segment(model, image).values)
    # the output may not be the input
    assert main(["segment", str(model_path), str(src), str(src), "--overwrite"]) == 1
    assert "is the input" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(src), image.values)
