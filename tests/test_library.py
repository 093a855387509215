"""The model library (trash, exchange, validation) and TorchScript / ONNX export / import."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

import nbseg
from nbseg.errors import ModelFileError, SpecError
from nbseg.store.export import (
    example_input,
    export_onnx,
    export_torchscript,
    import_module,
    import_torchscript,
    read_export_metadata,
)
from nbseg.store.library import ModelLibrary

from .helpers import blobs

TINY = {"filters": 8, "depth": 2}


def tiny_model(name="tiny", classes=2, dim="2D"):
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=classes, input_dimension=dim, parameters=TINY, name=name
    )
    return nbseg.generate_model(spec)


def same_weights(a, b):
    sa, sb = a.network.state_dict(), b.network.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NBSEG_MODELS", str(tmp_path / "lib"))
    assert ModelLibrary().root == tmp_path / "lib"


def test_save_list_load_rename_duplicate(tmp_path):
    lib = ModelLibrary(tmp_path)
    assert lib.list() == []
    m = tiny_model("a", classes=3)
    lib.save(m)
    with pytest.raises(ModelFileError, match="already holds"):
        lib.save(tiny_model("a"))
    rows = lib.list()
    assert [r.name for r in rows] == ["a"]
    r = rows[0]
    assert (r.architecture, r.input_dimension, r.classes) == ("unet", "2D", m.class_names)
    assert r.size == (tmp_path / "a.nbseg").stat().st_size and r.created and not r.trained
    assert same_weights(lib.load("a"), m)

    lib.rename("a", "b")
    assert lib.names() == ["b"] and lib.load("b").spec.name == "b"
    lib.duplicate("b", "c")
    lib.duplicate("b")  # default name
    assert lib.names() == ["b", "b copy", "c"]
    assert same_weights(lib.load("c"), m) and lib.load("c").spec.name == "c"
    with pytest.raises(ModelFileError, match="already holds"):
        lib.rename("b", "c")
    for bad in ("../evil", ".hidden", "", "a/b", "x" * 101):
        with pytest.raises(ModelFileError, match="Invalid model name"):
            lib.rename("b", bad)
    with pytest.raises(ModelFileError, match=r"No model 'zz'.*holds"):
        lib.load("zz")


def test_delete_goes_to_trash_and_restores(tmp_path):
    lib = ModelLibrary(tmp_path)
    m = tiny_model("keep")
    lib.save(m)
    trashed = lib.delete("keep")
    assert lib.names() == [] and trashed.parent == tmp_path / ".trash" and trashed.is_file()
    assert [r.name for r in lib.trash()] == ["keep"]
    lib.save(tiny_model("keep"))  # the name is free again ...
    with pytest.raises(ModelFileError, match="already holds"):
        lib.restore("keep")  # ... so restoring needs another name
    lib.restore("keep", "keep old")
    assert same_weights(lib.load("keep old"), m) and lib.load("keep old").spec.name == "keep old"
    # overwriting save also keeps the old file in the trash
    lib.save(tiny_model("keep"), overwrite=True)
    assert [r.name for r in lib.trash()] == ["keep"]
    assert lib.empty_trash() == 1 and lib.trash() == []
    with pytest.raises(ModelFileError, match="No model 'keep' in the trash"):
        lib.restore("keep")


def test_export_import_round_trip(tmp_path):
    lib = ModelLibrary(tmp_path / "lib")
    other = ModelLibrary(tmp_path / "other")
    m = tiny_model("shared", classes=3)
    m.class_names = ["bg", "pore", "grain"]
    lib.save(m)
    f = lib.export("shared", tmp_path / "out" / "shared.nbseg")
    other.import_(f)
    other.import_(f, "renamed")
    back = other.load("renamed")
    assert same_weights(back, m) and back.class_names == ["bg", "pore", "grain"]
    assert back.spec.name == "renamed" and other.names() == ["renamed", "shared"]
    with pytest.raises(ModelFileError, match="already holds"):
        other.import_(f)


def test_import_rejects_pickles_and_foreign_files(tmp_path):
    lib = ModelLibrary(tmp_path / "lib")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.nbseg"
    bad.write_bytes(pickle.dumps({"state": Evil()}))
    with pytest.raises(ModelFileError, match="not a readable nbseg model"):
        lib.import_(bad)
    torch_file = tmp_path / "weights.nbseg"
    torch.save(tiny_model().network.state_dict(), torch_file)  # a torch pickle archive
    with pytest.raises(ModelFileError):
        lib.import_(torch_file)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.nbseg"  # safetensors, but not an nbseg model
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(ModelFileError, match="not an nbseg model"):
        lib.import_(plain)
    # an nbseg file whose weights do not fit its spec
    from nbseg.store.fileformat import read_model_file, write_model_file

    state, meta = read_model_file(tiny_model().save(tmp_path / "ok.nbseg"))
    meta["spec"]["class_count"] = 4
    meta["class_names"] = meta["class_colors"] = None
    write_model_file(tmp_path / "mismatch.nbseg", state, meta)
    with pytest.raises(ModelFileError, match="do not fit"):
        lib.import_(tmp_path / "mismatch.nbseg")
    assert not marker.exists() and lib.names() == []


def test_unreadable_file_is_listed_not_hidden(tmp_path):
    lib = ModelLibrary(tmp_path)
    lib.save(tiny_model("good"))
    (tmp_path / "broken.nbseg").write_bytes(b"not a model")
    rows = {r.name: r for r in lib.list()}
    assert rows["good"].error is None and rows["broken"].error


@pytest.mark.parametrize("dim", ["2D", "3D"])
def test_torchscript_and_onnx_equal_network(tmp_path, dim):
    import onnxruntime as ort

    m = tiny_model(dim=dim, classes=3)
    x = example_input(m, 16 if dim == "3D" else 32, batch_size=2)
    with torch.no_grad():
        want = m.network.eval()(x).numpy()
    ts = export_torchscript(m, tmp_path / "m.pt", example=x)
    got_ts = torch.jit.load(str(ts))(x).detach().numpy()
    assert np.abs(got_ts - want).max() < 1e-4
    on = export_onnx(m, tmp_path / "m.onnx", example=x)
    sess = ort.InferenceSession(str(on), providers=["CPUExecutionProvider"])
    got_onnx = sess.run(None, {"input": x.numpy()})[0]
    assert np.abs(got_onnx - want).max() < 1e-4
    for path in (ts, on):
        meta = read_export_metadata(path)
        assert meta["spec"]["class_count"] == 3 and meta["class_names"] == m.class_names


def test_torchscript_import_segments_like_the_original(tmp_path):
    image, labels, _ = blobs((3, 32, 32))
    m = tiny_model()
    params = nbseg.TrainingParams(patch_size=32, batch_size=4, epochs=1)
    nbseg.train(m, nbseg.TrainingSet(image, labels), params, validation=0)
    path = export_torchscript(m, tmp_path / "m.pt", example=example_input(m, 32))
    back = import_torchscript(path)  # spec, classes and normalisation from nbseg.json
    assert back.spec.architecture == "torchscript:unet" and back.trained
    a = nbseg.segment(m, image, overlap=0.25)
    b = nbseg.segment(back, image, overlap=0.25)
    assert np.array_equal(a.values, b.values)


class _Foreign(nn.Module):
    """A network nbseg does not know: 1 input channel → 2 classes, same size."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))

    def forward(self, x):
        return self.body(x)


def test_import_module_fine_tunes_and_saves(tmp_path):
    torch.manual_seed(0)
    donor = _Foreign()
    spec = nbseg.ModelSpec(architecture="foreign_net", class_count=2, input_dimension="2D")
    m = import_module(_Foreign, spec, donor.state_dict())
    assert same_weights(m, type("M", (), {"network": donor})())
    image, labels, _ = blobs((4, 32, 32), labelled=(0, 1, 2, 3))
    params = nbseg.TrainingParams(
        patch_size=32, batch_size=4, epochs=3, learning_rate=1e-2, augmentation=False
    )
    before = {k: v.clone() for k, v in m.network.state_dict().items()}
    result = nbseg.train(m, nbseg.TrainingSet(image, labels), params, validation=0)
    losses = result.metric("loss")
    assert result.status == "completed" and losses[-1] < losses[0]
    assert any(not torch.equal(before[k], v) for k, v in m.network.state_dict().items())
    back = nbseg.load_model(m.save(tmp_path / "f.nbseg"))  # registered in this process
    assert same_weights(back, m) and back.trained
    with pytest.raises(SpecError, match="logits of shape"):
        bad = nbseg.ModelSpec(architecture="foreign3", class_count=3, input_dimension="2D")
        import_module(_Foreign, bad)
    with pytest.raises(SpecError, match="built-in"):
        import_module(_Foreign, nbseg.ModelSpec(architecture="unet", class_count=2))


def test_torchscript_module_can_be_fine_tuned(tmp_path):
    torch.manual_seed(0)
    scripted = torch.jit.script(_Foreign())
    scripted.save(str(tmp_path / "f.pt"))
    spec = nbseg.ModelSpec(architecture="scripted_net", class_count=2, input_dimension="2D")
    m = import_torchscript(tmp_path / "f.pt", spec)
    image, labels, _ = blobs((4, 32, 32), labelled=(0, 1, 2, 3))
    params = nbseg.TrainingParams(
        patch_size=32, batch_size=4, epochs=3, learning_rate=1e-2, augmentation=False
    )
    result = nbseg.train(m, nbseg.TrainingSet(image, labels), params, validation=0)
    losses = result.metric("loss")
    assert result.status == "completed" and losses[-1] < losses[0]
    with pytest.raises(ModelFileError, match="not a TorchScript file"):
        (tmp_path / "junk.pt").write_bytes(b"junk")
        import_torchscript(tmp_path / "junk.pt", spec)
