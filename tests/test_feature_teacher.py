"""The feature teacher (issue 20): ``TrainingParams(semi_supervised="feature_teacher")``, a
pixel classifier on filter features that labels the voxels the user left unlabelled."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import nbseg
from nbseg.training.module import SegmentationDataModule
from nbseg.training.teacher import (
    FEATURES_PER_CHANNEL,
    FeatureTeacher,
    slice_features,
    teacher_labels,
)

from .test_semi_supervised import _params, _sparse_fibres, _tiny


def _tiny_four_class(epochs: int):
    """A tiny 4-class 2D U-Net and its training parameters (the multiphase cases)."""
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=4,
        input_dimension="2D",
        parameters={"filters": 8, "depth": 2},
    )
    params = nbseg.TrainingParams(
        patch_size=64, batch_size=8, seed=0, learning_rate=3e-3, epochs=epochs
    )
    return nbseg.generate_model(spec), params


def test_feature_teacher_raises_dice_from_strokes():
    """10 % strokes on a multiphase volume, tiny U-Net, 8 epochs: with the teacher's labels
    between the strokes the three common phases score higher, for both seeds (measured:
    +0.013 and +0.016 mean Dice)."""
    gains = []
    for seed in (1, 2):
        ds = nbseg.datasets.multiphase(
            shape=(4, 128, 128), labelled_slices=list(range(4)), seed=seed, dense_grains=0
        )
        truth = ds.labels.values.astype(np.int16)
        labels = ds.labels.copy()
        labels.values[:] = nbseg.datasets.strokes(truth, 0.1, seed)
        scores = {}
        for mode in ("off", "feature_teacher"):
            model, params = _tiny_four_class(epochs=8)
            params.semi_supervised = mode
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = nbseg.train(
                    model, nbseg.TrainingSet(ds.image, labels), params, feedback=False
                )
            p = nbseg.segment(model, ds.image).values
            scores[mode] = np.mean(
                [
                    2 * ((p == c) & (truth == c)).sum() / ((p == c).sum() + (truth == c).sum())
                    for c in range(3)
                ]
            )
            assert ("pseudo_share" in result.history[-1]) == (mode == "feature_teacher")
        gains.append(scores["feature_teacher"] - scores["off"])
    assert min(gains) > 0 and np.mean(gains) > 0.008, gains


def _module(image, labels, mask=None, validation=0.2, **kw):
    spec = _tiny().spec
    ts = nbseg.TrainingSet(image, labels, mask=mask)
    norm = nbseg.Normalisation.fit([ts])
    params = _params(semi_supervised="feature_teacher", **kw)
    return SegmentationDataModule([ts], spec, params, norm, validation)


def test_teacher_labels_keep_user_labels_and_stay_out_of_validation_and_mask():
    image, labels, _, _ = _sparse_fibres(3)
    mask = xr.zeros_like(labels, dtype=bool)
    mask.values[:, :, :48] = True
    dm = _module(image, labels, mask=mask)
    user = dm.sets[0].labels
    taught = dm.train_patches.sets[0].labels
    k = 2
    assert np.array_equal(taught[user >= 0], user[user >= 0])  # the user's labels win
    codes = taught >= k
    assert codes.any() and not codes[user >= 0].any()
    assert not codes[:, :, 48:].any()  # nothing outside the mask
    for z0, y0, x0 in dm.plan.val[0]:  # nor inside a validation patch
        pz, py, px = dm.pshape
        assert not codes[z0 : z0 + pz, y0 : y0 + py, x0 : x0 + px].any()
    # validation is scored on the user's labels only
    assert all(int(y.max()) < k for _, y in dm.val_patches)
    # the training patches stay where the user's labels are (slice 4)
    assert dm.plan.train_count > 0
    assert set(np.unique(dm.plan.train[0][:, 0])) == {4}
    assert dm.teacher_info["teacher_share"] > 0.5


def test_teacher_threshold_decides_how_many_voxels_the_teacher_labels():
    """``teacher_threshold`` (not ``pseudo_threshold``) is the teacher's: a lower one labels
    more voxels, 1.0 almost none (measured: 0.5 / 0.9 / 1.0 label about 0.95 / 0.66 / 0.001
    of the voxels)."""
    image, labels, _, _ = _sparse_fibres(3)
    shares = {
        t: _module(image, labels, teacher_threshold=t, pseudo_threshold=0.99).teacher_info[
            "teacher_share"
        ]
        for t in (0.5, 0.9, 1.0)
    }
    assert shares[0.5] > shares[0.9] > shares[1.0], shares
    assert shares[0.5] > 0.9 and shares[1.0] < 0.05, shares


def test_teacher_labels_agree_with_the_truth_where_confident():
    image, labels, truth, test = _sparse_fibres(4)
    norm = nbseg.Normalisation.fit([nbseg.TrainingSet(image, labels)])
    from nbseg.data.patches import PreparedSet

    ps = PreparedSet.from_training_set(nbseg.TrainingSet(image, labels), norm)
    (lab,), info, _teacher = teacher_labels([ps], 2, 0.9, seed=0)
    given = lab >= 0
    assert given[test].mean() > 0.5
    # fibres fill about half of the volume: chance agreement is 0.5
    assert (lab[given] == truth[given]).mean() > 0.75
    for c in (0, 1):
        p, t = lab == c, truth == c
        assert 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.6
    assert info["teacher_seconds"] > 0


def test_slice_features_per_channel_and_finite_on_tiny_slices():
    f = slice_features(torch.rand(2, 9, 7))  # smaller than the widest kernel
    assert f.shape == (2 * FEATURES_PER_CHANNEL, 9, 7)
    assert torch.isfinite(f).all()


def test_teacher_time_is_taken_off_the_budget():
    from nbseg.training.run import prepare

    image, labels, _, _ = _sparse_fibres(5)
    params = _params(semi_supervised="feature_teacher", max_minutes=10.0, epochs=1000)
    plan = prepare(_tiny(), nbseg.TrainingSet(image, labels), params, validation=0.2)
    spent = plan.module.time_spent_s
    assert spent > 0
    from pytorch_lightning.callbacks import Timer

    (timer,) = [cb for cb in plan.trainer.callbacks if isinstance(cb, Timer)]
    assert timer._duration == pytest.approx(600.0 - spent)


def test_a_config_and_the_cli_choose_the_feature_teacher(tmp_path, capsys, monkeypatch):
    import yaml

    from nbseg.cli import main
    from nbseg.config import load_config

    from .test_unlabelled_config import CONFIG, _config

    params = {**CONFIG["params"], "semi_supervised": "feature_teacher"}
    cfg = load_config(_config(tmp_path, params=params))
    assert cfg.params.semi_supervised == "feature_teacher"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cfg.run(feedback=False)
    assert result.status == "completed"  # (painted slices: nothing left to teach)
    # the CLI flag generated from the declaration overrides the config
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "output": "cli/model.nbseg"}, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", str(path), "--semi-supervised", "feature_teacher"])
    assert code == 0, capsys.readouterr().err
    assert nbseg.load_model(tmp_path / "cli" / "model.nbseg").params.semi_supervised == (
        "feature_teacher"
    )


def test_big_volumes_get_teacher_labels_on_every_nth_slice_only():
    from nbseg.data.patches import PreparedSet

    image, labels, _, _ = _sparse_fibres(6)
    ts = nbseg.TrainingSet(image, labels)
    ps = PreparedSet.from_training_set(ts, nbseg.Normalisation.fit([ts]))
    n = int(np.prod(ps.shape))
    (lab,), _, _teacher = teacher_labels([ps], 2, 0.5, max_voxels=n // 4)  # 8 slices: every 4th
    taught = [z for z in range(ps.shape[0]) if (lab[z] >= 0).any()]
    assert taught and all(z % 4 == 0 for z in taught)


def test_auto_uses_the_teacher_for_strokes_only():
    image, strokes, _, _ = _sparse_fibres(7)
    spec = _tiny().spec
    params = _params()  # semi_supervised="auto"
    ts = nbseg.TrainingSet(image, strokes)
    norm = nbseg.Normalisation.fit([ts])
    dm = SegmentationDataModule([ts], spec, params, norm, 0.2)
    assert dm.labelled_share < 0.5 and dm.teacher_info  # strokes: the teacher labels
    assert dm.teacher_labelled and (dm.train_patches.sets[0].labels >= 2).any()
    # wholly painted slices: a teacher fitted for the prediction only, no teacher labels
    painted = nbseg.datasets.fibres(shape=(8, 64, 64), labelled_slices=[2, 5], seed=7)
    ts2 = nbseg.TrainingSet(painted.image, painted.labels)
    dm2 = SegmentationDataModule([ts2], spec, params, norm, 0.2)
    assert dm2.labelled_share > 0.9 and dm2.teacher is not None and not dm2.teacher_labelled
    assert dm2.teacher_info["teacher_seconds"] > 0  # taken off the budget
    assert int(dm2.train_patches.sets[0].labels.max()) < 2
    # ... not with teacher_blend 0, nor without validation patches
    assert (
        SegmentationDataModule([ts2], spec, _params(teacher_blend=0.0), norm, 0.2).teacher is None
    )
    assert SegmentationDataModule([ts2], spec, params, norm, 0.0).teacher is None
    # unlabelled images given: pseudo-labels instead
    dm3 = SegmentationDataModule([ts], spec, params, norm, 0.2, unlabelled=[[image]])
    assert dm3.pseudo_labels and not dm3.teacher_info
    # off: nothing
    off = _params(semi_supervised="off")
    assert not SegmentationDataModule([ts], spec, off, norm, 0.2).teacher_info
    assert SegmentationDataModule([ts2], spec, off, norm, 0.2).teacher is None


def test_teacher_with_a_separate_validation_set_labels_only_inside_the_patches():
    image, labels, _, _ = _sparse_fibres(8)  # strokes on slice 4 of 8
    other = nbseg.datasets.fibres(shape=(4, 64, 64), labelled_slices=[1, 2], seed=9)
    spec = _tiny().spec
    ts = nbseg.TrainingSet(image, labels)
    norm = nbseg.Normalisation.fit([ts])
    params = _params(semi_supervised="feature_teacher")
    val = [nbseg.TrainingSet(other.image, other.labels)] * 2  # not one per training set
    dm = SegmentationDataModule([ts], spec, params, norm, val)
    taught = dm.train_patches.sets[0].labels
    assert (taught >= 2).any()
    assert set(np.flatnonzero((taught >= 2).any(axis=(1, 2)))) == {4}  # the patches' slice
    assert len(dm.val_patches) > 0 and all(int(y.max()) < 2 for _, y in dm.val_patches)


# -- the kept teacher: the model predicts with the network and the teacher ---------------------
def _taught(blend=0.5, seed=1, epochs=3):
    ds = nbseg.datasets.multiphase(
        shape=(4, 96, 96), labelled_slices=list(range(4)), seed=seed, dense_grains=0
    )
    truth = ds.labels.values.astype(np.int16)
    labels = ds.labels.copy()
    labels.values[:] = nbseg.datasets.strokes(truth, 0.1, seed)
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=4,
        input_dimension="2D",
        parameters={"filters": 8, "depth": 2},
    )
    model = nbseg.generate_model(spec)
    params = nbseg.TrainingParams(
        patch_size=64,
        batch_size=8,
        seed=0,
        learning_rate=3e-3,
        epochs=epochs,
        semi_supervised="feature_teacher",
        teacher_blend=blend,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nbseg.train(model, nbseg.TrainingSet(ds.image, labels), params, feedback=False)
    return model, ds.image, truth


def _dice3(p, truth):
    return np.mean(
        [
            2 * ((p == c) & (truth == c)).sum() / ((p == c).sum() + (truth == c).sum())
            for c in range(3)
        ]
    )


def test_the_model_keeps_the_teacher_and_predicts_better_with_it(tmp_path):
    """Strokes, tiny U-Net, 3 epochs: the model predicting with its teacher (blend 0.5)
    scores above the network alone, for two seeds; the file round-trips the teacher."""
    gains = []
    for seed in (1, 2):
        model, image, truth = _taught(seed=seed)
        assert model.teacher is not None and model.teacher_blend == 0.5
        both = nbseg.segment(model, image).values
        alone = model.copy()
        alone.teacher = None
        gains.append(_dice3(both, truth) - _dice3(nbseg.segment(alone, image).values, truth))
    assert min(gains) > 0, gains
    path = model.save(tmp_path / "m.nbseg")
    back = nbseg.load_model(path)
    assert back.teacher is not None and back.teacher_blend == 0.5
    np.testing.assert_array_equal(nbseg.segment(back, image).values, both)
    np.testing.assert_array_equal(nbseg.segment(model.copy(), image).values, both)


def test_blend_0_keeps_no_teacher_and_a_later_training_replaces_it():
    model, image, truth = _taught(blend=0.0, epochs=1)
    assert model.teacher is None and model.teacher_blend == 0.0
    model, image, truth = _taught(epochs=1)
    assert model.teacher is not None
    old = model.teacher
    labels = xr.DataArray(truth, dims=image.dims)  # now every voxel labelled
    params = nbseg.TrainingParams(patch_size=64, batch_size=8, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = nbseg.train(model, nbseg.TrainingSet(image, labels), params, feedback=False)
    # the old teacher learnt from the old labels: gone, or replaced by one fitted on the new
    assert model.teacher is not old
    assert (model.teacher is not None) == bool(result.extra["teacher"]["kept"])
    params.semi_supervised = "off"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nbseg.train(model, nbseg.TrainingSet(image, labels), params, feedback=False)
    assert model.teacher is None and model.teacher_blend == 0.0


def test_a_damaged_teacher_in_a_model_file_is_refused(tmp_path):
    from nbseg.store.fileformat import read_model_file, write_model_file

    model, _, _ = _taught(epochs=1)
    path = model.save(tmp_path / "m.nbseg")
    state, meta = read_model_file(path)
    bad = tmp_path / "bad.nbseg"
    write_model_file(bad, state, {**meta, "teacher": {"blend": 2, "hidden": 128}})
    with pytest.raises(nbseg.ModelFileError, match=r"teacher\.blend"):
        nbseg.load_model(bad)
    no_meta = {k: v for k, v in meta.items() if k != "teacher"}
    write_model_file(bad, state, no_meta)
    with pytest.raises(nbseg.ModelFileError, match="no 'teacher' metadata"):
        nbseg.load_model(bad)
    write_model_file(bad, {k: v for k, v in state.items() if k != "teacher.mean"}, meta)
    with pytest.raises(nbseg.ModelFileError, match="feature teacher's weights"):
        nbseg.load_model(bad)
    assert nbseg.load_model(path).teacher is not None  # the good file is untouched


def test_an_export_of_a_model_with_a_teacher_warns(tmp_path):
    from nbseg.store.export import export_torchscript

    model, _, _ = _taught(epochs=1)
    with pytest.warns(UserWarning, match="feature teacher") as caught:
        export_torchscript(model, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").stat().st_size > 0  # the network alone is still exported
    assert any("network alone" in str(w.message) for w in caught), [str(w.message) for w in caught]


class _Fixed(torch.nn.Module):
    """A 'network' whose logits favour the truth where ``right`` (else the next class),
    sure with ``scale`` 4 (p 0.98), unsure with 1 (p 0.73)."""

    def __init__(self, truth, right, k=2, scale=4.0):
        super().__init__()
        self.scale = scale
        self.w = torch.nn.Parameter(torch.zeros(()))
        answer = np.where(right, truth, (truth + 1) % k)
        self.logits = torch.nn.functional.one_hot(torch.from_numpy(answer), k).permute(0, 3, 1, 2)

    def forward(self, x):
        return self.scale * self.logits[: x.shape[0]].float() + self.w


class _StubTeacher(FeatureTeacher):
    def __init__(self, probs):
        self.probs = probs

    def to(self, device):
        return self

    def on_network_input(self, x, spec):
        return self.probs[: x.shape[0]]


def test_the_teacher_is_kept_only_when_the_blend_scores_higher_on_validation():
    from nbseg.training.teacher import blend_wins

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (4, 16, 16))
    patches = [(torch.zeros(1, 16, 16), torch.from_numpy(t)) for t in truth]
    spec = _tiny().spec
    sure_right = torch.nn.functional.one_hot(torch.from_numpy(truth), 2).permute(0, 3, 1, 2)
    teacher = _StubTeacher(0.02 + 0.96 * sure_right.float())  # 0.98 on the truth
    wrong_half = rng.random(truth.shape) < 0.5
    wins, alone, both = blend_wins(
        _Fixed(truth, ~wrong_half, scale=1.0), teacher, patches, spec, 0.5
    )
    assert wins and both > alone + 0.3  # a poor network gains from a sure, right teacher
    unsure_wrong = _StubTeacher(0.45 + 0.1 * (1 - sure_right.float()))  # leans wrong
    wins, alone, both = blend_wins(
        _Fixed(truth, np.ones_like(wrong_half)), unsure_wrong, patches, spec, 0.5
    )
    assert not wins and alone == 1.0


def test_painted_slices_get_a_teacher_for_the_prediction_that_raises_dice():
    """Two wholly painted slices of eight, tiny U-Net, 3 epochs, ``semi_supervised='auto'``:
    no teacher labels, but the teacher fitted on the painted slices is kept (the blend wins on
    validation) and the model predicting with it scores higher on the six unpainted slices
    than the network alone, for two seeds."""
    gains = []
    for seed in (1, 2):
        ds = nbseg.datasets.multiphase(
            shape=(8, 96, 96), labelled_slices=[1, 6], seed=seed, dense_grains=0
        )
        truth = nbseg.datasets.multiphase(
            shape=(8, 96, 96), labelled_slices=list(range(8)), seed=seed, dense_grains=0
        ).labels.values
        model, params = _tiny_four_class(epochs=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = nbseg.train(model, nbseg.TrainingSet(ds.image, ds.labels), params)
        choice = result.extra["teacher"]
        assert choice["kept"] and choice["val_dice_blend"] > choice["val_dice_network"] + 0.005
        assert model.teacher is not None
        both = nbseg.segment(model, ds.image).values
        alone = model.copy()
        alone.teacher = None
        rest = [z for z in range(8) if z not in (1, 6)]
        net = nbseg.segment(alone, ds.image).values
        gains.append(_dice3(both[rest], truth[rest]) - _dice3(net[rest], truth[rest]))
    assert min(gains) > 0, gains
