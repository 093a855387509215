"""PreviewPanel and SegmentPanel: preview frames, background segmentation, progress, errors."""

import numpy as np
import pytest
import xarray as xr

import nbseg
from nbseg.ui.imageview import VIEWER_PX
from nbseg.ui.preview_panel import PreviewPanel
from nbseg.ui.segment_panel import SegmentPanel
from nbseg.ui.state import Workspace

from .helpers import blobs


def _model(inputs=1, trained=True, classes=2):
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=classes,
        input_dimension="2D",
        input_count=inputs,
        parameters={"filters": 4, "depth": 2},
    )
    m = nbseg.generate_model(spec)
    if trained:  # a fixed normalisation is all segment needs from training
        m.normalisation = nbseg.Normalisation(low=[400.0] * inputs, high=[700.0] * inputs)
    m.params = nbseg.TrainingParams(patch_size=32)
    return m


@pytest.fixture(scope="module")
def data():
    image, labels, _ = blobs((4, 40, 48))
    return image, labels


def test_preview_shows_a_frame_with_the_prediction(data):
    image, _ = data
    ws = Workspace(images={"vol": image}, model=_model())
    panel = PreviewPanel(ws)
    assert panel.inputs.selects[0].value == "vol" and panel.slice_slider.max == 3
    before = panel.view.last_frame.copy()
    panel.slice_slider.value = 2
    panel.preview_button.click()
    assert panel.message.text.startswith("Preview of slice 2"), panel.message.text
    pred = panel.prediction
    assert pred.dims == ("y", "x") and pred.shape == (40, 48)
    np.testing.assert_array_equal(pred.values, nbseg.preview(ws.model, image, 2).values)
    frame = panel.view.last_frame
    assert frame.shape == (VIEWER_PX, VIEWER_PX, 3) and not np.array_equal(frame, before)
    # the overlay is the model's colours over the grey slice
    assert (panel.view._labels == pred.values).all()
    assert panel.view._colors == ws.model.class_colors
    panel.opacity.value = 0.0
    assert panel.view.opacity == 0.0


def test_preview_messages_for_no_model_untrained_and_wrong_inputs(data):
    image, _ = data
    ws = Workspace(images={"vol": image})
    panel = PreviewPanel(ws)
    assert panel.preview_button.disabled
    panel.preview_button.disabled = False
    panel.preview_button.click()
    assert "No model" in panel.message.text
    ws.set_model(_model(trained=False))
    panel.preview_button.click()
    assert "untrained" in panel.message.text and panel.prediction is None
    # a two-input model needs two images of one geometry
    ws.set_model(_model(inputs=2))
    assert len(panel.inputs.selects) == 2
    ws.add_image("small", image.isel(y=slice(0, 20)))
    panel.inputs.selects[0].value = "vol"
    panel.inputs.selects[1].value = "small"
    panel.preview_button.click()
    assert "shape" in panel.message.text and "'small'" in panel.message.text
    panel.inputs.selects[1].value = "vol"
    panel.preview_button.click()
    assert panel.message.text.startswith("Preview of slice"), panel.message.text


def test_segment_runs_in_background_with_progress_to_max(data, tmp_path):
    image, _ = data
    ws = Workspace(images={"vol": image}, model=_model())
    events = []
    ws.observe(lambda e, v: events.append((e, v)))
    panel = SegmentPanel(ws)
    seen = []
    panel.progress.observe(lambda ch: seen.append(ch["new"]), names="value")
    panel.write_check.value = True
    panel.write_path.value = str(tmp_path / "out.zarr")
    panel.segment_button.click()
    result = panel.wait(60)
    assert panel.status == "done", panel.message.text
    assert result is panel.result and result.dims == image.dims and result.shape == image.shape
    for d in image.dims:
        np.testing.assert_array_equal(result[d].values, image[d].values)
    assert result.dtype == np.int16 and set(np.unique(result.values)) <= {0, 1}
    np.testing.assert_array_equal(result.values, nbseg.segment(ws.model, image).values)
    assert panel.progress.value == panel.progress.max and panel.progress.max > 1
    assert seen and seen[-1] == panel.progress.max
    assert ws.labels["vol_segmented"].shape == image.shape
    assert ("labels", "vol_segmented") in events
    written = xr.open_zarr(tmp_path / "out.zarr")["vol_segmented"].values
    np.testing.assert_array_equal(written, result.values)
    assert not panel.segment_button.disabled and panel.cancel_button.disabled
    # the result is shown over the slice
    panel.slice_slider.value = 1
    assert (panel.view._labels == result.values[1]).all()
    # the written path now exists: a second run refuses to overwrite it
    panel.segment_button.click()
    assert "already exists" in panel.message.text and panel.status == "done"


def test_tta_checkbox_reaches_preview_and_segment(data):
    import torch

    image, _ = data
    model = _model(classes=3)
    torch.manual_seed(1)
    with torch.no_grad():  # make the untrained network orientation-dependent
        for p in model.network.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    ws = Workspace(images={"vol": image}, model=model)
    panel = SegmentPanel(ws)
    panel.tta_check.value = True
    want = nbseg.segment(model, image, tta=True).values
    assert (want != nbseg.segment(model, image).values).any()
    np.testing.assert_array_equal(panel.preview_slice(2).values, want[2])
    panel.segment_button.click()
    panel.wait(60)
    assert panel.status == "done", panel.message.text
    np.testing.assert_array_equal(panel.result.values, want)


def test_segment_writes_tif_and_uses_the_mask(data, tmp_path):
    import tifffile

    image, _ = data
    ws = Workspace(images={"vol": image}, model=_model())
    mask = xr.zeros_like(image, dtype=bool)
    mask[:, :20, :] = True
    ws.add_mask("top", mask)
    panel = SegmentPanel(ws)
    assert "top" in [v for _, v in panel.mask_select.options]
    panel.mask_select.value = "top"
    panel.write_check.value = True
    panel.write_path.value = str(tmp_path / "seg.tif")
    panel.start()
    panel.wait(60)
    assert panel.status == "done", panel.message.text
    assert (panel.result.values[:, 20:] == -1).all() and (panel.result.values[:, :20] >= 0).all()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "seg.tif"), panel.result.values)


def test_cancel_stops_the_segmentation(data):
    image, _ = data
    ws = Workspace(images={"vol": image}, model=_model())
    panel = SegmentPanel(ws)
    calls = []

    def cancel_on_first_batch(*args):
        calls.append(args)
        panel.cancel()

    original = panel._progress
    panel._progress = lambda *a: (cancel_on_first_batch(*a), original(*a))
    panel.start()
    panel.wait(60)
    assert panel.status == "cancelled" and panel.result is None
    assert "cancelled" in panel.message.text and len(calls) == 1
    assert "vol_segmented" not in ws.labels and not panel.segment_button.disabled


def test_segment_errors_no_model_untrained_bad_path_and_model_file(data, tmp_path):
    image, _ = data
    ws = Workspace(images={"vol": image})
    panel = SegmentPanel(ws)
    panel.segment_button.click()
    assert "No model" in panel.message.text and panel.status == "idle"
    panel.preview_button.click()
    assert "No model" in panel.message.text
    ws.set_model(_model(trained=False))
    panel.segment_button.click()
    assert "untrained" in panel.message.text and panel.status == "idle"
    # a trained model from a file, chosen for this panel only
    path = _model().save(tmp_path / "m.nbseg")
    panel.model_path.value = str(tmp_path / "missing.nbseg")
    panel.load_button.click()
    assert "does not exist" in panel.message.text
    panel.model_path.value = str(path)
    panel.load_button.click()
    assert panel.model_select.value == str(path) and panel.model.trained
    assert ws.model is not panel.model and not ws.model.trained
    panel.write_check.value = True
    panel.write_path.value = str(tmp_path / "out.png")
    panel.segment_button.click()
    assert ".ome.zarr" in panel.message.text and panel.status == "idle"
    panel.write_path.value = str(tmp_path / "nope" / "out.zarr")
    panel.segment_button.click()
    assert "does not exist" in panel.message.text and panel.status == "idle"
    panel.write_check.value = False
    pred = panel.preview_slice(3)
    assert pred.shape == (40, 48) and panel.view._labels is not None
    # an image the model cannot take (2 inputs needed, images of different shapes)
    ws.set_model(_model(inputs=2))
    panel.model_select.value = "__workspace__"
    ws.add_image("other", image.isel(x=slice(0, 10)))
    panel.inputs.selects[1].value = "other"
    panel.segment_button.click()
    assert "share one geometry" in panel.message.text and panel.status == "idle"
    empty = SegmentPanel(Workspace(model=_model()))
    empty.segment_button.click()
    assert "no image" in empty.message.text
