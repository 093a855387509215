import numpy as np
import pytest

import nbseg
from nbseg.data.patches import (
    PreparedSet,
    class_positions,
    extract,
    grid_boxes,
    overlaps,
    plan_patches,
    random_train_boxes,
)


def _ps(shape=(6, 64, 64), labelled_slices=(1, 4)):
    lab = np.full(shape, -1, np.int16)
    for z in labelled_slices:
        lab[z] = (np.arange(shape[2]) % 2)[None, :]
    image = np.random.default_rng(0).random((1, *shape)).astype(np.float32)
    return PreparedSet(image=image, labels=lab, name="set")


def test_grid_only_labelled_slices_for_2d():
    boxes = grid_boxes(_ps(), (1, 32, 32), 1.0)
    assert set(boxes[:, 0]) == {1, 4}
    assert len(boxes) == 8


def test_stride_ratio_gives_more_patches():
    assert len(grid_boxes(_ps(), (1, 32, 32), 0.5)) == 2 * 9


def test_full_labels_only():
    ps = _ps()
    ps.labels[1, :5, :5] = -1
    full = grid_boxes(ps, (1, 32, 32), 1.0, full_labels_only=True)
    assert len(full) == 7


def test_validation_split_has_no_overlap():
    ps = _ps()
    plan = plan_patches([ps], (1, 32, 32), 0.5, 0.25, seed=3)
    assert plan.val_count >= 1 and plan.train_count >= 1
    assert not overlaps(plan.train[0], plan.val[0], (1, 32, 32)).any()
    rng = np.random.default_rng(0)
    crops = random_train_boxes([ps], plan, (1, 32, 32), 200, rng)
    boxes = np.array([b for _, b in crops])
    assert not overlaps(boxes, plan.val[0], (1, 32, 32)).any()
    assert len({tuple(b) for b in boxes}) > 10  # random crops, not the fixed grid


def test_patch_larger_than_volume_is_clear_error():
    with pytest.raises(nbseg.InputError, match="larger than the volume"):
        grid_boxes(_ps((6, 64, 64)), (1, 128, 128), 1.0)


def test_too_few_patches_for_split():
    with pytest.raises(nbseg.InputError, match="too few"):
        plan_patches([_ps((2, 32, 32), (1,))], (1, 32, 32), 1.0, 0.2)


def test_extract_25d_stacks_neighbours_clamped():
    ps = _ps()
    ps.image[0] = np.arange(6)[:, None, None]
    spec = nbseg.ModelSpec(input_dimension="2.5D", slices=5)
    x, y = extract(ps, (1, 0, 0), (1, 16, 16), spec)
    assert x.shape == (5, 16, 16) and y.shape == (16, 16)
    assert list(x[:, 0, 0]) == [0, 0, 1, 2, 3]


def test_extract_3d():
    spec = nbseg.ModelSpec(input_dimension="3D")
    x, y = extract(_ps(), (0, 0, 0), (4, 16, 16), spec)
    assert x.shape == (1, 4, 16, 16) and y.shape == (4, 16, 16)


def _rare_share(crops, ps, pshape, cls):
    pz, py, px = pshape
    seen = [ps.labels[z : z + pz, y : y + py, x : x + px] for _, (z, y, x) in crops]
    return float(np.mean([(s == cls).any() for s in seen]))


def test_class_balance_centres_patches_on_a_rare_class_and_respects_validation():
    shape = (6, 128, 128)
    lab = np.zeros(shape, np.int16)
    lab[:, 100:104, 20:24] = 2  # a rare class: 0.1 % of the voxels, in one place
    lab[:, :, 64:] = 1
    ps = PreparedSet(image=np.zeros((1, *shape), np.float32), labels=lab, name="set")
    pshape = (1, 32, 32)
    plan = plan_patches([ps], pshape, 1.0, 0.2, seed=0)
    uniform = random_train_boxes([ps], plan, pshape, 400, np.random.default_rng(0))
    pos = [class_positions(ps)]
    assert sorted(pos[0]) == [0, 1, 2] and len(pos[0][2]) == 6 * 16
    balanced = random_train_boxes(
        [ps], plan, pshape, 400, np.random.default_rng(0), class_balance=0.6, positions=pos
    )
    before = _rare_share(uniform, ps, pshape, 2)
    after = _rare_share(balanced, ps, pshape, 2)
    assert after > before + 0.1  # about 0.6 / 3 of the crops more hold the rare class
    for _, box in balanced:  # still never on a validation patch, always inside the volume
        assert not overlaps(np.asarray(box)[None], plan.val[0], pshape)[0]
        assert (np.asarray(box) >= 0).all() and (np.asarray(box) + pshape <= shape).all()


def test_crops_with_separate_validation_sets_are_not_refused():
    """Ground-truth validation sets are other volumes: their boxes never veto a crop of a
    training set (two training sets and one validation set used to raise an IndexError)."""
    shape = (4, 96, 96)
    lab = np.zeros(shape, np.int16)
    lab[:, 70:74, 10:14] = 2
    lab[:, :, 48:] = 1
    sets = [
        PreparedSet(image=np.zeros((1, *shape), np.float32), labels=lab.copy(), name=f"s{i}")
        for i in range(2)
    ]
    val = PreparedSet(image=np.zeros((1, *shape), np.float32), labels=lab.copy(), name="gt")
    pshape = (1, 32, 32)
    plan = plan_patches(sets, pshape, 1.0, [val], seed=0)
    pos = [class_positions(ps) for ps in sets]
    crops = random_train_boxes(
        sets, plan, pshape, 300, np.random.default_rng(1), class_balance=0.6, positions=pos
    )
    grid = {(i, tuple(b)) for i, bs in enumerate(plan.train) for b in bs}
    moved = [c for c in crops if (c[0], tuple(c[1])) not in grid]
    assert len(moved) > 150  # random and class-centred crops are kept, not all reset to grid
    assert _rare_share(crops, sets[0], pshape, 2) > 0.15
