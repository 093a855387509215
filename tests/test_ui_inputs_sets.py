"""Inputs tab (issue 16, defect 10): a new row or a ground-truth set never silently copies a
training set, the Mask dropdown shows "(none)" and offers every mask of the image's geometry
(workspace masks and masks made from a class of a multi-ROI), headers line up with the cells."""

import numpy as np
import xarray as xr

import nbseg
from nbseg.ui.inputs_panel import NO_MASK, InputsPanel
from nbseg.ui.labelling import LabelEditor
from nbseg.ui.state import Workspace

SMALL = {"filters": 4, "depth": 2}


def _volume(shape=(4, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.normal(100, 10, shape).astype(np.float32), dims=("z", "y", "x"))


def _labels(shape=(4, 32, 32), z=1, names=("background", "cell")):
    values = np.full(shape, -1, np.int16)
    values[z, :16] = 0
    values[z, 16:] = 1
    return xr.DataArray(values, dims=("z", "y", "x"), attrs={"class_names": list(names)})


def test_add_new_takes_unused_labels_and_a_repeated_set_is_named():
    ws = Workspace(images={"img": _volume()}, labels={"a": _labels(), "b": _labels(z=2)})
    panel = InputsPanel(ws)
    assert panel.rows[0].key() == (("img",), "a")
    panel.add_button.click()
    assert panel.rows[1].key() == (("img",), "b")  # not a copy of set 1
    assert panel.message.text == "" and len(ws.training_sets) == 2
    panel.add_button.click()  # every combination is used: the copy is said
    text = panel.message.text
    assert "Set 3 repeats set 1 (img → a): it adds the same data twice" in text, text
    assert len(ws.training_sets) == 3  # a warning, not a refusal
    panel.rows[2].output.value = "b"
    assert "Set 3 repeats set 2 (img → b)" in panel.message.text
    panel.remove_row(panel.rows[2])
    assert panel.message.text == ""


def test_a_ground_truth_set_equal_to_a_training_set_is_warned_about():
    ws = Workspace(images={"img": _volume()}, labels={"lab": _labels()})
    panel = InputsPanel(ws)
    panel.validation_mode.value = "sets"
    text = panel.message.text
    assert "Ground-truth set 1 is training set 1 (img → lab)" in text, text
    assert "cannot show over-fitting" in text and "'% split'" in text
    assert isinstance(ws.validation, list) and len(ws.validation) == 1
    ws.add_labels("truth", _labels(z=3))
    panel.validation_rows[0].output.value = "truth"
    assert panel.message.text == ""
    panel.add_validation_button.click()  # a second ground truth: the unused labels first
    assert panel.validation_rows[1].output.value in ("truth", "lab")


def test_mask_dropdown_shows_none_and_offers_every_mask_of_the_geometry():
    ws = Workspace(
        images={"img": _volume(), "small": _volume((4, 16, 16))},
        labels={"lab": _labels()},
        masks={"inside": np.ones((4, 32, 32), bool), "other": np.ones((4, 16, 16), bool)},
    )
    panel = InputsPanel(ws)
    row = panel.rows[0]
    assert row.mask.value == NO_MASK and row.mask.index == 0 and row.mask.label == "(none)"
    assert row.mask_name is None and ws.training_sets[0].mask is None
    labels = [label for label, _ in row.mask.options]
    assert labels == ["(none)", "inside", "from lab: background", "from lab: cell"]
    ws.add_mask("later", np.zeros((4, 32, 32), bool))  # added after the panel was made
    assert "later" in [v for _, v in row.mask.options]
    row.mask.value = "inside"
    assert row.mask.label == "inside" and ws.training_sets[0].mask is ws.masks["inside"]
    row.mask.value = NO_MASK
    assert row.mask.label == "(none)" and ws.training_sets[0].mask is None


def test_a_mask_from_a_class_of_the_labels_is_made_and_follows_the_painting():
    image = _volume()
    ws = Workspace(images={"img": image})
    editor = LabelEditor(workspace=ws, class_names=["outside", "sample"])
    editor.paint(1, [(8, 8)], cls=1, radius=3)
    panel = InputsPanel(ws)
    row = panel.rows[0]
    choice = dict(row.mask.options)["from labels: sample"]
    row.mask.value = choice
    assert row.mask.value == "labels: sample" and row.mask.label == "labels: sample"
    mask = ws.masks["labels: sample"]
    assert mask.dtype == bool and (mask.values == (editor.labels.values == 1)).all()
    assert ws.training_sets[0].mask is ws.masks["labels: sample"]
    assert "from labels: sample" not in dict(row.mask.options)  # offered once, as the mask
    editor.paint(2, [(20, 20)], cls=1, radius=2)  # painting more of the class
    mask = ws.masks["labels: sample"]
    assert (mask.values == (editor.labels.values == 1)).all() and mask.values[2].any()
    assert (ws.training_sets[0].mask.values == mask.values).all()


def test_column_headers_have_the_widths_of_the_row_cells():
    ws = Workspace(images={"a": _volume(), "b": _volume(seed=1)}, labels={"lab": _labels()})
    ws.set_model(
        nbseg.generate_model(
            nbseg.ModelSpec(input_count=2, input_names=["CT", "MR"], parameters=dict(SMALL))
        )
    )
    panel = InputsPanel(ws)
    row = panel.rows[0]
    cells = [row.title, *row.inputs, row.output, row.mask, row.remove_button]
    heads = list(panel.header.children)
    assert len(heads) == len(cells) == 6  # an empty head over the remove buttons
    assert [h.layout.width for h in heads] == [c.layout.width for c in cells]
    assert "CT" in heads[1].value and "MR" in heads[2].value and "Mask" in heads[4].value
    # the panels' 150 px label column would push the cells right of their headers
    assert "nbseg-compact" in row._dom_classes and "nbseg-compact" in panel.header._dom_classes
