"""Label where it matters, in the widgets: the uncertainty overlay of Preview and Segment with
AI, the Label tab's *Suggest where to label* (jump, outlines, prediction under the painting)
and *Retrain* continuing the Train tab's graph."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import nbseg
from nbseg.render import heat_table
from nbseg.ui.imageview import ImageView

from .helpers import blobs, trained_blobs

pytestmark = pytest.mark.slow

TINY = {"filters": 8, "depth": 2}


@pytest.fixture(scope="module")
def trained():
    return trained_blobs()


def test_imageview_layers_change_the_pixels_where_they_say():
    v = ImageView(64, 64)
    gray = np.full((32, 32), 100, np.uint8)
    labels = np.full((32, 32), -1, np.int16)
    labels[:, :8] = 0  # painted
    v.show(gray, labels, ["#ff0000", "#00ff00"])
    plain = v.frame().copy()
    under = np.ones((32, 32), np.int16)  # predicted class 1 everywhere
    v.under_opacity = 0.5
    v.set_layers(under=under)
    f = v.frame()
    # the prediction shows where nothing is painted, the painting stays on top
    assert (f[:, 20:] != plain[:, 20:]).any() and (f[:, :14] == plain[:, :14]).all()
    assert f[30, 40, 1] > plain[30, 40, 1]  # green (class 1) tint
    heat = np.zeros((32, 32), np.float32)
    heat[16:, :] = 1.0
    v.set_layers(under=None, heat=heat)
    f = v.frame()
    assert (f[:30] == plain[:30]).all()  # certain half untouched
    top = heat_table()[-1].astype(int)
    assert np.abs(f[60, 60].astype(int) - top).sum() < np.abs(plain[60, 60].astype(int) - top).sum()
    box = np.zeros((32, 32), bool)
    box[8:24, 8:24] = True
    v.set_layers(heat=None, outline_mask=box)
    f = v.frame()
    edge = (f == np.array(v.outline_color, np.uint8)).all(axis=2)
    assert edge[16, 16:48].any() and not edge[24:40, 24:40].any()  # boundary, not inside
    v.set_layers(outline_mask=None, region=(0, 8, 0, 8))
    assert v.layers["region"] == (0, 8, 0, 8)


def test_preview_shows_and_hides_the_uncertainty(trained):
    model, image, *_ = trained
    ws = nbseg.ui.Workspace(images={"img": image}, model=model)
    panel = nbseg.ui.PreviewPanel(ws)
    panel.preview(3)
    assert panel.view.layers["heat"] is None and "uncertainty" not in panel.message.text
    panel.uncertainty_controls.show.value = True  # recomputes the shown preview
    u = panel.uncertainty
    assert u is not None and u.shape == image.shape[1:]
    np.testing.assert_allclose(
        panel.view.layers["heat"], nbseg.uncertainty(model, image).values[3], atol=1e-5
    )
    assert "uncertainty mean" in panel.message.text
    panel.uncertainty_controls.opacity.value = 0.3
    assert panel.view.heat_opacity == 0.3
    panel.slice_slider.value = 4  # another slice: the old preview and its message go
    assert panel.view.layers["heat"] is None and panel.message.text == ""
    panel.preview()
    panel.uncertainty_controls.show.value = False
    assert panel.view.layers["heat"] is None and panel.uncertainty is None


def test_segment_with_ai_computes_uncertainty_in_the_same_run(trained):
    model, image, *_ = trained
    ws = nbseg.ui.Workspace(images={"img": image}, model=model)
    panel = nbseg.ui.SegmentPanel(ws)
    panel.uncertainty_controls.show.value = True
    panel.segment_button.click()
    panel.wait(60)
    assert panel.status == "done", panel.message.text
    assert isinstance(panel.result, xr.DataArray) and panel.uncertainty is not None
    np.testing.assert_allclose(
        panel.uncertainty.values, nbseg.uncertainty(model, image).values, atol=1e-5
    )
    panel.slice_slider.value = 6
    np.testing.assert_allclose(panel.view.layers["heat"], panel.uncertainty.values[6], atol=1e-6)
    panel.uncertainty_controls.show.value = False
    assert panel.view.layers["heat"] is None


def test_label_tab_suggests_jumps_and_outlines(trained):
    model, image, labels, _ = trained
    tool = nbseg.DeepLearningTool(images={"img": image}, labels={"labels": labels}, model=model)
    ed = tool.labelling
    assert ed.labels is not None and (ed.labels.values[1] >= 0).any()
    ed.suggest_count.value = 2
    ed.suggest_button.click()
    assert ed.suggestion_job is not None
    ed.suggestion_job.wait(60)
    ed._shown.wait(30)
    s = ed.suggestions
    assert s is not None, ed.message.text
    assert len(s.slices) == 2 and not {1, 5} & set(s.slices)
    buttons = ed.suggestion_list.children
    assert len(buttons) == 2 + len(s.regions)
    assert buttons[0].description.startswith(f"Slice {s.slices[0]} ")
    buttons[0].click()
    assert ed.z == s.slices[0]
    layers = ed.view.layers
    np.testing.assert_array_equal(layers["under"], s.prediction.values[ed.z])
    np.testing.assert_array_equal(layers["outline"], s.uncertain_mask(ed.z))
    assert layers["heat"] is None  # the uncertainty map is opt-in
    ed.uncertainty_controls.show.value = True
    np.testing.assert_allclose(ed.view.layers["heat"], s.uncertainty.values[ed.z])
    ed.show_prediction.value = False
    assert ed.view.layers["under"] is None
    buttons[2].click()  # a region: its slice, its box
    r = s.regions[0]
    assert ed.z == r.z and ed.view.layers["region"] == (r.y0, r.y1, r.x0, r.x1)


def test_label_tab_without_a_trained_model_says_what_to_do():
    image, labels, _ = blobs((4, 32, 32), labelled=(1,))
    model = nbseg.generate_model(nbseg.ModelSpec(class_count=2, parameters=TINY), seed=0)
    tool = nbseg.DeepLearningTool(images={"img": image}, labels={"labels": labels}, model=model)
    tool.labelling.suggest_button.click()
    assert "untrained" in tool.labelling.message.text
    assert not tool.labelling.suggest_button.disabled
    alone = nbseg.ui.LabelEditor(image)
    assert alone.retrain_button.layout.display == "none"
    with pytest.raises(nbseg.InputError, match="DeepLearningTool"):
        alone.retrain()


def test_retrain_continues_the_history_and_refreshes_the_suggestions():
    image, labels, truth = blobs((6, 48, 48), labelled=(1,), seed=5)
    model = nbseg.generate_model(nbseg.ModelSpec(class_count=2, parameters=TINY), seed=0)
    params = nbseg.TrainingParams(patch_size=32, batch_size=4, epochs=2, precision="32")
    nbseg.train(model, nbseg.TrainingSet(image, labels), params, 0.0, feedback=False)
    before = model.epochs_trained
    tool = nbseg.DeepLearningTool(
        images={"img": image}, labels={"labels": labels}, model=model, params=params
    )
    ed = tool.labelling
    assert ed.retrain_button.layout.display != "none"
    ed.suggest_labels(wait=True)
    first = ed.suggestions
    assert first is not None
    z = first.slices[0]
    ys, xs = np.nonzero(truth.values[z] == 1)
    ed.paint(z, list(zip(ys.tolist(), xs.tolist())), 1, 0.5)  # paint the suggested slice
    ed.retrain_button.click()
    assert tool.training.run is not None, ed.message.text + tool.training.message.text
    tool.wait(120)
    assert model.epochs_trained == before + 2  # fine-tuned, history continued
    assert len(model.history) >= before + 2
    assert tool.training.graph_points() == model.epochs_trained
    ed.suggestion_job.wait(60)  # the suggestions refresh after the training
    ed._shown.wait(30)
    assert ed.suggestions is not first and z not in ed.suggestions.slices


def test_suggest_and_retrain_never_share_the_model(trained):
    model, image, labels, _ = trained
    tool = nbseg.DeepLearningTool(images={"img": image}, labels={"labels": labels}, model=model)
    ed = tool.labelling
    ed.training_running = lambda: True  # as while the Train tab trains
    ed.suggest_button.click()
    assert "training" in ed.message.text and ed.suggestion_job is None
    ed.training_running = lambda: tool.training.running
    job = ed.suggest_labels()
    if job.running:  # Retrain refuses while the suggestions use the model
        with pytest.raises(nbseg.InputError, match="Suggestions are being computed"):
            tool.retrain()
    job.wait(60)
    ed._shown.wait(30)


def test_suggestions_of_another_image_are_dropped(trained):
    model, image, labels, _ = trained
    other = image.copy(data=image.values[::-1].copy()).rename("other")
    tool = nbseg.DeepLearningTool(
        images={"img": image, "other": other}, labels={"labels": labels}, model=model
    )
    ed = tool.labelling
    job = ed.suggest_labels()
    ed.load(other)  # the user opens another image of the same shape meanwhile
    job.wait(60)
    ed._shown.wait(30)
    assert ed.suggestions is None and ed.view.layers["under"] is None


def test_the_uncertainty_of_another_method_is_not_shown_as_this_one(trained):
    model, image, *_ = trained
    ws = nbseg.ui.Workspace(images={"img": image}, model=model)
    panel = nbseg.ui.SegmentPanel(ws)
    panel.uncertainty_controls.show.value = True
    panel.segment_button.click()
    panel.wait(60)
    assert panel.view.layers["heat"] is not None
    panel.uncertainty_controls.method.value = "margin"
    assert panel.view.layers["heat"] is None and "segment again" in panel.progress_label.value


def test_prediction_under_the_painting_uses_the_models_colours(trained):
    model, image, labels, _ = trained
    tool = nbseg.DeepLearningTool(images={"img": image}, labels={"labels": labels}, model=model)
    ed = tool.labelling
    ed.recolor_class(1, "#123456")  # the painting's colours may differ from the model's
    ed.suggest_labels(wait=True)
    assert ed.view.under_colors == list(model.class_colors)


def test_a_loaded_model_shows_its_stored_history_in_the_train_tab(trained, tmp_path):
    model, image, *_ = trained
    loaded = nbseg.load_model(model.save(tmp_path / "m.nbseg"))
    assert len(loaded.history) == 4
    ws = nbseg.ui.Workspace(images={"img": image}, model=loaded)
    panel = nbseg.ui.TrainingPanel(ws)
    assert panel.graph_points() == 4 and len(panel.history) == 4
    fresh = nbseg.generate_model(nbseg.ModelSpec(class_count=2, parameters=TINY), seed=1)
    ws.set_model(fresh)
    assert panel.graph_points() == 0
    ws.set_model(loaded)  # e.g. Load in the Models tab
    assert panel.graph_points() == 4 and not panel.graph.epoch_range.disabled
