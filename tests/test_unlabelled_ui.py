"""Unlabelled images in the tool (issue 20): the Inputs tab's *Unlabelled images* rows (one
choice per model input), which Train, Retrain and the exported config pass on as
``nbseg.train(..., unlabelled=)``; the Training parameters tab's *Unlabelled data* group; the
project keeps the choice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
import yaml

import nbseg
from nbseg.project import open_project
from nbseg.ui.inputs_panel import InputsPanel
from nbseg.ui.state import Workspace

from .helpers import blobs

SMALL = {"filters": 4, "depth": 2}


def _model(input_count: int = 1) -> nbseg.Model:
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=2,
        input_dimension="2D",
        input_count=input_count,
        parameters=SMALL,
    )
    return nbseg.generate_model(spec)


def _params(**kw) -> nbseg.TrainingParams:
    base = dict(epochs=1, patch_size=32, batch_size=4, seed=0, checkpoint_cache_mb=0)
    return nbseg.TrainingParams(**{**base, **kw})


def _tool(**kw) -> nbseg.DeepLearningTool:
    image, labels, _ = blobs((4, 32, 32), labelled=(1, 2))
    extra, _, _ = blobs((3, 40, 40), seed=4)
    return nbseg.DeepLearningTool(
        images={"img": image, "extra": extra},
        labels={"lab": labels},
        model=_model(),
        params=_params(),
        **kw,
    )


def _names(panel: InputsPanel) -> list[list[str | None]]:
    return [r.input_names for r in panel.unlabelled_rows]


def test_the_inputs_tab_offers_unlabelled_images_with_an_explanation():
    tool = _tool()
    inputs, ws = tool.inputs, tool.workspace
    assert inputs.unlabelled_rows == [] and ws.unlabelled == []  # none unless chosen
    assert "pseudo-labels" in inputs.unlabelled_note.value
    assert "Unlabelled data" in inputs.unlabelled_note.value  # where its settings are
    inputs.add_unlabelled_button.click()
    (row,) = inputs.unlabelled_rows
    assert row.input_names == ["extra"]  # the image no training set uses comes first
    assert row.title.value == "Image 1"
    assert inputs.message.text == ""
    assert len(ws.unlabelled) == 1 and ws.unlabelled[0][0] is ws.images["extra"]
    assert "Unlabelled: 1 image(s) (extra)" in inputs.summary.value
    assert "unlabelled: 1" in tool.status.value
    assert "<b>Unlabelled:</b> 1 image(s) (pseudo-labels)" in tool.training.summary.value
    # the training image as an unlabelled image is said (its own voxels are used already)
    row.inputs[0].value = "img"
    text = inputs.message.text
    assert "Unlabelled image 1 (img) is the input of training set 1" in text, text
    row.inputs[0].value = "extra"
    inputs.add_unlabelled_row().inputs[0].value = "extra"
    assert "Unlabelled image 2 repeats unlabelled image 1 (extra)" in inputs.message.text
    inputs.remove_row(inputs.unlabelled_rows[1])
    assert inputs.message.text == "" and len(ws.unlabelled) == 1
    inputs.remove_row(inputs.unlabelled_rows[0])
    assert ws.unlabelled == [] and "unlabelled" not in tool.status.value


@pytest.mark.slow
def test_train_in_the_tool_learns_from_the_chosen_unlabelled_images():
    tool = _tool()
    tool.inputs.choose_unlabelled(["extra"])
    run = tool.train()
    assert run is not None, tool.training.message.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = tool.wait(120)
    assert result is not None and result.status == "completed", tool.training.message.text
    assert [list(map(id, u)) for u in run.unlabelled] == [[id(tool.workspace.images["extra"])]]
    row = result.history[-1]
    assert "pseudo_loss" in row and 0.0 <= row["pseudo_share"] <= 1.0
    assert "pseudo_loss" in tool.training.graph.metrics.options  # offered on the graph


@pytest.mark.slow
def test_retrain_from_the_label_tab_passes_the_unlabelled_images():
    tool = _tool()
    tool.inputs.choose_unlabelled(["extra"])
    lab = tool.labelling
    lab.edit("img", "lab")
    lab.paint(3, [(5, 5), (6, 6)], 1, 1.0)  # a stroke: the labels changed since Train
    run = tool.retrain()
    assert run is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = tool.wait(120)
    assert result is not None and result.status == "completed", tool.training.message.text
    assert len(run.unlabelled) == 1 and run.unlabelled[0][0] is tool.workspace.images["extra"]
    assert "pseudo_loss" in result.history[-1]


def test_a_model_of_several_inputs_gets_one_choice_per_input():
    a, labels, _ = blobs((4, 32, 32), labelled=(1, 2))
    b = a + 1.0
    c, _, _ = blobs((3, 40, 40), seed=4)
    d = c * 0.5
    ws = Workspace(
        images={"a": a, "b": b, "c": c, "d": d},
        labels={"lab": labels},
        model=_model(input_count=2),
        params=_params(),
    )
    panel = InputsPanel(ws)
    panel.rows[0].inputs[1].value = "b"
    assert panel.rows[0].key() == (("a", "b"), "lab")
    panel.add_unlabelled_row()
    row = panel.unlabelled_rows[0]
    assert len(row.inputs) == 2
    assert row.input_names == ["c", "d"]  # unused first; a second input of c's geometry
    header = [w.value for w in panel.unlabelled_header.children]
    assert any("input_0" in h for h in header) and any("input_1" in h for h in header)
    assert [[x is ws.images[n] for x, n in zip(u, "cd")] for u in ws.unlabelled] == [[True] * 2]
    # inputs of another geometry: a clear error, and nothing stale goes to training
    row.inputs[1].value = "a"
    text = panel.message.text
    assert "Unlabelled image 1: its inputs differ in shape" in text, text
    assert ws.unlabelled == [] and ws.training_sets == []
    # by name: one list per image; a wrong count or an unknown name changes nothing
    assert len(panel.choose_unlabelled([["c", "d"]])) == 1
    with pytest.raises(
        nbseg.InputError, match=r"Unlabelled image 1: 1 image\(s\) \['c'\].*takes 2"
    ):
        panel.choose_unlabelled(["c"])
    with pytest.raises(nbseg.InputError, match="input 2 is image 'nope'"):
        panel.choose_unlabelled([["c", "nope"]])
    assert _names(panel) == [["c", "d"]] and len(ws.unlabelled) == 1
    # a model of one input: the rows follow
    ws.set_model(_model(input_count=1))
    assert [len(r.inputs) for r in panel.unlabelled_rows] == [1]
    assert len(ws.unlabelled) == 1 and len(ws.unlabelled[0]) == 1


def test_train_refuses_an_unlabelled_image_of_the_wrong_input_count_before_starting():
    tool = _tool()
    tool.inputs.choose_unlabelled(["extra"])
    ws = tool.workspace
    ws.unlabelled = [[ws.images["extra"], ws.images["extra"]]]  # as if stale
    assert tool.train() is None
    text = tool.training.message.text
    assert "Unlabelled image 1 has 2 input(s) but model 'model' takes 1" in text, text
    assert tool.training.run is None


def test_training_parameters_show_the_unlabelled_data_group():
    tool = _tool()
    p = tool.parameters
    titles = [s.children[0].value for s in p.advanced_box.children]
    section = next(s for s, t in zip(p.advanced_box.children, titles) if "Unlabelled data" in t)
    names = (
        "semi_supervised",
        "unlabelled_weight",
        "pseudo_threshold",
        "teacher_threshold",
        "unlabelled_share",
    )
    for name in names:
        assert name in p.fields
        shown = [w for row in section.children[1:] for w in getattr(row, "children", [row])]
        assert p.fields[name] in shown, name
    tool.inputs.choose_unlabelled(["extra"])
    p.fields["semi_supervised"].value = "off"
    assert tool.workspace.params.semi_supervised == "off", p.message.text
    assert p.fields["unlabelled_weight"].disabled  # enabled_if: only with pseudo-labels
    assert "not used while Training parameters → Unlabelled data is 'off'" in (
        tool.inputs.summary.value
    )
    assert "not used: Unlabelled data is 'off'" in tool.training.summary.value
    p.fields["semi_supervised"].value = "pseudo_labels"
    assert not p.fields["unlabelled_weight"].disabled
    assert "learnt from with pseudo-labels" in tool.inputs.summary.value
    # the feature teacher labels the training volumes only: unlabelled images are unused
    p.fields["semi_supervised"].value = "feature_teacher"
    assert tool.workspace.params.semi_supervised == "feature_teacher", p.message.text
    assert not p.fields["teacher_threshold"].disabled
    assert p.fields["pseudo_threshold"].disabled  # the network's pseudo-labels only
    assert not p.fields["unlabelled_weight"].disabled
    assert p.fields["unlabelled_share"].disabled
    assert "not used while Training parameters → Unlabelled data is 'feature_teacher'" in (
        tool.inputs.summary.value
    )
    assert "not used: Unlabelled data is 'feature_teacher'" in tool.training.summary.value


def test_the_project_keeps_the_unlabelled_images(tmp_path):
    tool = _tool()
    tool.inputs.choose_unlabelled(["extra"])
    folder = tool.save_project(tmp_path / "work")
    assert "1 unlabelled image(s)" in tool.project_message.text
    doc = yaml.safe_load((folder / "project.yaml").read_text())
    assert doc["unlabelled"] == [["extra"]]
    assert open_project(folder).unlabelled == [["extra"]]

    again = nbseg.DeepLearningTool.open_project(folder)
    assert _names(again.inputs) == [["extra"]]
    ws = again.workspace
    assert len(ws.unlabelled) == 1
    np.testing.assert_array_equal(ws.unlabelled[0][0].values, tool.workspace.images["extra"])
    assert "1 unlabelled image(s)" in again.project_message.text

    # into a tool without any: the choice replaces the rows
    other = _tool()
    assert other.inputs.unlabelled_rows == []
    other.open_project(folder)
    assert _names(other.inputs) == [["extra"]] and len(other.workspace.unlabelled) == 1


def test_a_project_naming_an_unknown_unlabelled_image_is_refused(tmp_path):
    tool = _tool()
    folder = tool.save_project(tmp_path / "work")
    doc = yaml.safe_load((folder / "project.yaml").read_text())
    assert doc["unlabelled"] == []
    doc["unlabelled"] = [["ghost"]]
    (folder / "project.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(nbseg.InputError, match="unlabelled image 1 uses image 'ghost'"):
        open_project(folder)
    doc["unlabelled"] = "extra"
    (folder / "project.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(nbseg.InputError, match="'unlabelled' must be a list"):
        open_project(folder)
    del doc["unlabelled"]  # a project of an earlier nbseg
    (folder / "project.yaml").write_text(yaml.safe_dump(doc))
    assert open_project(folder).unlabelled == []


def test_export_config_from_the_train_tab_keeps_the_unlabelled_images(tmp_path):
    tool = _tool()
    tool.inputs.choose_unlabelled(["extra"])
    path = tool.training.export_config(tmp_path / "run" / "train.yaml")
    cfg = nbseg.load_config(path)
    ((image,),) = cfg.build_unlabelled(1)
    extra = tool.workspace.images["extra"]
    assert isinstance(image, xr.DataArray) and image.dims == extra.dims
    np.testing.assert_array_equal(image.values, extra.values)
    np.testing.assert_array_equal(image["y"].values, extra["y"].values)
