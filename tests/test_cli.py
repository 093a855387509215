"""Training configs and the ``nbseg`` command line (train, segment, models, export, DDP)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

import nbseg
from nbseg.cli import main
from nbseg.config import ConfigError, TrainingConfig, TrainingSetConfig, load_config
from nbseg.store.library import ModelLibrary

from .helpers import blobs, count_feedback_predictions

TINY_CONFIG = {
    "model": {
        "architecture": "unet",
        "class_count": 2,
        "input_dimension": "2D",
        "parameters": {"filters": 8, "depth": 2},
    },
    "training_sets": [
        {"dataset": "fibres", "dataset_options": {"shape": [4, 48, 48], "labelled_slices": 2}}
    ],
    "validation": 0.25,
    "params": {"patch_size": 32, "batch_size": 4, "epochs": 2, "checkpoint_cache_mb": 8},
    "output": "out/model.nbseg",
}


def write_config(folder: Path, data=None, name="train.yaml") -> Path:
    p = folder / name
    p.write_text(yaml.safe_dump(data if data is not None else TINY_CONFIG, sort_keys=False))
    return p


def write_blob_files(folder: Path):
    image, labels, truth = blobs((4, 32, 32), labelled=(1, 2))
    np.save(folder / "image.npy", image.values)
    tifffile.imwrite(folder / "labels.tif", labels.values)
    np.save(folder / "mask.npy", np.ones(image.shape, bool))
    return image, labels, truth


# -- configs ------------------------------------------------------------------------------
def test_config_round_trip(tmp_path):
    write_blob_files(tmp_path)
    data = dict(TINY_CONFIG)
    data["training_sets"] = [
        TINY_CONFIG["training_sets"][0],
        {"input": "image.npy", "output": "labels.tif", "mask": "mask.npy", "name": "blobs"},
    ]
    data["feedback"] = {"training_set": 1, "slice_index": 1, "box": [0, 16, 0, 16]}
    data["trainer"] = {"devices": 2, "strategy": "ddp", "accelerator": "cpu"}
    cfg = load_config(write_config(tmp_path, data))
    assert cfg.spec.parameters == {"filters": 8, "depth": 2} and cfg.params.epochs == 2
    assert cfg.trainer.trainer_kwargs() == {"devices": 2, "accelerator": "cpu", "strategy": "ddp"}
    again = TrainingConfig.from_yaml(cfg.to_yaml(), tmp_path)
    assert again.to_dict() == cfg.to_dict()
    sets = again.build_training_sets()
    assert [s.name for s in sets] == ["fibres", "blobs"]
    assert sets[1].mask is not None and sets[1].shape == (4, 32, 32)
    assert again.feedback.box == (0, 16, 0, 16)


def test_from_objects_writes_in_memory_data(tmp_path):
    image, labels, _ = blobs((4, 32, 32), labelled=(1, 2))
    ts = nbseg.TrainingSet(image, labels, mask=image > 0, name="painted")
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, parameters={"filters": 8})
    params = nbseg.TrainingParams(patch_size=32, epochs=1)
    cfg = TrainingConfig.from_objects(
        spec, params, ts, "membranes", output="m.nbseg", data_dir=tmp_path / "run"
    )
    cfg.to_yaml(tmp_path / "run" / "train.yaml")
    back = load_config(tmp_path / "run" / "train.yaml")
    assert back.to_dict() == cfg.to_dict() and back.training_sets[1].dataset == "membranes"
    rebuilt = back.build_training_sets()[0]
    assert rebuilt.name == "painted"
    np.testing.assert_array_equal(rebuilt.input_list[0].values, image.values)
    np.testing.assert_array_equal(rebuilt.output.values, labels.values)
    np.testing.assert_array_equal(rebuilt.input_list[0].coords["y"], image.coords["y"])
    assert rebuilt.output.attrs["class_names"] == ["background", "blob"]
    # a trained model becomes a model_file to fine-tune
    model = nbseg.generate_model(spec)
    model.params = params
    cfg2 = TrainingConfig.from_objects(model, None, ts, data_dir=tmp_path / "run2")
    assert cfg2.spec is None and cfg2.model_file == "model.nbseg"
    assert (tmp_path / "run2" / "model.nbseg").is_file() and cfg2.params.patch_size == 32
    with pytest.raises(ConfigError, match="data_dir"):
        TrainingConfig.from_objects(spec, params, ts)


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"epochz": 3}, r"unknown key\(s\) \['epochz'\]"),
        ({"params": {"epochs": 0}}, r"params: TrainingParams.epochs=0"),
        ({"params": {"batchsize": 2}}, r"(?i)params: Unknown training parameters \['batchsize'\]"),
        ({"model": {"architecture": "nope"}}, r"model: Unknown architecture 'nope'"),
        ({"model_file": "x.nbseg"}, "exactly one of 'model'"),
        ({"training_sets": []}, "training_sets: give a non-empty list"),
        ({"training_sets": [{"dataset": "cats"}]}, r"training_sets\[0\].dataset: unknown sample"),
        ({"training_sets": [{"input": "a.txt", "output": "b.npy"}]}, r"inputs\[0\]: 'a.txt'"),
        ({"training_sets": [{"input": "a.npy"}]}, r"training_sets\[0\]: no 'output'"),
        ({"validation": 1.5}, r"validation=1.5"),
        ({"trainer": {"strategy": "magic"}}, r"trainer.strategy='magic'"),
        ({"trainer": {"devices": 0}}, r"trainer.devices=0"),
        ({"feedback": {"box": [1, 2]}}, r"feedback.box"),
    ],
)
def test_bad_config_errors_name_file_and_key(tmp_path, change, pattern, capsys):
    data = {**TINY_CONFIG, **change}
    path = write_config(tmp_path, data, "bad.yaml")
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert "bad.yaml" in str(info.value)
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbseg: error:") and "bad.yaml" in err


def test_missing_data_file_and_yaml_errors(tmp_path, capsys):
    data = {**TINY_CONFIG, "training_sets": [{"input": "none.npy", "output": "none.npy"}]}
    cfg = load_config(write_config(tmp_path, data))
    with pytest.raises(nbseg.InputError, match=r"training_sets\[0\].inputs\[0\]: No such file"):
        cfg.build_training_sets()
    (tmp_path / "broken.yaml").write_text("model: [unclosed")
    assert main(["train", str(tmp_path / "broken.yaml")]) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "absent.yaml")]) == 1
    assert "No config file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        main(["train", "x.yaml", "--strategy", "warp"])
    assert ex.value.code == 2


# -- train, segment, models, export --------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`nbseg train` (in process) on files: a loadable model and its data."""
    folder = tmp_path_factory.mktemp("cli")
    image, _labels, truth = write_blob_files(folder)
    data = {
        **TINY_CONFIG,
        "training_sets": [{"input": "image.npy", "output": "labels.tif"}],
        "params": {**TINY_CONFIG["params"], "epochs": 1},
    }
    path = write_config(folder, data)
    assert main(["train", str(path), "--epochs", "2", "--out", str(folder / "m")]) == 0
    return folder, image, truth


@pytest.mark.slow
def test_train_writes_loadable_model(trained, capsys):
    folder, image, _ = trained
    model = nbseg.load_model(folder / "m.nbseg")
    assert model.trained and [r["epoch"] for r in model.history] == [1, 2]  # --epochs won
    assert model.spec.name == "m" and model.class_names[1] == "class 1"
    out = nbseg.segment(model, image)
    assert out.shape == image.shape


@pytest.mark.slow
def test_cli_training_skips_the_feedback_prediction(tmp_path, monkeypatch):
    calls = count_feedback_predictions(monkeypatch)
    path = write_config(tmp_path, {**TINY_CONFIG, "params": {**TINY_CONFIG["params"]}})
    assert main(["train", str(path), "--epochs", "1"]) == 0
    assert calls == [] and (tmp_path / "out" / "model.nbseg").is_file()
    assert load_config(path).run().feedback is not None and calls == [1, 1]  # API: 2 epochs


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_train_on_a_missing_gpu_is_a_one_line_error(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["train", str(path), "--accelerator", "gpu", "--devices", "4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbseg: error:") and "gpu" in err.lower()
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.slow
def test_segment_command_npy_tif_and_mask(trained, capsys):
    folder, image, _ = trained
    model = nbseg.load_model(folder / "m.nbseg")
    want = nbseg.segment(model, image).values
    m = str(folder / "m.nbseg")
    assert main(["segment", m, str(folder / "image.npy"), str(folder / "seg.npy")]) == 0
    assert "segmented (4, 32, 32)" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(folder / "seg.npy"), want)
    assert main(["segment", m, str(folder / "image.npy"), str(folder / "seg.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(folder / "seg.tif"), want)
    half = np.zeros(image.shape, bool)
    half[:, :16] = True
    np.save(folder / "half.npy", half)
    args = ["segment", m, str(folder / "image.npy"), str(folder / "seg_m.npy")]
    assert main([*args, "--mask", str(folder / "half.npy"), "--overlap", "0.5"]) == 0
    masked = np.load(folder / "seg_m.npy")
    assert (masked[~half] == -1).all() and (masked[half] >= 0).all()
    assert main(["segment", m, str(folder / "image.npy"), str(folder / "tta.npy"), "--tta"]) == 0
    tta = nbseg.segment(model, image, tta=True).values
    np.testing.assert_array_equal(np.load(folder / "tta.npy"), tta)
    assert main(["segment", m, str(folder / "image.npy"), str(folder / "seg.png")]) == 1
    assert main(["segment", "nothing", str(folder / "image.npy"), str(folder / "s.npy")]) == 1
    assert "No model file 'nothing'" in capsys.readouterr().err


@pytest.mark.slow
def test_segment_command_zarr(trained):
    import xarray as xr

    folder, image, _ = trained
    model = nbseg.load_model(folder / "m.nbseg")
    m = str(folder / "m.nbseg")
    assert main(["segment", m, str(folder / "image.npy"), str(folder / "seg.zarr")]) == 0
    ds = xr.open_zarr(folder / "seg.zarr")
    (var,) = list(ds.data_vars)
    np.testing.assert_array_equal(ds[var].values, nbseg.segment(model, image).values)


@pytest.mark.slow
def test_models_and_export_commands(trained, tmp_path, capsys):
    folder, *_ = trained
    root = str(tmp_path / "lib")
    lib = ModelLibrary(root)

    def run(*args):
        return main(["models", "--root", root, *args])

    assert run("import", str(folder / "m.nbseg"), "first") == 0
    assert run("duplicate", "first", "second") == 0 and run("rename", "second", "third") == 0
    assert lib.names() == ["first", "third"]
    capsys.readouterr()
    assert run("list") == 0
    out = capsys.readouterr().out
    assert "first" in out and "third" in out and "2 epochs" in out
    assert run("info", "first") == 0 and '"architecture": "unet"' in capsys.readouterr().out
    assert run("delete", "third") == 0 and lib.names() == ["first"]
    assert run("trash") == 0 and "third" in capsys.readouterr().out
    assert run("restore", "third") == 0 and lib.names() == ["first", "third"]
    assert run("export", "first", str(tmp_path / "x.nbseg")) == 0
    assert nbseg.load_model(tmp_path / "x.nbseg").spec.name == "first"
    assert run("rename", "missing", "y") == 1
    assert "No model 'missing'" in capsys.readouterr().err
    (tmp_path / "evil.nbseg").write_bytes(b"\x80\x04K\x01.")  # a pickle
    assert run("import", str(tmp_path / "evil.nbseg")) == 1
    # export by library name and by file, both checked against the network
    for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
        target = str(tmp_path / f"net{suffix}")
        assert main(["export", "first", "--format", fmt, target, "--root", root]) == 0
        assert Path(target).is_file() and "checked" in capsys.readouterr().out


# -- DDP: two processes through Lightning ----------------------------------------------------
def _nbseg_command():
    exe = Path(sys.executable).parent / "nbseg"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "nbseg.cli"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_two_cpu_processes(tmp_path):
    path = write_config(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    cmd = [*_nbseg_command(), "train", str(path), "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.run(
        [*cmd, "--accelerator", "cpu", "--out", str(tmp_path / "ddp.nbseg")],
        capture_output=True,
        text=True,
        env=env,
        timeout=580,
        cwd=tmp_path,
    )
    wall = time.perf_counter() - t0
    print(f"DDP 2-process CPU training wall time: {wall:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "world size 2" in out, out
    # only rank 0 reports: one line per epoch
    assert out.count("epoch 1/2") == 1 and out.count("epoch 2/2") == 1, out
    model = nbseg.load_model(tmp_path / "ddp.nbseg")
    assert model.trained and len(model.history) == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_training_set_config_shorthand():
    assert TrainingSetConfig.from_dict("fibres", "k", None).dataset == "fibres"
    with pytest.raises(ConfigError, match="either 'dataset'"):
        TrainingSetConfig.from_dict({"dataset": "fibres", "input": "a.npy"}, "k", "f.yaml")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_notebook_strategy_hands_back_weights_and_history():
    """The notebook-safe strategy forks the workers: rank 0's weights and history return."""
    import torch

    image, labels, _ = blobs((4, 48, 48), labelled=(1, 2))
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=2, parameters={"filters": 8, "depth": 2}
    )
    model = nbseg.generate_model(spec)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    result = nbseg.train(
        model,
        nbseg.TrainingSet(image, labels),
        nbseg.TrainingParams(patch_size=32, batch_size=4, epochs=2),
        validation=0.25,
        trainer_kwargs={"accelerator": "cpu", "devices": 2, "strategy": "ddp_notebook"},
    )
    assert result.status == "completed" and result.extra["world_size"] == 2
    assert [r["epoch"] for r in model.history] == [1, 2] and model.trained
    assert all(np.isfinite(r["loss"]) for r in model.history)
    assert any(not torch.equal(before[k], v) for k, v in model.network.state_dict().items())
