"""The data fingerprint and the training plan made from it (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest

import nbseg
import nbseg.ui
from nbseg.training.fingerprint import fingerprint, plan_training

from .helpers import blobs

TINY = {"filters": 8, "depth": 2}


def _spec(classes=2, dim="2D"):
    return nbseg.ModelSpec(class_count=classes, input_dimension=dim, parameters=TINY)


def test_fingerprint_counts_what_is_labelled():
    image, labels, _ = blobs((6, 48, 64), labelled=(1, 4))
    fp = fingerprint(nbseg.TrainingSet(image, labels), _spec())
    assert fp.shapes == ((6, 48, 64),) and fp.labelled_slices == 2
    assert fp.labelled_voxels == 2 * 48 * 64 == sum(fp.class_voxels)
    assert fp.class_voxels[1] == int((labels.values == 1).sum())
    assert fp.rarest[0] == "blob" and 0 < fp.rarest[1] < 0.5


def test_plan_fits_the_data_and_scales_the_epochs_with_it():
    small_img, small_lab, _ = blobs((6, 48, 48), labelled=(1,))
    plan = plan_training(nbseg.TrainingSet(small_img, small_lab), _spec(), step_seconds=0.1)
    p = plan.params
    assert p.patch_size == 48 and p.batch_size == 8 and p.max_minutes == 5.0
    assert plan.steps_per_epoch == 1 and p.epochs == 500  # 3000 steps, capped
    big_img, big_lab, _ = blobs((12, 256, 256), labelled=tuple(range(12)))
    big = plan_training(nbseg.TrainingSet(big_img, big_lab), _spec(), step_seconds=0.1)
    factor = nbseg.TrainingParams().augmentation.factor  # augmented copies per patch
    # 12 labelled slices x 4 patches, 80 % for training (validation 0.2), x factor / batch 8
    assert big.params.patch_size == 128
    assert big.steps_per_epoch == -(-round(12 * 4 * 0.8) * factor // 8)
    assert big.params.epochs == 3000 // big.steps_per_epoch  # same budget, more data per epoch
    short = plan_training(
        nbseg.TrainingSet(big_img, big_lab), _spec(), step_seconds=0.1, budget_minutes=0.5
    )
    assert short.params.epochs == 300 // big.steps_per_epoch and short.params.max_minutes == 0.5
    sparse_lab = big_lab.copy(data=np.full(big_lab.shape, -1, np.int16))
    sparse_lab[:, 10:14, 10:60] = 0  # a stroke in one corner of every slice: 1 patch each
    sparse = plan_training(nbseg.TrainingSet(big_img, sparse_lab), _spec(), step_seconds=0.1)
    assert sparse.steps_per_epoch == -(-round(12 * 0.8) * factor // 8)
    assert sparse.params.epochs > big.params.epochs  # fewer patches: more epochs, same time
    assert set(plan.reasons) == {
        "patch_size",
        "batch_size",
        "epochs",
        "max_minutes",
        "class_balance",
    }
    assert "per step" in plan.describe()


def test_plan_oversamples_a_rare_class_and_keeps_the_rest():
    image, _, truth = blobs((4, 64, 64), labelled=())
    labels = truth.copy(data=np.full(truth.shape, -1, np.int16))
    labels[1] = 0
    labels[1, 30:33, 30:33] = 1  # 9 of 4096 voxels
    base = nbseg.TrainingParams(learning_rate=1e-3, loss="focal")
    plan = plan_training(nbseg.TrainingSet(image, labels), _spec(), base, step_seconds=0.2)
    assert plan.params.class_balance == 0.5 and "0.22%" in plan.reasons["class_balance"]
    assert plan.params.learning_rate == 1e-3 and plan.params.loss == "focal"
    assert plan.changes(base)["class_balance"] == 0.5


def test_plan_measures_a_step_and_names_bad_input():
    image, labels, _ = blobs((4, 32, 32), labelled=(1,))
    plan = plan_training(nbseg.TrainingSet(image, labels), _spec(), budget_minutes=1)
    assert 0 < plan.step_seconds < 30 and plan.params.patch_size == 32
    with pytest.raises(nbseg.InputError, match="budget_minutes"):
        plan_training(nbseg.TrainingSet(image, labels), _spec(), budget_minutes=0)
    with pytest.raises(nbseg.InputError, match="training_sets"):
        plan_training([], _spec())
    empty = labels.copy(data=np.full(labels.shape, -1, np.int16))
    with pytest.raises(nbseg.InputError, match="no labelled voxel"):
        plan_training(nbseg.TrainingSet(image, empty), _spec(), step_seconds=0.1)


def test_plan_from_the_parameters_panel_fills_the_fields():
    image, labels, _ = blobs((4, 48, 48), labelled=(1,))
    model = nbseg.generate_model(_spec(), seed=0)
    ws = nbseg.ui.Workspace(images={"img": image}, labels={"lab": labels}, model=model)
    panel = nbseg.ui.TrainingParamsPanel(ws)
    panel.plan_button.click()  # no training set yet: says what to do
    assert "Inputs tab" in panel.message.text
    ws.set_training_sets([nbseg.TrainingSet(image, labels)])
    panel.plan_budget.value = 1.0
    panel.plan_from_data(wait=True)
    assert panel.plan is not None, panel.message.text
    assert ws.params == panel.plan.params and ws.params.max_minutes == 1.0
    assert panel.fields["epochs"].value == panel.plan.params.epochs
    assert "Epochs" in panel.plan_text.value and "s per step" in panel.plan_text.value
    panel.fields["epochs"].value = 7  # every planned value stays editable
    assert ws.params.epochs == 7


@pytest.mark.slow
def test_nbseg_train_plan_flag_plans_and_the_flags_still_win(tmp_path, capsys):
    import yaml

    from nbseg.cli import main

    config = {
        "model": {
            "architecture": "unet",
            "class_count": 2,
            "input_dimension": "2D",
            "parameters": TINY,
        },
        "training_sets": [
            {"dataset": "fibres", "dataset_options": {"shape": [4, 48, 48], "labelled_slices": 2}}
        ],
        "validation": 0.25,
        "params": {"batch_size": 4, "epochs": 2},
        "output": "model.nbseg",
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--plan", "0.05", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "plan: patch_size = 48" in out and "plan: max_minutes = 0.05" in out
    model = nbseg.load_model(tmp_path / "model.nbseg")
    assert model.params.patch_size == 48 and model.params.max_minutes == 0.05
    assert model.params.epochs == 1  # --epochs overrides the planned epochs
    assert main(["train", str(path), "--plan", "0"]) == 1
    assert "--plan" in capsys.readouterr().err


def test_plan_keeps_edits_made_while_it_was_timed(monkeypatch):
    from nbseg.training import fingerprint as fpmod

    image, labels, _ = blobs((4, 48, 48), labelled=(1,))
    model = nbseg.generate_model(_spec(), seed=0)
    ws = nbseg.ui.Workspace(images={"img": image}, labels={"lab": labels}, model=model)
    panel = nbseg.ui.TrainingParamsPanel(ws)
    ws.set_training_sets([nbseg.TrainingSet(image, labels)])
    real = fpmod.plan_training

    def slow_plan(*args, **kw):  # the user edits the learning rate while the plan is timed
        panel.fields["learning_rate"].value = 5e-4
        return real(*args, step_seconds=0.1, **kw)

    monkeypatch.setattr(fpmod, "plan_training", slow_plan)
    panel.plan_from_data(wait=True)
    assert ws.params.learning_rate == 5e-4 and ws.params.max_minutes == 5.0


def test_plan_takes_a_budget_the_user_set_in_max_minutes():
    image, labels, _ = blobs((6, 48, 48), labelled=(1,))
    ts = nbseg.TrainingSet(image, labels)
    own = plan_training(ts, _spec(), nbseg.TrainingParams(max_minutes=2.0), step_seconds=0.1)
    assert own.params.max_minutes == 2.0
    default = plan_training(ts, _spec(), nbseg.TrainingParams(), step_seconds=0.1)
    assert default.params.max_minutes == 5.0  # the 10-minute default is not a user's budget
