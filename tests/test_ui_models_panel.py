"""The Models panel driven like a user: .value and .click(), errors in .message."""

import pytest
import torch

import nbseg
from nbseg.store.library import ModelLibrary
from nbseg.ui.models_panel import ModelsPanel
from nbseg.ui.state import Workspace

TINY = {"filters": 8, "depth": 2}


def tiny(name, classes=2):
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=classes, parameters=TINY, name=name, description="test"
    )
    return nbseg.generate_model(spec)


@pytest.fixture
def setup(tmp_path):
    lib = ModelLibrary(tmp_path / "lib")
    lib.save(tiny("alpha", 3))
    lib.save(tiny("beta"))
    ws = Workspace(library=lib)
    return ModelsPanel(ws), ws, lib, tmp_path


def test_lists_selects_and_loads(setup):
    panel, ws, _lib, _ = setup
    assert [v for _, v in panel.models.options] == ["alpha", "beta"]
    assert panel.models.value == "alpha" and "unet 2D" in panel.details.value
    assert len(panel.class_names) == 3 and panel.message.text == ""
    seen = []
    ws.observe(lambda event, value: seen.append(event))
    panel.models.value = "beta"
    assert "class 1" in panel.details.value and "class 2" not in panel.details.value
    assert len(panel.class_names) == 2
    panel.load_button.click()
    assert ws.model is not None and ws.model.spec.name == "beta" and "model" in seen
    assert "Loaded" in panel.message.text


def test_manage_buttons(setup):
    panel, _ws, lib, tmp_path = setup
    panel.models.value = "beta"
    panel.new_name.value = "gamma"
    panel.rename_button.click()
    assert lib.names() == ["alpha", "gamma"] and panel.models.value == "gamma"
    panel.new_name.value = "gamma 2"
    panel.duplicate_button.click()
    assert lib.names() == ["alpha", "gamma", "gamma 2"]
    panel.delete_button.click()  # the selection is the duplicate
    assert lib.names() == ["alpha", "gamma"] and panel.trash.options
    panel.new_name.value = ""
    panel.restore_button.click()
    assert lib.names() == ["alpha", "gamma", "gamma 2"], panel.message.text
    panel.models.value = "alpha"
    panel.export_path.value = str(tmp_path / "exported.nbseg")
    panel.export_button.click()
    assert (tmp_path / "exported.nbseg").is_file()
    panel.import_path.value = str(tmp_path / "exported.nbseg")
    panel.new_name.value = "alpha again"
    panel.import_button.click()
    assert "alpha again" in lib.names() and panel.models.value == "alpha again"


def test_errors_go_to_message(setup):
    panel, _ws, lib, tmp_path = setup
    panel.new_name.value = "beta"  # taken
    panel.rename_button.click()
    assert "already holds a model 'beta'" in panel.message.text
    panel.new_name.value = "../x"
    panel.rename_button.click()
    assert "Invalid model name" in panel.message.text
    (tmp_path / "junk.nbseg").write_bytes(b"junk")
    panel.import_path.value = str(tmp_path / "junk.nbseg")
    panel.new_name.value = ""
    panel.import_button.click()
    assert "not a readable nbseg model" in panel.message.text
    assert lib.names() == ["alpha", "beta"]


def test_save_current_model(setup):
    panel, ws, lib, _ = setup
    assert panel.save_button.disabled  # no current model yet
    ws.set_model(tiny("fresh"))
    assert not panel.save_button.disabled
    panel.save_button.click()
    assert "fresh" in lib.names() and panel.models.value == "fresh"
    panel.save_button.click()
    assert "already holds" in panel.message.text
    panel.overwrite.value = True
    panel.save_name.value = "fresh"
    panel.save_button.click()
    assert [r.name for r in lib.trash()] == ["fresh"] and panel.message.text.startswith("Saved")


def test_classes_are_saved_into_the_model(setup):
    panel, ws, lib, _ = setup
    panel.models.value = "alpha"
    panel.load_button.click()
    before = {k: v.clone() for k, v in lib.load("alpha").network.state_dict().items()}
    panel.class_names[1].value = "pore"
    panel.class_colors[1].value = "#00ff00"
    panel.class_weights[2].value = 3.0
    panel.apply_classes_button.click()
    assert panel.message.text.startswith("Saved the classes"), panel.message.text
    m = lib.load("alpha")
    assert m.class_names[1] == "pore" and m.class_colors[1] == "#00ff00"
    assert m.params.class_weights == [1.0, 1.0, 3.0]
    assert all(torch.equal(before[k], v) for k, v in m.network.state_dict().items())
    assert ws.model.class_names[1] == "pore"  # the loaded copy follows
    assert lib.trash() == []  # an edit replaces in place
    panel.class_names[0].value = "pore"
    panel.apply_classes_button.click()
    assert "distinct" in panel.message.text
    panel.class_weights[0].value = -1.0
    panel.class_names[0].value = "bg"
    panel.apply_classes_button.click()
    assert "weights must be >= 0" in panel.message.text


def test_structure_table(setup):
    panel, *_ = setup
    rows = panel.show_structure(32)
    assert rows and rows[-1]["output_shape"] == (1, 3, 32, 32)
    assert "Output shape" in panel.structure.value and rows[0]["name"] in panel.structure.value
    panel.structure_button.click()
    assert panel.message.text == "" and panel.structure_rows


def test_empty_library(tmp_path):
    panel = ModelsPanel(library=ModelLibrary(tmp_path / "none"))
    assert panel.models.options == () and "empty" in panel.details.value
    panel.load_button.click()
    assert panel.load_button.disabled and "Select a model" in panel.message.text
    panel.delete_button.click()
    assert "Select a model" in panel.message.text


@pytest.mark.slow
def test_export_to_bioimageio_from_the_model_list(setup):
    import zipfile

    from .helpers import blobs

    panel, _ws, lib, tmp_path = setup
    panel.models.value = "beta"
    panel.export_format.value = "bioimageio"
    panel.export_path.value = str(tmp_path / "beta.zip")
    panel.export_button.click()  # untrained: refused with the reason, nothing written
    assert "train" in panel.message.text.lower() and not (tmp_path / "beta.zip").exists()
    image, labels, _ = blobs((3, 32, 32), labelled=(1,))
    model = lib.load("beta")
    params = nbseg.TrainingParams(patch_size=16, batch_size=4, epochs=1, precision="32")
    nbseg.train(model, nbseg.TrainingSet(image, labels), params, 0.0, feedback=False)
    lib.save(model, overwrite=True)
    panel.export_button.click()
    assert (tmp_path / "beta.zip").is_file(), panel.message.text
    assert "bioimage.io" in panel.message.text
    assert "rdf.yaml" in zipfile.ZipFile(tmp_path / "beta.zip").namelist()
