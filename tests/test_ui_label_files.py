"""Label tab: painted labels are saved and loaded (TIFF, zarr, netCDF) with class names and
colours (and OME-Zarr, NIfTI); saving is atomic and asks before replacing; loading checks the geometry; a failed
save or load never loses labels (issue 16, defect 5)."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nbseg.io import read_array, write_array
from nbseg.ui.labelling import LabelEditor
from nbseg.ui.state import Workspace


def _image(shape=(4, 32, 40), seed=0):
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.normal(100, 20, shape).astype(np.float32),
        dims=("z", "y", "x"),
        coords={"z": np.arange(shape[0]) * 2.0, "y": np.arange(shape[1]) * 0.5},
        name="img",
    )


def _painted(image=None, workspace=None):
    ed = LabelEditor(image if image is not None else _image(), workspace=workspace)
    ed.paint(1, [(5, 5), (5, 20)], cls=1, radius=2)
    ed.paint(2, [(20, 30)], cls=0, radius=3)
    ed.rename_class(1, "fibre")
    ed.recolor_class(1, "#00ff00")
    ed.new_class("pore", "#0000ff")
    ed.paint(0, [(10, 10)], cls=2, radius=1)
    return ed


@pytest.mark.parametrize("suffix", [".zarr", ".tif", ".nc", ".ome.zarr", ".nii.gz"])
def test_save_and_load_buttons_round_trip_labels_with_classes(tmp_path, suffix):
    if suffix == ".nii.gz":
        pytest.importorskip("nibabel")
    ed = _painted()
    path = str(tmp_path / f"labels{suffix}")
    ed.labels_path.value = path
    ed.save_labels_button.click()
    assert "Saved labels 'labels' (3 classes" in ed.message.text, ed.message.text
    assert not ed.unsaved and Path(path).exists()

    other = LabelEditor(_image())
    other.labels_path.value = path
    other.load_labels_button.click()
    assert other.message.text.startswith(f"Loaded labels from {path!r}: 3 classes"), (
        other.message.text
    )
    assert (other.labels.values == ed.labels.values).all()
    assert other.class_names == ["background", "fibre", "pore"]
    assert other.class_colors[1:] == ["#00ff00", "#0000ff"]
    assert other.labels.dims == ("z", "y", "x")
    assert other.labels.z.values.tolist() == [0.0, 2.0, 4.0, 6.0]
    assert [o[0] for o in other.class_select.options] == ["0: background", "1: fibre", "2: pore"]


def test_save_refuses_an_existing_file_unless_overwrite_is_ticked(tmp_path):
    ed = _painted()
    path = tmp_path / "labels.tif"
    ed.save_labels(path)
    first = read_array(path).values.copy()
    ed.paint(0, [(15, 15)], cls=1, radius=2)
    ed.save_labels_button.click()
    assert "already exists: tick 'Overwrite'" in ed.message.text
    assert "Nothing was written" in ed.message.text
    assert (read_array(path).values == first).all() and ed.unsaved
    ed.overwrite_check.value = True
    ed.save_labels_button.click()
    assert ed.message.text.startswith("Saved labels"), ed.message.text
    assert (read_array(path).values == ed.labels.values).all()


def test_a_failed_save_leaves_the_old_file_and_the_painted_labels(tmp_path, monkeypatch):
    ed = _painted()
    path = tmp_path / "labels.zarr"
    ed.save_labels(path)
    before = read_array(path).values.copy()
    ed.paint(0, [(15, 15)], cls=1, radius=2)
    painted = ed.labels.values.copy()

    def broken(self, store, *a, **k):
        Path(store).mkdir(parents=True, exist_ok=True)
        (Path(store) / "half-written").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    ed.overwrite_check.value = True
    ed.save_labels_button.click()
    assert "No space left on device" in ed.message.text, ed.message.text
    assert "Traceback" not in ed.message.text
    monkeypatch.undo()
    assert (read_array(path).values == before).all()
    assert (ed.labels.values == painted).all() and ed.unsaved
    assert not [p for p in tmp_path.iterdir() if p.name != "labels.zarr"]


def test_load_checks_the_geometry_and_keeps_the_current_labels(tmp_path):
    small = _painted(_image((3, 32, 40)))
    small.save_labels(tmp_path / "small.zarr")
    ed = _painted()
    painted = ed.labels.values.copy()
    ed.labels_path.value = str(tmp_path / "small.zarr")
    ed.load_labels_button.click()
    text = ed.message.text
    assert "have shape (3, 32, 40) but image 'img' has (4, 32, 40)" in text, text
    assert "load labels painted on this image" in text
    assert (ed.labels.values == painted).all() and ed.class_names[1] == "fibre"

    write_array(_image(), tmp_path / "image.nc")  # an image, not labels
    ed.labels_path.value = str(tmp_path / "image.nc")
    ed.load_labels_button.click()
    assert "dtype float32: labels are integer class ids" in ed.message.text
    ed.labels_path.value = str(tmp_path / "missing.zarr")
    ed.load_labels_button.click()
    assert "missing.zarr" in ed.message.text and "Traceback" not in ed.message.text
    ed.labels_path.value = "  "
    ed.load_labels_button.click()
    assert "Type the path to read the labels from" in ed.message.text
    assert (ed.labels.values == painted).all()


def test_loading_over_unsaved_labels_keeps_them_in_the_workspace(tmp_path):
    ws = Workspace(images={"img": _image()})
    saved = _painted(workspace=Workspace(images={"img": _image()}))
    saved.save_labels(tmp_path / "saved.nc")
    ed = LabelEditor(workspace=ws)
    ed.paint(2, [(8, 8), (8, 30)], cls=1, radius=2)
    mine = ed.labels.values.copy()
    ed.load_labels(tmp_path / "saved.nc")
    assert "kept in the workspace as 'labels (before load)'" in ed.message.text
    assert (ws.labels["labels (before load)"].values == mine).all()
    assert ws.labels["labels"] is ed.labels and (ed.labels.values == saved.labels.values).all()
    assert ed.undo_count == 0 and not ed.unsaved
    # saved labels replaced by others: nothing to keep
    ed.load_labels(tmp_path / "saved.nc")
    assert "kept in the workspace" not in ed.message.text


def test_saving_over_the_image_file_is_refused(tmp_path):
    write_array(_image(), tmp_path / "img.tif")
    image = read_array(tmp_path / "img.tif")
    ed = LabelEditor(image)
    ed.paint(1, [(4, 4)], cls=1, radius=2)
    ed.overwrite_check.value = True
    ed.labels_path.value = str(tmp_path / "img.tif")
    ed.save_labels_button.click()
    assert "would destroy the input" in ed.message.text, ed.message.text
    assert read_array(tmp_path / "img.tif").dtype == np.float32
