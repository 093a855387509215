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
from nbseg.training.teacher import FEATURES_PER_CHANNEL, slice_features, teacher_labels

from .test_semi_supervised import _mean_dice, _params, _sparse_fibres, _tiny


def test_feature_teacher_raises_dice_from_strokes_on_one_slice():
    """Strokes (every 8th row) on one slice of eight: the same epochs with the teacher's
    labels on the other voxels score far higher on the seven unlabelled slices."""
    gains = []
    for seed in (1, 2):
        image, labels, truth, test = _sparse_fibres(seed)
        scores = {}
        for mode in ("off", "feature_teacher"):
            model = _tiny()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = nbseg.train(
                    model,
                    nbseg.TrainingSet(image, labels),
                    _params(epochs=10, semi_supervised=mode),
                    validation=0.2,
                    feedback=False,
                )
            scores[mode] = _mean_dice(nbseg.segment(model, image).values, truth, test)
            last = result.history[-1]
            assert ("pseudo_share" in last) == (mode == "feature_teacher")
        gains.append(scores["feature_teacher"] - scores["off"])
    assert np.mean(gains) > 0.2, gains


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
    # training patches now reach the unlabelled slices too, none meeting validation
    assert dm.plan.train_count > 0
    assert set(np.unique(dm.plan.train[0][:, 0])) - {4}
    assert dm.teacher_info["teacher_share"] > 0.5


def test_teacher_labels_agree_with_the_truth_where_confident():
    image, labels, truth, test = _sparse_fibres(4)
    norm = nbseg.Normalisation.fit([nbseg.TrainingSet(image, labels)])
    from nbseg.data.patches import PreparedSet

    ps = PreparedSet.from_training_set(nbseg.TrainingSet(image, labels), norm)
    (lab,), info = teacher_labels([ps], 2, 0.9, seed=0)
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
    params = _params(semi_supervised="feature_teacher", max_minutes=1.0, epochs=1000)
    plan = prepare(_tiny(), nbseg.TrainingSet(image, labels), params, validation=0.2)
    spent = plan.module.time_spent_s
    assert spent > 0
    from pytorch_lightning.callbacks import Timer

    (timer,) = [cb for cb in plan.trainer.callbacks if isinstance(cb, Timer)]
    assert timer._duration == pytest.approx(60.0 - spent)
