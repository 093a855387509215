"""Unlabelled images in training configs and ``nbseg train`` (issue 20): ``unlabelled:`` (a list
of image paths, a list of lists for several inputs) and ``--unlabelled PATH ...`` reach
``nbseg.train(..., unlabelled=)``; bad paths and wrong input counts are nbseg errors naming
the key."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import nbseg
from nbseg.cli import main
from nbseg.config import ConfigError, TrainingConfig, load_config

from .helpers import blobs

CONFIG = {
    "model": {
        "architecture": "unet",
        "class_count": 2,
        "input_dimension": "2D",
        "parameters": {"filters": 4, "depth": 2},
    },
    "training_sets": [{"input": "image.npy", "output": "labels.tif"}],
    "validation": 0.25,
    "params": {"patch_size": 32, "batch_size": 4, "epochs": 1, "checkpoint_cache_mb": 0},
    "output": "out/model.nbseg",
}


def _files(folder: Path) -> None:
    image, labels, _ = blobs((4, 32, 32), labelled=(1, 2))
    np.save(folder / "image.npy", image.values)
    tifffile.imwrite(folder / "labels.tif", labels.values, photometric="minisblack")
    more, _, _ = blobs((3, 40, 40), seed=4)
    np.save(folder / "more.npy", more.values)
    tifffile.imwrite(folder / "more.tif", more.values, photometric="minisblack")


def _config(folder: Path, **changes) -> Path:
    _files(folder)
    p = folder / "train.yaml"
    p.write_text(yaml.safe_dump({**CONFIG, **changes}, sort_keys=False))
    return p


def _run(cfg: TrainingConfig) -> nbseg.TrainingResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cfg.run(feedback=False)


@pytest.mark.slow
def test_a_config_with_unlabelled_paths_trains_on_pseudo_labels(tmp_path):
    cfg = load_config(_config(tmp_path, unlabelled=["more.npy", "more.tif"]))
    assert cfg.unlabelled == [["more.npy"], ["more.tif"]]
    images = cfg.build_unlabelled(1)
    assert [[im.shape for im in inputs] for inputs in images] == [[(3, 40, 40)]] * 2
    result = _run(cfg)
    row = result.history[-1]
    assert result.status == "completed" and "pseudo_loss" in row
    assert 0.0 <= row["pseudo_share"] <= 1.0
    # without it: no pseudo-labels (semi_supervised auto)
    plain = _run(load_config(_config(tmp_path)))
    assert "pseudo_loss" not in plain.history[-1]


def test_unlabelled_round_trips_through_yaml_and_from_objects(tmp_path):
    path = _config(
        tmp_path,
        unlabelled=["more.npy", {"path": "more.tif"}, ["more.npy"]],
    )
    cfg = load_config(path)
    assert cfg.unlabelled == [["more.npy"], [{"path": "more.tif"}], ["more.npy"]]
    d = cfg.to_dict()
    assert d["unlabelled"] == ["more.npy", {"path": "more.tif"}, "more.npy"]
    assert TrainingConfig.from_dict(d, tmp_path).unlabelled == cfg.unlabelled
    assert "unlabelled" not in load_config(_config(tmp_path)).to_dict()  # none: no key

    # in-memory images (what the Train tab holds) are written next to the config
    more, _, _ = blobs((3, 40, 40), seed=4)
    out = tmp_path / "run"
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, parameters={"filters": 4})
    ts = nbseg.TrainingSet(*blobs((4, 32, 32))[:2])
    made = TrainingConfig.from_objects(
        spec, None, ts, unlabelled=[more, tmp_path / "more.npy"], data_dir=out
    )
    made.to_yaml(out / "train.yaml")
    again = load_config(out / "train.yaml")
    (a,), (b,) = again.build_unlabelled(1)
    np.testing.assert_array_equal(a.values, more.values)
    assert a.dims == more.dims and list(a["y"].values) == list(more["y"].values)
    assert b.shape == (3, 40, 40)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (["more.xyz"], r"train.yaml': unlabelled\[0\]: 'more.xyz' is not a supported file"),
        ([["more.npy", 3]], r"unlabelled\[0\]\[1\]: expected a path"),
        ([[]], r"unlabelled\[0\]: an empty list"),
        (7, r"unlabelled must be a list of image paths"),
    ],
)
def test_bad_unlabelled_entries_are_config_errors_naming_the_key(tmp_path, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(_config(tmp_path, unlabelled=value))


def test_a_missing_file_or_a_wrong_input_count_is_named_before_training(tmp_path):
    cfg = load_config(_config(tmp_path, unlabelled=["more.npy", "absent.npy"]))
    with pytest.raises(nbseg.InputError, match=r"unlabelled\[1\]: .*absent\.npy"):
        cfg.run(feedback=False)
    cfg = load_config(_config(tmp_path, unlabelled=[["more.npy", "more.tif"]]))
    with pytest.raises(ConfigError) as err:
        cfg.run(feedback=False)
    text = str(err.value)
    assert "unlabelled[0] ('more.npy', 'more.tif') has 2 input(s) but the model takes 1" in text
    assert "train.yaml" in text


# -- the command line --------------------------------------------------------------------
@pytest.mark.slow
def test_nbseg_train_unlabelled_flag_trains_with_them(tmp_path, capsys, monkeypatch):
    path = _config(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative flag paths: from the working directory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", str(path), "--unlabelled", "more.npy", "more.tif"])
    assert code == 0, capsys.readouterr().err
    model = nbseg.load_model(tmp_path / "out" / "model.nbseg")
    assert "pseudo_loss" in model.history[-1]


def test_nbseg_train_unlabelled_flag_errors_are_one_line_naming_the_flag(tmp_path, capsys):
    path = _config(tmp_path)
    assert main(["train", str(path), "--unlabelled", str(tmp_path / "more.xyz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nbseg: error: --unlabelled[0]: ") and "not a supported file" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["train", str(path), "--unlabelled", str(tmp_path / "absent.npy")]) == 1
    err = capsys.readouterr().err
    assert "--unlabelled[0]" in err and "absent.npy" in err, err
    two = f"{tmp_path / 'more.npy'},{tmp_path / 'more.tif'}"
    assert main(["train", str(path), "--unlabelled", two]) == 1
    err = capsys.readouterr().err
    assert "--unlabelled[0]" in err and "has 2 input(s) but the model takes 1" in err, err
    assert not (tmp_path / "out" / "model.nbseg").exists()  # nothing trained


def test_a_config_error_in_unlabelled_is_one_line_from_the_cli(tmp_path, capsys):
    path = _config(tmp_path, unlabelled=[["more.npy", "more.tif"]])
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert "unlabelled[0]" in err and "has 2 input(s) but the model takes 1" in err, err
    assert len(err.strip().splitlines()) == 1
