import numpy as np
import pytest
import torch

import nbseg
from nbseg.store.fileformat import read_model_meta


def _model():
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=3,
        name="m",
        description="d",
        parameters={"filters": 4, "depth": 2},
    )
    return nbseg.generate_model(spec, class_names=["a", "b", "c"])


def test_save_load_roundtrip_weights_and_metadata(tmp_path):
    m = _model()
    m.normalisation = nbseg.Normalisation(low=[1.0], high=[3.0])
    m.params = nbseg.TrainingParams(epochs=2)
    m.history = [{"epoch": 1, "loss": 0.5}]
    path = m.save(tmp_path / "model.nbseg")
    back = nbseg.load_model(path)
    assert back.spec == m.spec and back.class_names == ["a", "b", "c"]
    assert back.params == m.params and back.history == m.history
    assert back.normalisation.low == [1.0]
    for (k, a), (_, b) in zip(m.network.state_dict().items(), back.network.state_dict().items()):
        assert torch.equal(a, b), k
    assert read_model_meta(path)["spec"]["name"] == "m"


def test_save_is_atomic_old_file_survives_a_failed_write(tmp_path, monkeypatch):
    m = _model()
    path = m.save(tmp_path / "model.nbseg")
    before = path.read_bytes()
    import nbseg.store.fileformat as ff

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ff.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.nbseg"]  # no temp file left


def test_truncated_or_foreign_files_give_clear_errors(tmp_path):
    path = _model().save(tmp_path / "model.nbseg")
    data = path.read_bytes()
    (tmp_path / "trunc.nbseg").write_bytes(data[: len(data) // 2])
    with pytest.raises(nbseg.ModelFileError, match="not a readable"):
        nbseg.load_model(tmp_path / "trunc.nbseg")
    (tmp_path / "pickle.nbseg").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(nbseg.ModelFileError):
        nbseg.load_model(tmp_path / "pickle.nbseg")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(nbseg.ModelFileError, match="not an nbseg model"):
        nbseg.load_model(tmp_path / "foreign.safetensors")
    with pytest.raises(nbseg.ModelFileError, match="No model file"):
        nbseg.load_model(tmp_path / "missing.nbseg")


def test_generate_model_validates_spec():
    with pytest.raises(nbseg.SpecError, match="class_count"):
        nbseg.generate_model(nbseg.ModelSpec(class_count=1))
    with pytest.raises(nbseg.SpecError, match="nonexistent"):
        nbseg.generate_model(nbseg.ModelSpec(architecture="nonexistent"))
    with pytest.raises(nbseg.SpecError, match="odd"):
        nbseg.generate_model(nbseg.ModelSpec(input_dimension="2.5D", slices=4))
    with pytest.raises(nbseg.SpecError, match="class names"):
        nbseg.generate_model(nbseg.ModelSpec(class_count=3), class_names=["a"])


def test_generate_model_is_seeded():
    a, b = _model(), _model()
    pa = next(a.network.parameters())
    assert torch.equal(pa, next(b.network.parameters()))
    assert np.isfinite(pa.detach().numpy()).all()


def test_metadata_is_validated_and_normalised_on_load(tmp_path):
    import json

    from safetensors.torch import save_file

    from nbseg.store.fileformat import read_model_file

    m = _model()
    state, meta = read_model_file(m.save(tmp_path / "m.nbseg"))
    meta["class_colors"] = [[0, 0, 0], "#FF0000", [0, 255, 0]]  # RGB triples are accepted
    header = {"format": "nbseg-model", "version": "1", "meta": json.dumps(meta)}
    save_file(state, str(tmp_path / "rgb.nbseg"), metadata=header)
    back = nbseg.load_model(tmp_path / "rgb.nbseg")
    assert back.class_colors == ["#000000", "#ff0000", "#00ff00"]
    meta["normalisation"] = {"low": [5.0], "high": [5.0]}  # an empty range: refused on load
    header["meta"] = json.dumps(meta)
    save_file(state, str(tmp_path / "flat.nbseg"), metadata=header)
    with pytest.raises(nbseg.ModelFileError, match=r"flat\.nbseg.*'normalisation\.high\[0\]'"):
        nbseg.load_model(tmp_path / "flat.nbseg")
    with pytest.raises(nbseg.ModelFileError, match=r"'normalisation\.high\[0\]'"):
        read_model_meta(tmp_path / "flat.nbseg")  # the model list's reader too
