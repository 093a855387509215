"""Learning from unlabelled voxels (issue 20): ``nbseg.train(..., unlabelled=[...])`` and
``TrainingParams.semi_supervised`` (confident pseudo-labels under a strong intensity view)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import nbseg
from nbseg.training.module import SegmentationDataModule, strong_view


def _sparse_fibres(seed: int, shape=(8, 64, 64)):
    """One labelled slice, and on it only every 8th row (scribble-like, ~12 % of a slice)."""
    mid = shape[0] // 2
    ds = nbseg.datasets.fibres(shape=shape, labelled_slices=[mid], seed=seed)
    truth = nbseg.datasets.fibres(shape=shape, labelled_slices=list(range(shape[0])), seed=seed)
    labels = ds.labels.copy()
    v = labels.values.copy()
    rows = np.zeros(v.shape, bool)
    rows[:, ::8, :] = True
    v[~rows] = -1
    labels.values[:] = v
    return ds.image, labels, truth.labels.values, [z for z in range(shape[0]) if z != mid]


def _tiny():
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=2,
        input_dimension="2D",
        parameters={"filters": 8, "depth": 2},
    )
    return nbseg.generate_model(spec)


def _params(**kw):
    base = dict(patch_size=32, batch_size=8, seed=0, learning_rate=3e-3)
    return nbseg.TrainingParams(**{**base, **kw})


def _mean_dice(pred, truth, slices):
    p, t = pred[slices], truth[slices]
    return float(
        np.mean(
            [2 * ((p == c) & (t == c)).sum() / ((p == c).sum() + (t == c).sum()) for c in (0, 1)]
        )
    )


def test_pseudo_labels_raise_dice_on_unlabelled_slices_at_equal_steps():
    """Few labels (strokes on one slice of eight): the same number of optimiser steps with the
    other slices' voxels as pseudo-labelled patches scores higher on those slices."""
    gains = []
    for seed in (1, 2):
        image, labels, truth, test = _sparse_fibres(seed)
        scores = {}
        # unlabelled_share 0.5: 1.5 x the patches per epoch, so 10 epochs = 15 without
        for mode, epochs in (("off", 15), ("pseudo_labels", 10)):
            model = _tiny()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = nbseg.train(
                    model,
                    nbseg.TrainingSet(image, labels),
                    _params(epochs=epochs, semi_supervised=mode),
                    validation=0,
                    feedback=False,
                )
            scores[mode] = _mean_dice(nbseg.segment(model, image).values, truth, test)
            assert ("pseudo_loss" in result.history[-1]) == (mode == "pseudo_labels")
        gains.append(scores["pseudo_labels"] - scores["off"])
    assert np.mean(gains) > 0.05, gains


def test_auto_uses_pseudo_labels_only_with_unlabelled_images():
    image, labels, _truth, _test = _sparse_fibres(1)
    other = nbseg.datasets.fibres(shape=(4, 64, 64), seed=5).image
    ts = nbseg.TrainingSet(image, labels)
    # a wholly painted slice, no unlabelled images: neither pseudo-labels nor (strokes
    # only, tests/test_feature_teacher.py) the feature teacher
    painted = nbseg.datasets.fibres(shape=(8, 64, 64), labelled_slices=[4], seed=1)
    model = _tiny()
    plain = nbseg.train(
        model,
        nbseg.TrainingSet(painted.image, painted.labels),
        _params(epochs=1),
        validation=0,
        feedback=False,
    )
    assert "pseudo_loss" not in plain.history[-1]
    model = _tiny()
    semi = nbseg.train(
        model, ts, _params(epochs=1), validation=0, feedback=False, unlabelled=[other]
    )
    row = semi.history[-1]
    assert "pseudo_loss" in row and 0.0 <= row["pseudo_share"] <= 1.0


def test_unlabelled_patches_come_from_the_images_and_never_carry_labels():
    image, labels, _truth, _test = _sparse_fibres(1)
    other = nbseg.datasets.fibres(shape=(4, 64, 64), seed=5).image
    model = _tiny()
    params = _params(epochs=1, semi_supervised="pseudo_labels", unlabelled_share=1.0)
    norm = nbseg.Normalisation.fit([nbseg.TrainingSet(image, labels)])
    dm = SegmentationDataModule(
        [nbseg.TrainingSet(image, labels)],
        model.spec,
        params,
        norm,
        validation=0.0,
        unlabelled=[[other]],
    )
    tp = dm.train_patches
    assert tp.unlabelled_count == tp.labelled_count > 0
    # sources: the training volume itself, then the unlabelled image
    assert len(tp.unlabelled) == 2 and tp.unlabelled[1].ps.shape == (4, 64, 64)
    used = {k for k, _ in tp.unlabelled_boxes}
    assert used == {0, 1}
    ys = [tp[i][1] for i in range(len(tp))]
    unlabelled_items = [y for y in ys if (y < 0).all()]
    assert len(unlabelled_items) >= tp.unlabelled_count  # the training volume's labels hidden
    # spread among the labelled crops: both kinds in the first batch
    first = ys[: params.batch_size]
    assert any((y < 0).all() for y in first) and any((y >= 0).any() for y in first)


def test_unlabelled_crops_stay_inside_the_mask():
    image, labels, _truth, _test = _sparse_fibres(1)
    mask = image.copy(data=np.zeros(image.shape, bool))
    mask.values[:, :32, :32] = True
    labels.values[:, 32:, :] = -1
    labels.values[:, :, 32:] = -1
    model = _tiny()
    params = _params(patch_size=16, epochs=1, semi_supervised="pseudo_labels")
    ts = nbseg.TrainingSet(image, labels, mask=mask)
    dm = SegmentationDataModule([ts], model.spec, params, nbseg.Normalisation.fit([ts]), 0.0)
    for _k, box in dm.train_patches.unlabelled_boxes:
        _z, y, x = (int(v) for v in box)
        assert y < 32 and x < 32, box  # the crop centres on a voxel of the mask


def test_bad_unlabelled_input_names_the_argument():
    image, labels, _truth, _test = _sparse_fibres(1)
    ts = nbseg.TrainingSet(image, labels)
    model = _tiny()
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    with pytest.raises(nbseg.InputError, match=r"unlabelled\[0\]"):
        nbseg.train(model, ts, _params(epochs=1), unlabelled=[[image, image]], feedback=False)
    small = xr.DataArray(np.zeros((2, 16, 16), np.float32), dims=("z", "y", "x"))
    with pytest.raises(nbseg.InputError, match=r"unlabelled\[0\].*smaller than the patch"):
        nbseg.train(model, ts, _params(epochs=1), unlabelled=[small], feedback=False)
    after = model.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing trained


def test_strong_view_changes_intensities_not_geometry():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 4:12, 4:12] = 1.0
    s = strong_view(x, g)
    assert s.shape == x.shape and not torch.equal(s, x)
    # the bright square stays where it was in every sample
    inside, outside = s[:, :, 5:11, 5:11].mean((1, 2, 3)), s[:, :, :3, :3].mean((1, 2, 3))
    assert (inside > outside + 0.4).all()


def test_auto_patch_fits_a_small_unlabelled_image_and_off_warns():
    """The automatic patch shrinks to fit the unlabelled images too (a 48² image with the
    64² volumes); unlabelled images with semi_supervised='off' are reported as unused."""
    image, labels, _truth, _test = _sparse_fibres(1)
    small = xr.DataArray(np.random.default_rng(0).random((2, 48, 48)), dims=("z", "y", "x"))
    ts = nbseg.TrainingSet(image, labels)
    result = nbseg.train(
        _tiny(),
        ts,
        _params(patch_size=None, epochs=1),
        validation=0,
        feedback=False,
        unlabelled=[small],
    )
    assert "pseudo_loss" in result.history[-1]
    with pytest.warns(UserWarning, match="not used"):
        nbseg.train(
            _tiny(),
            ts,
            _params(epochs=1, semi_supervised="off"),
            validation=0,
            feedback=False,
            unlabelled=[small],
        )
