"""bioimage.io model packages: export passes ``bioimageio.core.test_model`` offline, import
rebuilds the model (exactly for nbseg packages; foreign TorchScript packages wrapped), and
bad input is refused with an InputError naming the path."""

from __future__ import annotations

import socket
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from torch import nn

import nbseg
from nbseg.cli import main
from nbseg.errors import InputError
from nbseg.models.registry import size_divisor
from nbseg.store.export import export_bioimageio, import_bioimageio

from .helpers import blobs, ready_model

bioimageio_spec = pytest.importorskip("bioimageio.spec")
bioimageio_core = pytest.importorskip("bioimageio.core")
v = pytest.importorskip("bioimageio.spec.model.v0_5")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: every connection attempt is recorded and refused; bioimageio's cache is a
    fresh temp folder (nothing cached from elsewhere is used)."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network access is not allowed in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(bioimageio_spec.settings, "cache_path", tmp_path / "bioimageio-cache")
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(scope="module")
def trained():
    """A tiny U-Net trained two epochs on blobs, and its image."""
    image, labels, _ = blobs((3, 32, 32))
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=2,
        input_dimension="2D",
        parameters={"filters": 4, "depth": 2},
        name="blob finder",
        description="Finds bright blobs (a test model).",
    )
    m = nbseg.generate_model(spec, class_names=["background", "blob"])
    params = nbseg.TrainingParams(patch_size=32, batch_size=4, epochs=2)
    nbseg.train(m, nbseg.TrainingSet(image, labels), params, validation=0)
    return m, image, labels


def _rdf(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


def _npy(path, name) -> np.ndarray:
    import io

    with zipfile.ZipFile(path) as zf:
        return np.load(io.BytesIO(zf.read(name)))


def _passed(summary) -> None:
    failed = [(d.name, [e.msg for e in d.errors][:2]) for d in summary.details if d.errors]
    assert summary.status == "passed", failed


@pytest.mark.slow
def test_export_passes_test_model_offline(trained, tmp_path, offline):
    m, _, _ = trained
    path = export_bioimageio(m, tmp_path / "blobs.zip", authors=["Ada"], license="CC-BY-4.0")
    assert path == tmp_path / "blobs.zip" and zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy"} <= names
    assert {"weights_state_dict.pt", "weights_torchscript.pt", "weights.onnx"} <= names
    rdf = _rdf(path)
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert rdf["authors"] == [{"name": "Ada"}] and rdf["license"] == "CC-BY-4.0"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    div = size_divisor(m.spec)
    assert inp["axes"][2]["size"] == {"min": 32, "step": div}  # the window; the size divisor
    assert [a.get("halo") for a in out["axes"][2:]] == [4, 4]
    assert out["axes"][1]["channel_names"] == ["background", "blob"]
    scale = next(p for p in inp["preprocessing"] if p["id"] == "scale_linear")["kwargs"]
    lo, hi = m.normalisation.low[0], m.normalisation.high[0]
    assert scale["gain"] == pytest.approx(1 / (hi - lo)) and scale["offset"] == pytest.approx(
        -lo / (hi - lo)
    )
    assert out["postprocessing"][0]["id"] == "softmax"
    nb = rdf["config"]["nbseg"]
    assert nb["model"]["class_names"] == ["background", "blob"] and nb["window"] == [32, 32]
    # the test output is nbseg's segmentation of the test input
    raw = _npy(path, "test_input.npy")
    want = nbseg.segment(
        m, xr.DataArray(raw[0, 0], dims=("y", "x")), probabilities=True, window=32, device="cpu"
    )
    assert np.allclose(_npy(path, "test_output.npy")[0], want.values, atol=1e-5)
    t0 = time.perf_counter()
    summary = bioimageio_core.test_model(path)
    seconds = time.perf_counter() - t0
    _passed(summary)
    tested = {d.name for d in summary.details}
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert any(f"({fmt})" in n for n in tested), (fmt, tested)
    print(f"bioimageio.core.test_model: passed in {seconds:.1f} s")


@pytest.mark.slow
def test_import_is_exact_segments_and_fine_tunes(trained, tmp_path, offline):
    m, image, labels = trained
    path = export_bioimageio(m, tmp_path / "blobs.zip")
    back = import_bioimageio(path)
    assert back.spec == m.spec and back.class_names == m.class_names
    assert back.class_colors == m.class_colors and back.history == m.history
    assert back.normalisation == m.normalisation and back.params == m.params
    sa, sb = m.network.state_dict(), back.network.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(nbseg.segment(m, image).values, nbseg.segment(back, image).values)
    params = nbseg.TrainingParams(patch_size=32, batch_size=4, epochs=1)
    result = nbseg.train(back, nbseg.TrainingSet(image, labels), params, validation=0)
    assert result.status == "completed" and back.epochs_trained == m.epochs_trained + 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "dim, kw",
    [("3D", {}), ("2.5D", {"slices": 3, "input_count": 2})],
    ids=["3D", "2.5D-two-inputs"],
)
def test_3d_and_multi_input_packages_pass(dim, kw, tmp_path, offline):
    m = ready_model(dim, **kw)
    if kw.get("input_count") == 2:
        m.normalisation = nbseg.Normalisation(low=[400.0, 0.0], high=[700.0, 10.0])
    path = export_bioimageio(m, tmp_path / "m.zip")
    rdf = _rdf(path)
    channels = rdf["inputs"][0]["axes"][1]["channel_names"]
    assert len(channels) == m.spec.in_channels
    if dim == "2.5D":  # input-major, neighbouring slices: nbseg's channel order
        assert channels[:3] == ["input_0 z-1", "input_0 z+0", "input_0 z+1"]
        gains = rdf["inputs"][0]["preprocessing"][1]["kwargs"]["gain"]
        assert gains == pytest.approx([1 / 300] * 3 + [1 / 10] * 3)
    else:
        assert [a["id"] for a in rdf["inputs"][0]["axes"][2:]] == ["z", "y", "x"]
    _passed(bioimageio_core.test_model(path, weight_format="torchscript"))
    back = import_bioimageio(path)
    image = [
        xr.DataArray(np.random.default_rng(i).uniform(400, 700, (8, 24, 24)), dims=("z", "y", "x"))
        for i in range(m.spec.input_count)
    ]
    assert np.array_equal(nbseg.segment(m, image).values, nbseg.segment(back, image).values)


# -- foreign packages ------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self, cin=1, cout=2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, cout, 1))

    def forward(self, x):
        return self.body(x)


class _NoChannel(nn.Module):
    """(B, Y, X) in, one channel (B, 1, Y, X) out: a foreground logit."""

    def __init__(self):
        super().__init__()
        self.net = _Net(1, 1)

    def forward(self, x):
        return self.net(x.unsqueeze(1))


def _space_in(a):
    return v.SpaceInputAxis(id=v.AxisId(a), size=v.ParameterizedSize(min=16, step=8))


def _space_out(a):
    ref = v.SizeReference(tensor_id=v.TensorId("raw"), axis_id=v.AxisId(a))
    return v.SpaceOutputAxis(id=v.AxisId(a), size=ref)


def _foreign_package(folder, net, in_axes, out_axes, pre, post, x, onnx=False):
    """A package written with bioimageio.spec alone, as another tool would."""
    folder.mkdir(exist_ok=True)
    torch.jit.script(net).save(str(folder / "net.pt"))
    np.save(folder / "in.npy", x)
    with torch.no_grad():
        np.save(folder / "out.npy", net(torch.from_numpy(x)).numpy())
    if onnx:
        (folder / "net.onnx").write_bytes(b"not really onnx")
        weights = v.WeightsDescr(
            onnx=v.OnnxWeightsDescr(source=folder / "net.onnx", opset_version=17)
        )
    else:
        weights = v.WeightsDescr(
            torchscript=v.TorchscriptWeightsDescr(
                source=folder / "net.pt", pytorch_version=v.Version("2.0")
            )
        )
    descr = v.ModelDescr(
        name="foreign model",
        description="made elsewhere",
        authors=[v.Author(name="someone")],
        cite=[],
        license=v.LicenseId("MIT"),
        inputs=[
            v.InputTensorDescr(
                id=v.TensorId("raw"),
                axes=in_axes,
                test_tensor=v.FileDescr(source=folder / "in.npy"),
                preprocessing=pre,
            )
        ],
        outputs=[
            v.OutputTensorDescr(
                id=v.TensorId("out"),
                axes=out_axes,
                test_tensor=v.FileDescr(source=folder / "out.npy"),
                postprocessing=post,
            )
        ],
        weights=weights,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bioimageio_spec.save_bioimageio_package(descr, output_path=folder / "pkg.zip")


@pytest.mark.slow
def test_foreign_torchscript_package_segments_and_fine_tunes(tmp_path, offline):
    torch.manual_seed(0)
    net = _Net()
    path = _foreign_package(
        tmp_path / "a",
        net,
        [v.BatchAxis(), v.ChannelAxis(channel_names=["em"]), _space_in("y"), _space_in("x")],
        [
            v.BatchAxis(),
            v.ChannelAxis(channel_names=["bg", "cell"]),
            _space_out("y"),
            _space_out("x"),
        ],
        [
            v.FixedZeroMeanUnitVarianceDescr(
                kwargs=v.FixedZeroMeanUnitVarianceKwargs(mean=500.0, std=100.0)
            )
        ],
        [v.SoftmaxDescr()],
        np.random.default_rng(0).uniform(400, 700, (1, 1, 40, 40)).astype(np.float32),
    )
    m = import_bioimageio(path)
    assert m.class_names == ["bg", "cell"] and m.spec.input_names == ["em"]
    assert m.spec.architecture == "bioimageio:foreign model" and m.trained
    assert m.normalisation.low == pytest.approx([500.0])
    assert m.normalisation.high == pytest.approx([600.0])
    assert m.params.patch_size == (40, 40)  # the test tensor's size: a valid one
    image, labels, _ = blobs((2, 40, 40), labelled=(0, 1))
    got = nbseg.segment(m, image, window=40, probabilities=True)
    x = (torch.from_numpy(image.values[:, None]) - 500.0) / (100.0 + 1e-6)
    with torch.no_grad():
        want = net(x).softmax(1).numpy().transpose(1, 0, 2, 3)
    assert np.allclose(got.values, want, atol=1e-5)
    params = nbseg.TrainingParams(patch_size=40, batch_size=2, epochs=2, learning_rate=1e-2)
    result = nbseg.train(m, nbseg.TrainingSet(image, labels), params, validation=0)
    losses = result.metric("loss")
    assert result.status == "completed" and losses[-1] < losses[0]


def test_foreign_one_channel_sigmoid_and_data_dependent_normalisation(tmp_path, offline):
    torch.manual_seed(0)
    net = _NoChannel()
    path = _foreign_package(
        tmp_path / "b",
        net,
        [v.BatchAxis(), _space_in("y"), _space_in("x")],
        [v.BatchAxis(), v.ChannelAxis(channel_names=["nucleus"]), _space_out("y"), _space_out("x")],
        [
            v.ScaleRangeDescr(
                kwargs=v.ScaleRangeKwargs(
                    axes=[v.AxisId("y"), v.AxisId("x")], min_percentile=1, max_percentile=99
                )
            )
        ],
        [v.SigmoidDescr()],
        np.random.default_rng(0).random((1, 32, 32), dtype=np.float32),
    )
    with pytest.warns(UserWarning, match="'scale_range' was not kept"):
        m = import_bioimageio(path)
    assert m.class_names == ["background", "nucleus"] and not m.trained
    m.normalisation = nbseg.Normalisation(low=[0.0], high=[1.0])
    image = xr.DataArray(np.random.default_rng(1).random((1, 32, 32)), dims=("z", "y", "x"))
    labels = nbseg.segment(m, image, window=32)
    with torch.no_grad():
        logit = net(torch.from_numpy(image.values.astype(np.float32)))[:, 0].numpy()
    assert np.array_equal(labels.values, (logit > 0).astype(np.int16))


# -- bad input -------------------------------------------------------------------------------
def test_bad_packages_are_named(tmp_path, trained, offline):
    with pytest.raises(InputError, match="does not exist"):
        import_bioimageio(tmp_path / "missing.zip")
    (tmp_path / "text.zip").write_text("hello")
    with pytest.raises(InputError, match=r"text\.zip.*not a \.zip file"):
        import_bioimageio(tmp_path / "text.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("data.txt", "x")
    with pytest.raises(InputError, match=r"other\.zip.*no rdf\.yaml"):
        import_bioimageio(tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as zf:
        zf.writestr("rdf.yaml", "type: model\nformat_version: 0.5.4\nname: x\n")
    with pytest.raises(InputError, match=r"broken\.zip.*invalid bioimage\.io description"):
        import_bioimageio(tmp_path / "broken.zip")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        zf.writestr("rdf.yaml", "type: dataset\nformat_version: 0.3.0\nname: some data\n")
    with pytest.raises(InputError, match=r"data\.zip"):
        import_bioimageio(tmp_path / "data.zip")
    onnx_only = _foreign_package(
        tmp_path / "c",
        _Net(),
        [v.BatchAxis(), v.ChannelAxis(channel_names=["em"]), _space_in("y"), _space_in("x")],
        [v.BatchAxis(), v.ChannelAxis(channel_names=["a", "b"]), _space_out("y"), _space_out("x")],
        [],
        [],
        np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32),
        onnx=True,
    )
    with pytest.raises(InputError, match=r"pkg\.zip.*\['onnx'\].*TorchScript"):
        import_bioimageio(onnx_only)
    with pytest.raises(InputError, match="path must be"):
        import_bioimageio(None)


def test_bad_export_arguments(trained, tmp_path):
    m, _, _ = trained
    with pytest.raises(InputError, match="untrained"):
        export_bioimageio(nbseg.generate_model(nbseg.ModelSpec()), tmp_path / "u.zip")
    with pytest.raises(InputError, match="SPDX"):
        export_bioimageio(m, tmp_path / "l.zip", license="my own license")
    with pytest.raises(InputError, match=r"\.zip file"):
        export_bioimageio(m, tmp_path / "m.pt")
    with pytest.raises(InputError, match="needs a name"):
        export_bioimageio(m, tmp_path / "a.zip", authors=[{"affiliation": "lab"}])
    with pytest.raises(InputError, match="doi"):
        export_bioimageio(m, tmp_path / "c.zip", cite=[{"text": "a paper"}])
    with pytest.raises(InputError, match="sample has 2"):
        export_bioimageio(m, tmp_path / "s.zip", sample=[np.zeros((8, 8))] * 2)
    (tmp_path / "exists.zip").write_bytes(b"old")
    with pytest.raises(InputError, match="exists"):
        export_bioimageio(m, tmp_path / "exists.zip")
    assert (tmp_path / "exists.zip").read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_export_bioimageio(trained, tmp_path, capsys, offline):
    m, image, _ = trained
    model_file = m.save(tmp_path / "blobs.nbseg")
    np.save(tmp_path / "sample.npy", image.values)
    out = tmp_path / "blobs.zip"
    argv = ["export", str(model_file), "--format", "bioimageio", str(out), "--author", "Ada"]
    assert main([*argv, "--license", "MIT", "--sample", str(tmp_path / "sample.npy")]) == 0
    assert "bioimage.io package" in capsys.readouterr().out
    assert _rdf(out)["authors"] == [{"name": "Ada"}]
    assert np.array_equal(_npy(out, "test_input.npy")[0, 0], image.values[1])  # centre crop
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert main(["export", str(model_file), "--format", "onnx", "x.onnx", "--author", "A"]) == 1
    assert "bioimageio only" in capsys.readouterr().err


def test_library_exports_bioimageio(trained, tmp_path, offline):
    from nbseg.store.library import ModelLibrary

    m, _, _ = trained
    lib = ModelLibrary(tmp_path / "lib")
    lib.save(m, "blobs")
    (tmp_path / "out").mkdir()
    path = lib.export_bioimageio("blobs", tmp_path / "out", authors="Ada")
    assert path == tmp_path / "out" / "blobs.zip"
    assert import_bioimageio(path).class_names == m.class_names
    with pytest.raises(InputError, match="exists"):
        lib.export_bioimageio("blobs", path)


def test_missing_dependency_names_the_extra(trained, tmp_path, monkeypatch):
    import sys

    from nbseg.errors import ModelFileError

    monkeypatch.setitem(sys.modules, "bioimageio.spec.model", None)
    with pytest.raises(ModelFileError, match=r"pip install 'nbseg\[bioimageio\]'"):
        export_bioimageio(trained[0], tmp_path / "m.zip")
    (tmp_path / "p.zip").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "p.zip", "w") as zf:
        zf.writestr("rdf.yaml", "type: model\n")
    with pytest.raises(ModelFileError, match=r"nbseg\[bioimageio\]"):
        import_bioimageio(tmp_path / "p.zip")
    assert not (tmp_path / "m.zip").exists()
