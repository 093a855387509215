import numpy as np
import pytest
import xarray as xr

import nbseg


def test_evaluate_counts_per_class_and_ignores_unlabelled():
    truth = xr.DataArray(
        np.array([[0, 0, 1, 1], [2, 2, -1, -1]]), attrs={"class_names": ["a", "b", "c"]}
    )
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    m = nbseg.evaluate(pred, truth)
    # a: tp 1, fp 1 (pred 0 at truth 2), fn 1 -> 2/4; b: tp 2, fp 1, fn 0 -> 4/5; c: tp 1, fn 1 -> 2/3
    assert m["dice_a"] == pytest.approx(0.5)
    assert m["dice_b"] == pytest.approx(0.8)
    assert m["dice_c"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["dice"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_evaluate_mask_and_shape_error():
    t = np.zeros((2, 4, 4), int)
    p = np.ones((2, 4, 4), int)
    mask = np.zeros_like(t, bool)
    mask[0, 0, 0] = True
    assert nbseg.evaluate(p, t, mask=mask)["accuracy"] == 0.0
    with pytest.raises(nbseg.InputError, match="same geometry"):
        nbseg.evaluate(p[0], t)


def test_overlay_and_show():
    img = np.linspace(0, 1, 2 * 8 * 8).reshape(2, 8, 8)
    lab = np.full((2, 8, 8), -1)
    lab[1, :4] = 1
    rgb = nbseg.overlay(img, lab, 1, opacity=1.0, colors=["#000000", "#ff0000"])
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert (rgb[:4, :, 0] == 255).all() and (rgb[:4, :, 1] == 0).all()
    assert (rgb[4:, :, 0] == rgb[4:, :, 1]).all()  # unlabelled stays grey
    w = nbseg.show(img, [lab, lab], 1)
    assert len(w.children) == 2 and w.children[0].value[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(nbseg.InputError, match="slice 5"):
        nbseg.overlay(img, lab, 5)
