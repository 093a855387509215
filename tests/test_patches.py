import numpy as np
import pytest

import nbseg
from nbseg.data.patches import (
    PreparedSet,
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
