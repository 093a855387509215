"""Real files in and out from the widgets (issue 19): *Open data* in the Inputs and Label
tabs, and *Segment with AI* writing labels in every save_labels format."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import nbseg
import nbseg.ui
from nbseg.ui.open_data import default_name

from .helpers import blobs


def _tif(path, shape=(6, 32, 40)):
    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"},
    )
    return data


def test_open_data_in_the_inputs_tab_adds_a_lazy_image_with_its_voxel_size(tmp_path):
    data = _tif(tmp_path / "scan.tif")
    ws = nbseg.ui.Workspace()
    panel = nbseg.ui.InputsPanel(ws)
    od = panel.open_data
    assert od.layout.display == "none"
    panel.open_toggle.value = True
    assert od.layout.display is None
    od.path.value = str(tmp_path / "scan.tif")
    od.open_button.click()
    assert "scan" in ws.images, panel.message.text
    image = ws.images["scan"]
    assert image.chunks is not None  # lazy
    np.testing.assert_array_equal(image.values, data)
    assert float(image.z[1] - image.z[0]) == pytest.approx(2.0)
    assert float(image.x[1] - image.x[0]) == pytest.approx(0.25)
    text = od.info.value
    assert "z 6 × y 32 × x 40" in text and "uint16" in text and "lazy" in text and "2" in text
    assert "Opened" in panel.message.text


def test_open_data_as_labels_and_mask_and_bad_input_is_named(tmp_path):
    image, labels, _ = blobs((4, 32, 32), labelled=(1,))
    nbseg.save_labels(labels, tmp_path / "painted.ome.zarr")
    ws = nbseg.ui.Workspace(images={"img": image})
    editor = nbseg.ui.LabelEditor(workspace=ws)
    od = editor.open_data
    od.path.value = str(tmp_path / "painted.ome.zarr")
    od.kind.value = "labels"
    od.name.value = "painted"
    od.open_button.click()
    assert "painted" in ws.labels, editor.message.text
    np.testing.assert_array_equal(ws.labels["painted"].values, labels.values)
    assert ws.labels["painted"].attrs["class_names"] == labels.attrs["class_names"]
    od.path.value = str(tmp_path / "missing.tif")
    od.open_button.click()
    assert "missing.tif" in editor.message.text
    np.save(tmp_path / "float.npy", np.zeros((4, 32, 32), np.float32))
    od.name.value = ""  # named after the file
    od.path.value = str(tmp_path / "float.npy")
    od.open_button.click()
    assert "not class ids" in editor.message.text
    od.kind.value = "masks"
    od.open_button.click()
    assert "float" in ws.masks and ws.masks["float"].dtype == bool
    od.path.value = ""
    od.open_button.click()
    assert "Type the path" in editor.message.text


def test_default_names():
    assert default_name("scan/stack.ome.zarr") == "stack"
    assert default_name("slices/*.png") == "slices"
    assert default_name("/data/vol.nii.gz") == "vol"


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".ome.zarr", ".nii.gz", ".tif"])
def test_segment_with_ai_writes_every_label_format(tmp_path, suffix):
    image, labels, _ = blobs((4, 32, 32), labelled=(1,))
    model = nbseg.generate_model(
        nbseg.ModelSpec(class_count=2, parameters={"filters": 8, "depth": 2}), seed=0
    )
    params = nbseg.TrainingParams(patch_size=16, batch_size=4, epochs=1, precision="32")
    nbseg.train(model, nbseg.TrainingSet(image, labels), params, 0.0, feedback=False)
    ws = nbseg.ui.Workspace(images={"img": image}, model=model)
    panel = nbseg.ui.SegmentPanel(ws)
    panel.write_check.value = True
    panel.write_path.value = str(tmp_path / f"out{suffix}")
    panel.segment_button.click()
    panel.wait(60)
    assert panel.status == "done", panel.message.text
    back = nbseg.open_image(tmp_path / f"out{suffix}")
    np.testing.assert_array_equal(np.asarray(back.values), panel.result.values)
    assert back.attrs["class_names"] == model.class_names


def test_open_data_refuses_a_name_already_in_the_workspace(tmp_path):
    _tif(tmp_path / "scan.tif")
    image, _, _ = blobs((4, 32, 32), labelled=())
    ws = nbseg.ui.Workspace(images={"scan": image})
    panel = nbseg.ui.InputsPanel(ws)
    panel.open_data.path.value = str(tmp_path / "scan.tif")
    panel.open_data.open_button.click()
    assert "already has image 'scan'" in panel.message.text and ws.images["scan"] is image
    panel.open_data.name.value = "scan2"
    panel.open_data.open_button.click()
    assert "scan2" in ws.images
