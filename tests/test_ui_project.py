"""Projects (issue 16): DeepLearningTool.save_project / open_project keep the whole workspace
in one folder — images (by path when read from a file), labels, masks, training sets,
validation, parameters, feedback region, model, the Label tab's view — atomically, so a
kernel restart loses nothing; bad or missing files are named and change nothing."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import nbseg
from nbseg.errors import InputError
from nbseg.io import read_array, write_array
from nbseg.project import PROJECT_FILE, Project, SetRef, open_project, save_project
from nbseg.training.callbacks import FeedbackRegion
from nbseg.ui.tool import DeepLearningTool

from .helpers import blobs, ready_model


def _tool(tmp_path):
    image, labels, _ = blobs((6, 40, 40))
    write_array(image, tmp_path / "scan.tif")
    scan = read_array(tmp_path / "scan.tif")  # read from a file: kept by path
    other = (image + 10.0).rename("other")  # computed: stored in the project
    model = ready_model()
    model.history = [{"epoch": 1, "loss": 0.9, "val_loss": 0.8}]
    tool = DeepLearningTool(
        images={"scan": scan, "other": other},
        labels={"truth": labels},
        masks={"inside": image > 0},
        model=model,
        params=nbseg.TrainingParams(epochs=3, patch_size=32, learning_rate=5e-4),
    )
    lab = tool.labelling
    lab.edit("scan", "painted")
    lab.paint(2, [(10, 10), (10, 30)], cls=1, radius=2)
    lab.set_plane("xz", 12)
    lab.paint(None, [(4, 5)], cls=0, radius=1)
    inputs = tool.inputs
    inputs.restore(
        [SetRef(["scan"], "painted", "inside"), SetRef(["other"], "truth")],
        [SetRef(["other"], "painted")],
    )
    tool.workspace.set_feedback(FeedbackRegion(training_set=1, slice_index=3, box=(4, 30, 6, 36)))
    tool.select("Inputs")
    return tool


def _check_restored(tool, before):
    ws, old = tool.workspace, before.workspace
    assert list(ws.images) == ["scan", "other"]
    assert ws.images["scan"].encoding["source"] == old.images["scan"].encoding["source"]
    for kind in ("images", "labels", "masks"):
        for name, da in getattr(old, kind).items():
            got = getattr(ws, kind)[name]
            assert got.dims == da.dims and (np.asarray(got.values) == np.asarray(da.values)).all()
    assert ws.labels["painted"].attrs["class_names"] == old.labels["painted"].attrs["class_names"]
    assert ws.masks["inside"].dtype == bool
    assert [r.key() for r in tool.inputs.rows] == [(("scan",), "painted"), (("other",), "truth")]
    assert [r.mask_name for r in tool.inputs.rows] == ["inside", None]
    assert tool.inputs.validation_mode.value == "sets"
    assert [r.key() for r in tool.inputs.validation_rows] == [(("other",), "painted")]
    assert len(ws.training_sets) == 2 and isinstance(ws.validation, list)
    assert ws.training_sets[0].mask is not None
    assert ws.feedback == FeedbackRegion(training_set=1, slice_index=3, box=(4, 30, 6, 36))
    assert ws.params.epochs == 3 and ws.params.learning_rate == 5e-4
    assert ws.model is not None and ws.model.history == old.model.history
    state, other = ws.model.network.state_dict(), old.model.network.state_dict()
    assert all((state[k] == other[k]).all() for k in other)
    lab = tool.labelling
    assert lab.name == "painted" and lab.labels is ws.labels["painted"]
    assert lab.plane == "xz" and lab.z == 12 and not lab.unsaved
    assert tool.tabs.selected_index == 2  # Inputs


def test_save_and_open_project_restore_the_whole_workspace(tmp_path):
    tool = _tool(tmp_path)
    tool.project_path.value = str(tmp_path / "work")
    tool.save_project_button.click()
    folder = tmp_path / "work.nbseg-project"
    assert tool.project_message.text.startswith(f"Saved the project to {str(folder)!r}: 2 image")
    doc = yaml.safe_load((folder / PROJECT_FILE).read_text())
    scan, other = doc["images"]
    assert scan["path"] == str(tmp_path / "scan.tif") and "file" not in scan  # by path
    assert other["file"] == "images/1.zarr" and (folder / other["file"]).is_dir()
    assert (folder / "model.nbseg").is_file() and not tool.labelling.unsaved

    # "a kernel restart": a new tool from the folder alone
    restored = DeepLearningTool.open_project(folder)
    assert restored is not tool
    assert restored.project_message.text.startswith("Opened the project"), (
        restored.project_message.text
    )
    assert restored.inputs.message.text == ""
    _check_restored(restored, tool)


def test_open_project_into_a_tool_replaces_its_workspace(tmp_path):
    tool = _tool(tmp_path)
    folder = tool.save_project(tmp_path / "p.nbseg-project")
    image, labels, _ = blobs((4, 32, 32), seed=3)
    current = DeepLearningTool(images={"unrelated": image}, labels={"x": labels})
    current.project_path.value = str(folder)
    current.open_project_button.click()
    assert current.project_message.text.startswith("Opened the project"), (
        current.project_message.text
    )
    assert "unrelated" not in current.workspace.images and "x" not in current.workspace.labels
    _check_restored(current, tool)
    # saved again over itself: arrays stored in the project were read into memory
    current.save_project(folder, overwrite=True)
    again = DeepLearningTool.open_project(folder)
    _check_restored(again, tool)


def test_save_refuses_to_replace_unless_asked_and_never_deletes_other_data(tmp_path):
    tool = _tool(tmp_path)
    folder = tool.save_project(tmp_path / "p")
    stamp = (folder / PROJECT_FILE).read_text()
    tool.project_path.value = str(folder)
    tool.save_project_button.click()
    assert "already exists; pass overwrite=True (tick 'Overwrite')" in tool.project_message.text
    assert (folder / PROJECT_FILE).read_text() == stamp
    tool.project_overwrite.value = True
    tool.save_project_button.click()
    assert tool.project_message.text.startswith("Saved the project")
    data = tmp_path / "data.nbseg-project"
    data.mkdir()
    (data / "precious.txt").write_text("keep me")
    tool.project_path.value = str(data)
    tool.save_project_button.click()
    assert "is not an nbseg project" in tool.project_message.text
    assert (data / "precious.txt").read_text() == "keep me"
    tool.project_path.value = ""
    tool.save_project_button.click()
    assert "Type the project folder" in tool.project_message.text


def test_a_failed_save_leaves_the_old_project_whole(tmp_path, monkeypatch):
    tool = _tool(tmp_path)
    folder = tool.save_project(tmp_path / "p")
    before = {p.relative_to(folder): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    tool.labelling.paint(1, [(5, 5)], cls=1, radius=2)

    def broken(self, path):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nbseg.Model, "save", broken)
    tool.project_overwrite.value = True
    tool.project_path.value = str(folder)
    tool.save_project_button.click()
    assert "No space left on device" in tool.project_message.text
    monkeypatch.undo()
    after = {p.relative_to(folder): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.nbseg-project", "scan.tif"]
    assert DeepLearningTool.open_project(folder).workspace.model is not None


def test_open_names_a_missing_image_file_and_changes_nothing(tmp_path):
    tool = _tool(tmp_path)
    folder = tool.save_project(tmp_path / "p")
    os.rename(tmp_path / "scan.tif", tmp_path / "moved.tif")
    current = DeepLearningTool(images={"mine": blobs((4, 32, 32))[0]})
    current.project_path.value = str(folder)
    current.open_project_button.click()
    text = current.project_message.text
    assert f"was read from {str(tmp_path / 'scan.tif')!r}, which no longer exists" in text, text
    assert list(current.workspace.images) == ["mine"]
    # the project moved together with its data: found relative to the project
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(str(folder), moved / folder.name)
    os.rename(tmp_path / "moved.tif", moved / "scan.tif")
    again = DeepLearningTool.open_project(moved / folder.name)
    assert again.workspace.images["scan"].encoding["source"] == str(moved / "scan.tif")


def test_bad_projects_are_named():
    with pytest.raises(InputError, match="the folder does not exist"):
        open_project("nowhere.nbseg-project")


def test_project_files_that_are_wrong_are_refused(tmp_path):
    with pytest.raises(InputError, match="uses labels 'nope'"):
        save_project(Project(training_sets=[SetRef([], "nope")]), tmp_path / "x")
    empty = tmp_path / "plain.nbseg-project"
    empty.mkdir()
    with pytest.raises(InputError, match="is not an nbseg project"):
        open_project(empty)
    folder = save_project(Project(validation=0.1), tmp_path / "ok")
    assert open_project(folder).validation == pytest.approx(0.1)
    doc = yaml.safe_load((folder / PROJECT_FILE).read_text())
    doc["nbseg_project"] = 99
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="newer than this nbseg reads"):
        open_project(folder)
    doc["nbseg_project"] = 1
    doc["labels"] = [{"name": "l", "file": "../../etc/passwd"}]
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="lies outside the project"):
        open_project(folder)
    doc["labels"] = [{"name": "l", "file": "labels/0.zarr"}]
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="is incomplete: its labels 'l' file"):
        open_project(folder)


def test_a_project_without_a_label_view_shows_its_first_image_in_the_label_tab(tmp_path):
    image, labels, _ = blobs((4, 32, 32), seed=2)
    folder = save_project(Project(images={"b": image}, labels={"lb": labels}), tmp_path / "x")
    current = DeepLearningTool(images={"a": blobs((4, 24, 24))[0]})
    current.open_project(folder)
    lab = current.labelling
    assert lab.image is current.workspace.images["b"] and lab.name == "lb"
    assert (lab.labels.values == labels.values).all() and "a" not in current.workspace.images
