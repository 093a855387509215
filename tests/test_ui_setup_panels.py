"""Model generator, training parameters and inputs panels, driven through their widgets."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import nbseg
from nbseg.models.registry import architectures, get_architecture
from nbseg.ui.inputs_panel import NO_MASK, InputsPanel
from nbseg.ui.model_generator import ModelGeneratorPanel
from nbseg.ui.params_panel import TrainingParamsPanel
from nbseg.ui.state import Workspace

SMALL = {"depth": 3, "filters": 8}


def small_model(**kw) -> nbseg.Model:
    kw.setdefault("parameters", dict(SMALL))
    return nbseg.generate_model(nbseg.ModelSpec(**kw))


def volumes(shape=(4, 64, 64), classes=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, shape).astype(np.float32)
    labels = np.full(shape, -1, np.int16)
    labels[1] = rng.integers(0, classes, shape[1:])
    labels[1, 0, 0] = classes - 1
    return image, labels


def workspace(**extra) -> Workspace:
    image, labels = volumes()
    image2, _ = volumes(seed=1)
    ws = Workspace(
        images={"img": image, "img2": image2, "narrow": image[:, :, :32]},
        labels={"lab": labels, "lab_narrow": labels[:, :, :32]},
        masks={"inside": np.ones(image.shape, bool)},
        **extra,
    )
    return ws


# -- model generator ------------------------------------------------------------------------
def test_generator_fields_build_spec_and_generate_model():
    panel = ModelGeneratorPanel()
    assert isinstance(panel.workspace, Workspace)
    assert panel.architecture.options[0][1] == architectures()[0].name
    assert get_architecture(panel.architecture.value).title in panel.architecture_info.value
    # parameter fields are generated from the registry defaults
    info = get_architecture("unet")
    panel.architecture.value = "unet"
    assert set(panel.parameter_fields) == set(info.defaults)
    assert panel.parameter_fields["norm"].options == ("batch", "instance", "group", "none")
    assert type(panel.parameter_fields["residual"]).__name__ == "Checkbox"
    assert type(panel.parameter_fields["dropout"]).__name__ == "FloatText"

    panel.class_count.value = 3
    panel.input_count.value = 2
    assert len(panel.input_name_fields) == 2
    panel.input_name_fields[0].value = "CT"
    panel.input_name_fields[1].value = "EDS"
    panel.input_dimension.value = "2.5D"
    assert panel.slices_box.layout.display is None
    panel.slices.value = 3
    panel.slice_spacing.value = 2
    panel.model_name.value = "pores"
    panel.description.value = "pores in CT"
    panel.parameter_fields["depth"].value = 3
    panel.parameter_fields["filters"].value = 8

    spec = panel.spec()
    assert (spec.architecture, spec.class_count, spec.input_count) == ("unet", 3, 2)
    assert spec.input_names == ["CT", "EDS"]
    assert (spec.input_dimension, spec.slices, spec.slice_spacing) == ("2.5D", 3, 2)
    assert spec.name == "pores" and spec.description == "pores in CT"
    assert spec.parameters["depth"] == 3 and spec.parameters["filters"] == 8

    events = []
    panel.workspace.observe(lambda e, v: events.append(e))
    panel.generate_button.click()
    model = panel.workspace.model
    assert model is not None and "model" in events
    assert model.spec == spec
    assert "generated" in panel.message.text
    assert "Trainable parameters" in panel.summary.value
    n = sum(p.numel() for p in model.network.parameters())
    assert f"{n:,}" in panel.summary.value
    assert "ratio" in panel.summary.value


def test_generator_dimensions_follow_architecture_and_reset_defaults():
    panel = ModelGeneratorPanel()
    panel.architecture.value = "sensor3d"
    assert tuple(panel.input_dimension.options) == get_architecture("sensor3d").dimensions
    assert panel.input_dimension.value == "2.5D"
    assert panel.slices_box.layout.display is None
    panel.architecture.value = "deeplabv3plus"
    assert "3D" not in panel.input_dimension.options
    panel.input_dimension.value = "2D"
    assert panel.slices_box.layout.display == "none"
    panel.parameter_fields["filters"].value = 4
    panel.reset_button.click()
    assert (
        panel.parameter_fields["filters"].value
        == get_architecture("deeplabv3plus").defaults["filters"]
    )


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: setattr(p.class_count, "value", 1), "class_count=1 is invalid: must be >= 2"),
        (lambda p: setattr(p.parameter_fields["depth"], "value", 0), "depth must lie in"),
        (
            lambda p: (setattr(p.input_dimension, "value", "2.5D"), setattr(p.slices, "value", 4)),
            "odd number of slices",
        ),
    ],
)
def test_generator_shows_errors_and_keeps_previous_model(edit, expected):
    ws = Workspace()
    panel = ModelGeneratorPanel(ws)
    panel.architecture.value = "unet"
    panel.parameter_fields["depth"].value = 3
    panel.parameter_fields["filters"].value = 8
    assert panel.generate() is not None
    before = ws.model
    edit(panel)
    assert panel.generate() is None
    assert expected in panel.message.text
    assert "nbseg-message-error" in panel.message.value
    assert ws.model is before


# -- training parameters --------------------------------------------------------------------
def test_params_fields_cover_the_dataclasses():
    panel = TrainingParamsPanel()
    names = {f.name for f in dataclasses.fields(nbseg.TrainingParams)} - {"augmentation"}
    assert set(panel.fields) == names
    assert set(panel.augmentation_fields) == {
        f.name for f in dataclasses.fields(nbseg.AugmentationParams)
    }
    assert panel.advanced_box.layout.display == "none"
    panel.advanced_toggle.value = True
    assert panel.advanced_box.layout.display is None
    assert "Hide" in panel.advanced_toggle.description


def test_params_edits_go_to_workspace_and_invalid_keeps_last_valid():
    ws = Workspace()
    panel = TrainingParamsPanel(ws)
    panel.batch_size.value = 4
    panel.epochs.value = 7
    panel.loss.value = "focal"
    panel.optimizer.value = "sgd"
    panel.patch_size.value = "32"
    panel.fields["lr_schedule"].value = "plateau"
    panel.fields["early_stopping"].value = True
    panel.fields["patience"].value = 3
    panel.fields["max_minutes"].value = 2.5
    panel.augmentation_fields["flip"].value = False
    panel.augmentation_fields["zoom"].value = (0.8, 1.25)
    panel.augmentation_fields["factor"].value = 2
    p = ws.params
    assert (p.batch_size, p.epochs, p.loss, p.optimizer, p.patch_size) == (4, 7, "focal", "sgd", 32)
    assert (p.lr_schedule, p.early_stopping, p.patience, p.max_minutes) == ("plateau", True, 3, 2.5)
    assert p.augmentation.flip is False and p.augmentation.zoom == (0.8, 1.25)
    assert p.augmentation.factor == 2
    assert panel.message.text == ""

    panel.learning_rate.value = 0.0
    assert "learning_rate" in panel.message.text and "> 0" in panel.message.text
    assert ws.params is p  # last valid kept
    panel.learning_rate.value = 0.01
    assert panel.message.text == "" and ws.params.learning_rate == 0.01

    panel.patch_size.value = "a lot"
    assert "Patch size 'a lot'" in panel.message.text
    panel.patch_size.value = "16, 48, 48"
    assert ws.params.patch_size == (16, 48, 48)


def test_params_class_weights_checked_against_model():
    ws = Workspace(model=small_model(class_count=3))
    panel = TrainingParamsPanel(ws)
    panel.class_weights_mode.value = "custom"
    assert "Custom class weights" in panel.message.text
    panel.class_weights_custom.value = "1, 2"
    assert "one weight per class (3)" in panel.message.text
    panel.class_weights_custom.value = "1, 2, 0.5"
    assert panel.message.text == ""
    assert ws.params.class_weights == [1.0, 2.0, 0.5]


def test_memory_ratio_label_live():
    ws = Workspace()
    panel = TrainingParamsPanel(ws)
    assert "generate or load a model first" in panel.memory_text
    ws.set_model(small_model())  # "model" event updates the label
    text = panel.memory_text
    assert text.startswith("Estimated memory ratio: ")
    ratio = float(text.split(": ")[1].split()[0])
    assert "nbseg-ratio-ok" in panel.memory_label._dom_classes
    assert ratio == pytest.approx(ws.params.memory_ratio(ws.model.spec), abs=0.006)

    panel.batch_size.value = 64
    bigger = float(panel.memory_text.split(": ")[1].split()[0])
    assert bigger > ratio or bigger == ratio == 0.0
    est8 = nbseg.TrainingParams(batch_size=8).memory_estimate(ws.model.spec).total
    est64 = ws.params.memory_estimate(ws.model.spec).total
    assert est64 > est8

    panel.patch_size.value = "1024"
    panel.batch_size.value = 100_000
    assert float(panel.memory_text.split(": ")[1].split()[0]) > 1.0
    assert "nbseg-ratio-bad" in panel.memory_label._dom_classes
    assert "nbseg-ratio-ok" not in panel.memory_label._dom_classes
    assert "reduce the batch size" in panel.memory_text
    panel.batch_size.value = 1
    panel.patch_size.value = "32"
    assert "nbseg-ratio-ok" in panel.memory_label._dom_classes


def test_params_save_and_load(tmp_path):
    ws = Workspace()
    panel = TrainingParamsPanel(ws)
    panel.batch_size.value = 3
    panel.augmentation_fields["rotation"].value = 45.0
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"p{suffix}"
        panel.path.value = str(path)
        panel.save_button.click()
        assert "saved" in panel.message.text and path.exists()
        panel.batch_size.value = 9
        panel.load_button.click()
        assert "loaded" in panel.message.text
        assert panel.batch_size.value == 3 and ws.params.batch_size == 3
        assert ws.params.augmentation.rotation == 45.0
    assert json.loads((tmp_path / "p.json").read_text())["batch_size"] == 3

    panel.path.value = str(tmp_path / "p.txt")
    panel.save_button.click()
    assert "use .json, .yaml or .yml" in panel.message.text
    panel.path.value = str(tmp_path / "missing.yaml")
    panel.load_button.click()
    assert "No file" in panel.message.text
    (tmp_path / "bad.json").write_text('{"batch_sise": 3}')
    panel.path.value = str(tmp_path / "bad.json")
    panel.load_button.click()
    assert "batch_sise" in panel.message.text and ws.params.batch_size == 3


def test_params_panel_follows_loaded_model_params():
    ws = Workspace()
    panel = TrainingParamsPanel(ws)
    model = small_model()
    model.params = nbseg.TrainingParams(batch_size=5, epochs=11, patch_size=48)
    ws.set_model(model)
    assert panel.batch_size.value == 5 and panel.epochs.value == 11
    assert panel.patch_size.value == "48"


# -- inputs ---------------------------------------------------------------------------------
def test_inputs_default_row_builds_training_set():
    ws = workspace()
    panel = InputsPanel(ws)
    assert len(panel.rows) == 1
    row = panel.rows[0]
    assert row.inputs[0].value == "img"
    # only multi-ROIs and masks of the image's geometry are offered
    assert list(row.output.options) == ["lab"]
    assert [v for _, v in row.mask.options][:2] == [NO_MASK, "inside"]
    assert len(ws.training_sets) == 1
    ts = ws.training_sets[0]
    assert ts.input_list[0] is ws.images["img"]
    np.testing.assert_array_equal(ts.output.values, ws.labels["lab"].values)
    assert ts.mask is None and ws.validation == pytest.approx(0.2)
    assert "img" in ts.name and "lab" in ts.name

    row.mask.value = "inside"
    assert ws.training_sets[0].mask is not None
    panel.validation_percent.value = 10
    assert ws.validation == pytest.approx(0.1)

    # a second row picks an unused image; the narrow image offers the narrow labels only
    row2 = panel.add_row()
    assert row2.inputs[0].value == "img2"
    assert len(ws.training_sets) == 2
    assert ws.training_sets[1].input_list[0] is ws.images["img2"]
    row2.inputs[0].value = "narrow"
    assert list(row2.output.options) == ["lab_narrow"]
    assert ws.training_sets[1].shape == (4, 64, 32)
    panel.remove_row(row)
    assert len(panel.rows) == 1 and panel.rows[0].title.value == "Set 1"
    assert [s.input_list[0].name for s in ws.training_sets] == ["narrow"]


def test_inputs_errors_name_the_arrays():
    ws = workspace()
    panel = InputsPanel(ws)
    # labels with more classes than the model: not offered, and the message says why
    ws.set_model(small_model(class_count=2))
    _, labels3 = volumes(classes=3)
    ws.remove("labels", "lab")
    ws.add_labels("lab3", labels3)
    assert list(panel.rows[0].output.options) == []
    text = panel.message.text
    assert "'img'" in text and "'lab3' holds class id 2 but the model has 2 classes" in text
    assert "'lab_narrow' has shape (4, 64, 32)" in text
    assert ws.training_sets == []

    # two-input model: mismatched geometry of the second input
    ws.set_model(small_model(class_count=3, input_count=2))
    row = panel.rows[0]
    assert len(row.inputs) == 2 and list(row.output.options) == ["lab3"]
    assert panel.message.text == "" and ws.training_sets[0].input_count == 2
    row.inputs[1].value = "narrow"
    text = panel.message.text
    assert "img, narrow" in text and "(4, 64, 32)" in text and "must match" in text
    assert ws.training_sets == []
    row.inputs[1].value = "img2"
    assert ws.training_sets[0].input_list[1] is ws.images["img2"]


def test_inputs_unlabelled_output_and_ground_truth_validation():
    ws = workspace()
    ws.add_labels("empty", np.full((4, 64, 64), -1, np.int16))
    panel = InputsPanel(ws)
    panel.rows[0].output.value = "empty"
    assert "no labelled voxel" in panel.message.text and "empty" in panel.message.text
    panel.rows[0].output.value = "lab"
    panel.validation_mode.value = "sets"
    assert len(panel.validation_rows) == 1
    assert isinstance(ws.validation, list) and len(ws.validation) == 1
    assert panel.sets_box.layout.display is None and panel.split_box.layout.display == "none"
    panel.remove_row(panel.validation_rows[0])
    assert "ground-truth" in panel.message.text
    panel.validation_mode.value = "split"
    assert ws.validation == pytest.approx(0.2) and len(ws.training_sets) == 1


def test_inputs_refresh_on_workspace_events():
    ws = Workspace()
    panel = InputsPanel(ws)
    assert panel.rows == [] and "No images" in panel.message.text
    image, labels = volumes()
    ws.add_image("new", image)
    assert len(panel.rows) == 1 and panel.rows[0].inputs[0].value == "new"
    ws.add_labels("painted", labels)
    assert panel.rows[0].output.value == "painted"
    assert len(ws.training_sets) == 1
    events = []
    ws.observe(lambda e, v: events.append(e))
    ws.add_labels("elsewhere", labels[:, :10])  # not used, not offered: nothing re-applied
    assert "training_sets" not in events
    repainted = labels.copy()
    repainted[2] = 0
    ws.add_labels("painted", repainted)  # the array in use changed: sets rebuilt from it
    assert events.count("training_sets") == 1
    np.testing.assert_array_equal(ws.training_sets[0].output.values[2], 0)


def drag(view, a, b):
    """Mouse drag on the canvas between image points ``a`` and ``b`` (y, x)."""
    (ay, ax), (by, bx) = view.view.to_canvas(*a), view.view.to_canvas(*b)
    view._pointer("down", ax, ay)
    view._pointer("move", (ax + bx) / 2, (ay + by) / 2)
    view._pointer("move", bx, by)
    view._pointer("up", bx, by)


def test_feedback_region_by_drag_and_fields():
    ws = workspace()
    panel = InputsPanel(ws)
    region = ws.feedback
    assert region.training_set == 0 and region.slice_index == 1  # the labelled slice
    assert region.box == (0, 64, 0, 64)
    assert panel.view.last_frame is not None

    events = []
    ws.observe(lambda e, v: events.append(e))
    drag(panel.view, (10.2, 12.5), (40.5, 50.0))
    assert events == ["feedback"]  # moves draw only; the region is sent at "up"
    assert ws.feedback.box == (10, 41, 12, 51)
    assert panel.view.rect == (10, 41, 12, 51)
    assert (panel.box_y0.value, panel.box_y1.value) == (10, 41)
    # dragging backwards and beyond the image clamps
    drag(panel.view, (70.0, 70.0), (30.0, -5.0))
    assert ws.feedback.box == (30, 64, 0, 64)
    # a click is not a rectangle
    drag(panel.view, (5.0, 5.0), (6.0, 6.0))
    assert ws.feedback.box == (30, 64, 0, 64) and "4 × 4" in panel.message.text

    panel.slice_slider.value = 3
    assert ws.feedback.slice_index == 3
    panel.box_x1.value = 20
    assert ws.feedback.box == (30, 64, 0, 20) and panel.view.rect == (30, 64, 0, 20)
    panel.box_y1.value = 99
    assert "must lie inside the slice" in panel.message.text
    assert ws.feedback.box == (30, 64, 0, 20)

    panel.add_row()
    panel.feedback_set.value = 1
    assert ws.feedback.training_set == 1


def test_panels_share_one_workspace():
    ws = workspace()
    inputs, params = InputsPanel(ws), TrainingParamsPanel(ws)
    gen = ModelGeneratorPanel(ws)
    gen.architecture.value = "unet"
    gen.parameter_fields["depth"].value = 3
    gen.parameter_fields["filters"].value = 8
    gen.class_count.value = 3
    gen.generate_button.click()
    assert ws.model.spec.class_count == 3
    assert params.memory_text.startswith("Estimated memory ratio: ")
    assert len(ws.training_sets) == 1 and inputs.message.text == ""
    params.validation_percent.value = 30
    assert ws.validation == pytest.approx(0.3)
    assert inputs.validation_percent.value == pytest.approx(30)
    inputs.validation_percent.value = 5
    assert params.validation_percent.value == pytest.approx(5)


def test_generator_set_spec_round_trip():
    spec = nbseg.ModelSpec(
        architecture="attention_unet",
        class_count=4,
        input_count=2,
        input_dimension="3D",
        name="cells",
        parameters={"depth": 3, "filters": 8, "norm": "instance"},
        input_names=["dapi", "actin"],
    )
    panel = ModelGeneratorPanel()
    panel.set_spec(spec)
    assert panel.parameter_fields["norm"].value == "instance"
    got = panel.spec()
    assert got.parameters == {**get_architecture("attention_unet").defaults, **spec.parameters}
    assert dataclasses.replace(got, parameters=spec.parameters) == spec


def test_inputs_2d_image_feedback():
    labels = np.full((40, 50), -1, np.int16)
    labels[:5], labels[5:10] = 1, 0
    ws = Workspace(images={"a": np.random.default_rng(0).random((40, 50))}, labels={"l": labels})
    panel = InputsPanel(ws)
    assert ws.training_sets[0].shape == (1, 40, 50)
    assert panel.slice_slider.disabled
    assert ws.feedback == nbseg.FeedbackRegion(0, 0, (0, 40, 0, 50))
    drag(panel.view, (2.0, 3.0), (20.0, 30.0))
    assert ws.feedback.box == (2, 21, 3, 31)
