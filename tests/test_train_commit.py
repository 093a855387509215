"""train() in three steps: prepare (no side effect) → fit → commit; failures and interrupts
leave the model as of its last completed epoch (or as it was)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import nbseg
from nbseg.training.run import TrainingInterrupted, prepare

from .helpers import blobs

TINY = {"filters": 4, "depth": 2}


def _setup(epochs=3):
    image, labels, _ = blobs((6, 40, 40), labelled=(1, 3, 4))
    spec = nbseg.ModelSpec(class_count=2, parameters=TINY)
    model = nbseg.generate_model(spec, seed=0)
    params = nbseg.TrainingParams(
        patch_size=32, batch_size=4, epochs=epochs, checkpoint_cache_mb=4, precision="32"
    )
    return model, nbseg.TrainingSet(image, labels), params


def _state(model):
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Raise(nbseg.TrainingListener):
    """Keeps the weights at each epoch end; raises ``error`` in batch 2 of ``epoch``."""

    def __init__(self, model, epoch, error):
        self.model, self.epoch, self.error = model, epoch, error
        self.states = {}

    def on_epoch_end(self, record, feedback):
        self.states[record["epoch"]] = _state(self.model)

    def on_batch_end(self, progress):
        if progress["epoch"] == self.epoch and progress["batch"] == 2:
            raise self.error


def test_prepare_changes_nothing_on_the_model():
    model, ts, params = _setup()
    before = _state(model)
    plan = prepare(model, ts, params, 0.25)
    assert plan.normalisation is not None and model.normalisation is None
    assert model.history == [] and model.params is None
    assert _same(before, _state(model))


def test_listener_error_in_first_epoch_leaves_model_exactly_as_it_was():
    model, ts, params = _setup()
    before, names = _state(model), list(model.class_names)
    listener = _Raise(model, 1, ValueError("listener bug"))
    with pytest.raises(nbseg.TrainingError, match=r"^ValueError: listener bug") as info:
        nbseg.train(model, ts, params, 0.25, callbacks=[listener], feedback=False)
    assert info.value.result.status == "failed"
    assert isinstance(info.value.__cause__, ValueError)
    assert _same(before, _state(model))
    assert model.normalisation is None and model.history == [] and not model.trained
    assert model.class_names == names


def test_listener_error_later_keeps_the_last_completed_epoch():
    model, ts, params = _setup(epochs=3)
    listener = _Raise(model, 2, RuntimeError("boom"))
    with pytest.raises(nbseg.TrainingError, match="boom"):
        nbseg.train(model, ts, params, 0.25, callbacks=[listener], feedback=False)
    assert [r["epoch"] for r in model.history] == [1]
    assert model.normalisation is not None and model.params == params
    assert _same(listener.states[1], _state(model))
    # the network is back in its standard layout and mode
    assert all(p.is_contiguous() for p in model.network.parameters())


def test_interrupt_behaves_like_stop_and_raises_with_the_result():
    model, ts, params = _setup(epochs=3)
    params = params.replace(restore_best=False)
    listener = _Raise(model, 2, KeyboardInterrupt())
    with pytest.raises(TrainingInterrupted) as info:
        nbseg.train(model, ts, params, 0.25, callbacks=[listener], feedback=False)
    assert isinstance(info.value, KeyboardInterrupt)
    result = info.value.result
    assert result.status == "stopped" and result.extra["interrupted"]
    assert [r["epoch"] for r in model.history] == [1] and model.trained
    assert _same(listener.states[1], _state(model))


def test_failed_fine_tune_keeps_the_earlier_training():
    model, ts, params = _setup(epochs=1)
    nbseg.train(model, ts, params, 0.25, feedback=False)
    trained, norm = _state(model), model.normalisation
    listener = _Raise(model, 2, ValueError("x"))  # epoch 2 = the first of the fine-tune
    with pytest.raises(nbseg.TrainingError):
        nbseg.train(model, ts, params.replace(epochs=2), 0.25, callbacks=[listener])
    assert len(model.history) == 1 and model.normalisation is norm
    assert _same(trained, _state(model))


@pytest.mark.slow
def test_cli_sigint_after_first_epoch_saves_completed_epochs(tmp_path):
    config = {
        "model": {"class_count": 2, "parameters": {"filters": 8, "depth": 2}},
        "training_sets": [
            {"dataset": "fibres", "dataset_options": {"shape": [6, 64, 64], "labelled_slices": 3}}
        ],
        "validation": 0.25,
        "params": {"patch_size": 32, "batch_size": 2, "epochs": 200, "precision": "32"},
        "output": "model.nbseg",
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbseg.cli", "train", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 240
    seen = []
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("epoch 1/"):
            break
    assert any(s.startswith("epoch 1/") for s in seen), seen
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("nbseg")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err
    model = nbseg.load_model(tmp_path / "model.nbseg")
    assert model.trained and len(model.history) >= 1
