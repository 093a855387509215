import numpy as np
import pytest
import torch
import xarray as xr

import nbseg
from nbseg.inference.tiling import gaussian_importance, tile_starts

from .helpers import blobs, ready_model


def _ready_model(dim="2D", classes=2, **spec_kw):
    return ready_model(dim, classes, **spec_kw)


@pytest.mark.parametrize("dim", ["2D", "2.5D", "3D"])
def test_segment_keeps_geometry_coords_attrs(dim):
    image, _, _ = blobs((6, 40, 36))
    out = nbseg.segment(_ready_model(dim), image)
    assert out.dims == image.dims and out.shape == image.shape and out.dtype == np.int16
    assert (out.z.values == image.z.values).all() and out.attrs["units"] == "um"
    assert out.attrs["class_names"] == ["background", "class 1"]
    assert set(np.unique(out.values)) <= {0, 1}


def test_segment_2d_image_and_volume_smaller_than_window():
    image, _, _ = blobs((1, 20, 24))
    out = nbseg.segment(_ready_model("2D"), image.isel(z=0))
    assert out.dims == ("y", "x") and out.shape == (20, 24)


def test_mask_skips_tiles_and_marks_outside():
    image, _, _ = blobs((4, 64, 64))
    m = _ready_model()
    calls = []
    m.network.register_forward_hook(lambda mod, i, o: calls.append(i[0].shape[0]))
    mask = xr.zeros_like(image, dtype=bool)
    mask[:, :20, :20] = True
    out = nbseg.segment(m, image, mask=mask, overlap=0.0)
    assert (out.values[:, 20:, :] == -1).all() and (out.values[:, :20, :20] >= 0).all()
    tiles_masked = sum(calls)
    calls.clear()
    nbseg.segment(m, image, overlap=0.0)
    assert tiles_masked == 4 and sum(calls) == 16


def test_probabilities_sum_to_one_and_argmax_is_labels():
    image, _, _ = blobs((2, 32, 32))
    m = _ready_model(classes=3)
    p = nbseg.segment(m, image, probabilities=True)
    assert p.dims == ("class", "z", "y", "x") and list(p["class"].values) == m.class_names
    np.testing.assert_allclose(p.sum("class").values, 1.0, atol=1e-5)
    lab = nbseg.segment(m, image)
    assert (p.argmax("class").values == lab.values).all()


def test_matches_monai_sliding_window_inference():
    from monai.inferers import sliding_window_inference

    image, _, _ = blobs((1, 70, 90))
    m = _ready_model()
    ours = nbseg.segment(m, image, probabilities=True, overlap=0.25).values[:, 0]
    x = torch.from_numpy(m.normalisation.apply(image.values[0], 0))[None, None]
    m.network.eval()
    with torch.no_grad():
        ref = sliding_window_inference(
            x, (32, 32), 4, lambda t: m.network(t).softmax(1), overlap=0.25, mode="gaussian"
        )[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("dim", ["2D", "2.5D", "3D"])
def test_preview_equals_full_segmentation_slice(dim):
    image, _, _ = blobs((7, 32, 32))
    m = _ready_model(dim, slices=3) if dim == "2.5D" else _ready_model(dim)
    full = nbseg.segment(m, image)
    for z in (0, 3, 6):
        pv = nbseg.preview(m, image, z)
        assert pv.dims == ("y", "x")
        if dim != "3D":
            assert (pv.values == full.values[z]).all()


def test_untrained_model_and_wrong_inputs_are_clear_errors():
    image, _, _ = blobs((2, 32, 32))
    spec = nbseg.ModelSpec(parameters={"filters": 4, "depth": 2})
    with pytest.raises(nbseg.InputError, match="untrained"):
        nbseg.segment(nbseg.generate_model(spec), image)
    m = _ready_model()
    with pytest.raises(nbseg.InputError, match="takes 1 input"):
        nbseg.segment(m, [image, image])
    bad = image.copy()
    bad.values[0, 0, 0] = np.inf
    with pytest.raises(nbseg.InputError, match="NaN/inf"):
        nbseg.segment(m, bad)


def test_tile_placement_and_importance():
    assert tile_starts(100, 32, 0.25) == [0, 24, 48, 68]
    assert tile_starts(20, 32, 0.25) == [0]
    w = gaussian_importance((8, 8))
    assert 0 < w.min() < w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1])  # symmetric, peak in the middle
    assert w[3:5, 3:5].min() == w.max()


@pytest.mark.parametrize("dim", ["2D", "3D"])
def test_tta_is_the_mean_over_flips(dim):
    """One tile: TTA equals averaging segment() of every flipped image, flipped back."""
    import itertools

    shape = (16, 16, 16) if dim == "3D" else (1, 32, 32)
    image, _, _ = blobs(shape, seed=3)
    if dim == "2D":
        image = image.isel(z=0)
    m = _ready_model(dim, classes=3)
    torch.manual_seed(0)
    with torch.no_grad():  # an untrained, asymmetric network: flips change its output
        for p in m.network.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    axes = list(range(image.ndim))
    expected = np.zeros((3, *image.shape), np.float32)
    for n in range(len(axes) + 1):
        for flip in itertools.combinations(axes, n):
            flipped = image.copy(data=np.flip(image.values, flip) if flip else image.values)
            p = nbseg.segment(m, flipped, probabilities=True).values
            expected += np.flip(p, [a + 1 for a in flip]) if flip else p
    expected /= 2 ** len(axes)
    plain = nbseg.segment(m, image, probabilities=True).values
    got = nbseg.segment(m, image, probabilities=True, tta=True)
    assert got.dims == ("class", *image.dims)
    np.testing.assert_allclose(got.values, expected, atol=1e-5)
    assert np.abs(plain - expected).max() > 1e-3  # the flips did matter
    labels = nbseg.segment(m, image, tta=True)
    assert (labels.values == expected.argmax(0)).all()


def test_tta_reaches_preview_and_multi_tile_volumes():
    image, _, _ = blobs((3, 40, 52))
    m = _ready_model("2.5D")
    full = nbseg.segment(m, image, probabilities=True, tta=True)
    np.testing.assert_allclose(full.sum("class").values, 1.0, atol=1e-5)
    prev = nbseg.preview(m, image, 1, probabilities=True, tta=True)
    np.testing.assert_allclose(prev.values, full.isel(z=1).values, atol=1e-5)


@pytest.mark.parametrize("dim", ["2D", "3D"])
def test_prediction_runs_channels_last_and_leaves_the_weights_as_they_were(dim):
    image, _, _ = blobs((6, 40, 36))
    m = _ready_model(dim)
    fmt = torch.channels_last_3d if dim == "3D" else torch.channels_last
    seen = []
    m.network.register_forward_hook(
        lambda mod, i, o: seen.append(i[0].is_contiguous(memory_format=fmt))
    )
    before = {k: v.clone() for k, v in m.network.state_dict().items()}
    nbseg.segment(m, image)
    assert seen and all(seen)
    for k, v in m.network.state_dict().items():
        assert v.is_contiguous() and torch.equal(v, before[k])
    # a network already in channels-last (training's feedback prediction) stays so
    m.network.to(memory_format=fmt)
    nbseg.segment(m, image)
    convs = [p for p in m.network.parameters() if p.dim() in (4, 5)]
    assert all(p.is_contiguous(memory_format=fmt) for p in convs)
    assert any(not p.is_contiguous() for p in convs)


def test_in_memory_progress_is_one_record_per_batch_of_tiles():
    from nbseg.progress import Progress

    image, _, _ = blobs((3, 40, 40))
    seen = []
    nbseg.segment(_ready_model(), image, overlap=0.0, batch_size=4, window=32, progress=seen.append)
    assert all(isinstance(p, Progress) and p.unit == "tile" for p in seen)
    # 3 slices x 2 x 2 tiles of 32 = 12 tiles, in batches of 4
    assert [p.done for p in seen] == [4, 8, 12] and {p.total for p in seen} == {12}
    assert seen[-1].finished and seen[-1].eta_s == 0 and all(p.rate > 0 for p in seen)
    assert "12/12 tiles" in seen[-1].describe()
