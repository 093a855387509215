"""`InferenceSettings`: one validated object for segment, preview and streaming."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import nbseg
from nbseg.inference import stream
from nbseg.inference.settings import InferenceSettings

from .helpers import blobs, ready_model

INFERENCE = Path(nbseg.__file__).parent / "inference"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_defaults_are_the_old_keyword_defaults():
    s = InferenceSettings()
    assert (s.window, s.overlap, s.blending, s.batch_size) == (None, 0.25, "gaussian", 8)
    assert (s.tta, s.probabilities, s.device, s.precision, s.chunks) == (
        False,
        False,
        "auto",
        "32",
        None,
    )
    assert InferenceSettings.build() == s and InferenceSettings.build(device=None) == s


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"overlap": 1.0}, r"InferenceSettings\.overlap=1\.0 is invalid: must lie in \[0, 1\)"),
        ({"overlap": -0.1}, r"overlap=-0\.1 is invalid: must lie in \[0, 1\)"),
        ({"blending": "mean"}, r"blending='mean' is invalid: choose one of \('gaussian'"),
        ({"batch_size": 0}, r"batch_size=0 is invalid: must be >= 1"),
        ({"window": 0}, r"window=0 is invalid"),
        ({"device": "gpu"}, r"device='gpu' is invalid: .*'cuda:N'"),
        ({"precision": "64"}, r"precision='64' is invalid: choose one of"),
        ({"tta": "yes"}, r"tta='yes' is invalid: use True or False"),
        ({"chunks": (0, 4)}, r"chunks=\(0, 4\) is invalid"),
        ({"overlaps": 0.5}, r"\['overlaps'\]; valid names: \[.*'overlap'"),
    ],
)
def test_validation_names_the_setting_and_its_range(change, pattern):
    with pytest.raises(nbseg.InputError, match=pattern):
        InferenceSettings.build(**change)
    m = ready_model("2D")
    image, _, _ = blobs((1, 32, 32))
    with pytest.raises(nbseg.InputError, match=pattern):
        nbseg.segment(m, image, **change)  # before any work, the same message


def test_build_from_object_mapping_and_overrides():
    base = InferenceSettings(overlap=0.5, batch_size=2)
    assert InferenceSettings.build(base) is base
    assert InferenceSettings.build(base, tta=True) == base.replace(tta=True)
    assert InferenceSettings.build({"window": [16, 16], "chunks": [1, 8, 8]}) == (
        InferenceSettings(window=(16, 16), chunks=(1, 8, 8))
    )
    assert InferenceSettings.build(device=torch.device("cpu")).device == "cpu"
    assert InferenceSettings.from_dict(base.to_dict()) == base
    with pytest.raises(nbseg.InputError, match="settings must be an InferenceSettings"):
        InferenceSettings.build(0.5)
    with pytest.raises(AttributeError):
        base.overlap = 0.1  # frozen: one object shared by every block task


def test_settings_object_equals_keywords_in_memory_preview_and_streaming(tmp_path):
    m = ready_model("2D", 3)
    image, _, _ = blobs((3, 40, 40))
    s = InferenceSettings(overlap=0.5, batch_size=3, blending="constant", probabilities=True)
    kw = dict(overlap=0.5, batch_size=3, blending="constant", probabilities=True)
    ref = nbseg.segment(m, image, **kw).values
    np.testing.assert_array_equal(nbseg.segment(m, image, settings=s).values, ref)
    # keywords override the object
    lab = nbseg.segment(m, image, settings=s, probabilities=False)
    assert lab.dtype == np.int16 and lab.dims == image.dims
    prev = nbseg.preview(m, image, 1, settings=s)
    np.testing.assert_allclose(prev.values, ref[:, 1], atol=1e-5)
    streamed = nbseg.segment(m, image.chunk({"z": 1}), settings=s.replace(chunks=(1, 40, 20)))
    np.testing.assert_allclose(streamed.values, ref, atol=1e-5)


def test_streaming_receives_the_one_settings_object(tmp_path, monkeypatch):
    m = ready_model("2D")
    image, _, _ = blobs((2, 32, 32))
    seen = []
    real = stream._Job.__init__

    def spy(self, model, plan, settings):
        seen.append(settings)
        real(self, model, plan, settings)

    monkeypatch.setattr(stream._Job, "__init__", spy)
    s = InferenceSettings(batch_size=3, chunks=(1, 32, 32))
    nbseg.segment(m, image, settings=s, out=tmp_path / "o.zarr")
    assert seen == [s]
    nbseg.segment(m, image, out=tmp_path / "p.zarr", overlap=0.5)
    assert seen[-1] == InferenceSettings(overlap=0.5)


def test_bf16_precision_is_close_to_float32():
    m = ready_model("2D", 3)
    image, _, _ = blobs((2, 32, 32))
    ref = nbseg.segment(m, image, probabilities=True).values
    casts = []
    m.network.register_forward_hook(lambda mod, i, o: casts.append(o.dtype))
    got = nbseg.segment(m, image, probabilities=True, precision="bf16-mixed", device="cpu")
    assert casts and set(casts) == {torch.bfloat16}
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.values, ref, atol=3e-2)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) of every ``from . import`` in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    return [
        ("." * n.level + (n.module or ""), id(n) in top)
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.level
    ]


def test_no_import_cycle_between_sliding_and_stream():
    stream_imports = _imports(INFERENCE / "stream.py")
    assert not [m for m, _ in stream_imports if m == ".sliding"]
    sliding_imports = _imports(INFERENCE / "sliding.py")
    assert (".stream", True) in sliding_imports  # an ordinary module-level import
    for name in ("sliding.py", "stream.py", "predictor.py", "tiling.py", "settings.py"):
        local = [m for m, top in _imports(INFERENCE / name) if not top]
        assert not [m for m in local if m.startswith(".") and not m.startswith("..")], name
