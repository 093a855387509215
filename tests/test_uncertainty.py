"""Uncertainty maps and label-next suggestions."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import nbseg
from nbseg.inference import uncertainty as unc

from .helpers import trained_blobs

TINY = {"filters": 8, "depth": 2}


@pytest.fixture(scope="module")
def trained():
    return trained_blobs()


@pytest.mark.parametrize("method", ["entropy", "margin", "tta"])
def test_map_in_unit_range_with_image_dims_and_coords(trained, method):
    model, image, *_ = trained
    u = nbseg.uncertainty(model, image, method=method)
    assert u.dtype == np.float32 and u.dims == image.dims
    assert all(np.array_equal(u[d].values, image[d].values) for d in image.dims)
    assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0
    assert u.attrs["uncertainty"] == method
    assert float(u.max()) > 0.0  # a briefly trained model is unsure somewhere


def test_errors_concentrate_where_the_map_says(trained):
    model, image, _, truth = trained
    labels, u = nbseg.segment(model, image, return_uncertainty=True)
    wrong = labels.values != truth.values
    assert wrong.any()
    assert float(u.values[wrong].mean()) > float(u.values[~wrong].mean()) + 0.1


def test_one_pass_equals_separate_calls(trained):
    model, image, *_ = trained
    labels, u = nbseg.segment(model, image, return_uncertainty=True)
    xr.testing.assert_equal(labels.drop_attrs(), nbseg.segment(model, image).drop_attrs())
    np.testing.assert_allclose(u.values, nbseg.uncertainty(model, image).values, atol=1e-6)


def test_mask_zeroes_outside_and_bad_method_is_named(trained):
    model, image, *_ = trained
    mask = image.copy(data=np.zeros(image.shape, bool))
    mask[:, 8:40, 8:40] = True
    u = nbseg.uncertainty(model, image, mask)
    assert float(abs(u.where(~mask, 0)).max()) == 0.0
    with pytest.raises(nbseg.InputError, match="method='bayes'"):
        nbseg.uncertainty(model, image, method="bayes")


def test_streams_into_zarr_equal_to_memory(trained, tmp_path):
    model, image, *_ = trained
    expected = nbseg.uncertainty(model, image)
    seen = []
    u = nbseg.uncertainty(model, image, out=tmp_path / "u.zarr", progress=seen.append)
    assert u.chunks is not None  # opened lazily from the store
    np.testing.assert_allclose(u.values, expected.values, atol=1e-5)
    assert seen and seen[-1].done == seen[-1].total and seen[-1].unit == "chunk"
    with pytest.raises(nbseg.InputError, match="already exists"):
        nbseg.uncertainty(model, image, out=tmp_path / "u.zarr")
    lazy = image.chunk({"z": 2})
    np.testing.assert_allclose(nbseg.uncertainty(model, lazy).values, expected.values, atol=1e-5)
    labels2, u2 = nbseg.segment(model, lazy, out=tmp_path / "both.zarr", return_uncertainty=True)
    assert labels2.dtype == np.int16
    assert set(xr.open_zarr(tmp_path / "both.zarr").data_vars) == {"labels", "uncertainty"}
    np.testing.assert_allclose(u2.values, expected.values, atol=1e-5)


def test_output_on_its_input_is_refused(trained, tmp_path):
    model, image, *_ = trained
    image.to_dataset(name="image").to_zarr(tmp_path / "in.zarr")
    lazy = xr.open_zarr(tmp_path / "in.zarr")["image"]
    with pytest.raises(nbseg.InputError, match="input"):
        nbseg.uncertainty(model, lazy, out=tmp_path / "in.zarr", overwrite=True)
    assert (tmp_path / "in.zarr").exists()
    assert xr.open_zarr(tmp_path / "in.zarr")["image"].shape == image.shape


# -- suggestions: scoring logic on probabilities whose answer is known -------------------------
def _known_probabilities(monkeypatch, shape=(12, 32, 32), unsure=range(6, 12), k=3):
    """segment() returns confident probabilities, except on the ``unsure`` slices where a
    rare third class competes with the background."""
    z = np.arange(shape[0])
    p = np.zeros((k, *shape), np.float32)
    p[0] = 0.97
    p[1] = 0.02
    p[2] = 0.01
    for i in unsure:
        p[0, i, 8:24, 8:24] = 0.5
        p[2, i, 8:24, 8:24] = 0.49
    coords = {"z": z, "y": np.arange(shape[1]), "x": np.arange(shape[2])}
    probs = xr.DataArray(p, dims=("class", "z", "y", "x"), coords={**coords, "class": list("abc")})
    image = xr.DataArray(np.zeros(shape, np.float32), dims=("z", "y", "x"), coords=coords)

    def fake_segment(model, image_, mask=None, **kw):
        return probs

    monkeypatch.setattr(unc, "segment", fake_segment)
    return image


def test_suggestions_go_where_the_unlabelled_class_is(monkeypatch):
    image = _known_probabilities(monkeypatch)
    picks = nbseg.suggest_slices(None, image, count=3)
    assert len(picks) == 3 and all(6 <= z < 12 for z in picks)
    assert all(abs(a - b) > 1 for i, a in enumerate(picks) for b in picks[i + 1 :])


def test_suggestions_skip_labelled_slices_and_respect_the_mask(monkeypatch):
    image = _known_probabilities(monkeypatch)
    labels = xr.full_like(image, nbseg.UNLABELLED, dtype=np.int16)
    labels[[6, 8, 10]] = 0
    picks = nbseg.suggest_slices(None, image, labels, count=3)
    assert not {6, 8, 10} & set(picks) and all(6 <= z < 12 for z in picks)
    mask = xr.zeros_like(image, dtype=bool)
    mask[:4] = True
    picks = nbseg.suggest_slices(None, image, mask=mask, count=2)
    assert all(z < 4 for z in picks)


def test_adjacent_only_when_nothing_else_is_left(monkeypatch):
    image = _known_probabilities(monkeypatch, shape=(3, 16, 16), unsure=range(3))
    assert sorted(nbseg.suggest_slices(None, image, count=3)) == [0, 1, 2]


def test_regions_point_at_the_unsure_box(monkeypatch):
    image = _known_probabilities(monkeypatch)
    regions = nbseg.suggest_regions(None, image, count=3, size=16)
    assert len(regions) == 3 and all(isinstance(r, nbseg.Region) for r in regions)
    best = regions[0]
    assert 6 <= best.z < 12 and best.y1 - best.y0 == 16
    assert best.y0 < 24 and best.y1 > 8 and best.x0 < 24 and best.x1 > 8
    assert regions[0].score >= regions[-1].score


@pytest.mark.parametrize(
    "kwargs, word",
    [({"count": 0}, "count"), ({"axis": "t"}, "axis"), ({"quantile": 2}, "quantile")],
)
def test_bad_suggestion_arguments_are_named(monkeypatch, kwargs, word):
    image = _known_probabilities(monkeypatch)
    with pytest.raises(nbseg.InputError, match=word):
        nbseg.suggest_slices(None, image, **kwargs)


def test_confidently_wrong_slices_are_found_by_novelty(monkeypatch):
    """The model is sure everywhere (as softmax networks are on what they never saw), but
    slices 7-10 hold a bright phase absent from the labelled slices 0 and 3: the
    suggestions (slices and boxes) go there, and only because of the labels' coverage."""
    _known_probabilities(monkeypatch, unsure=())
    rng = np.random.default_rng(0)
    values = rng.normal(100, 5, (12, 32, 32)).astype(np.float32)
    values[7:11, 4:14, 18:28] = 200 + rng.normal(0, 5, (4, 10, 10))
    image = xr.DataArray(values, dims=("z", "y", "x"))
    labels = xr.full_like(image, nbseg.UNLABELLED, dtype=np.int16)
    labels[[0, 3]] = 0
    picks = nbseg.suggest_slices(None, image, labels, count=2)
    assert len(picks) == 2 and all(7 <= z <= 10 for z in picks)
    best = nbseg.suggest_regions(None, image, labels, count=1, size=16)[0]
    assert 7 <= best.z <= 10 and best.y0 < 14 and best.y1 > 4 and best.x0 < 28 and best.x1 > 18
    s = unc.suggest(None, image, labels, count=2, regions=1, size=16)  # the Label tab's call
    assert s.slices == picks and all(v > 0.05 for v in s.slice_novelty)
    assert s.uncertain_mask(s.slices[0])[4:14, 18:28].mean() > 0.9  # outlined there
    # once a bright slice is labelled, that phase is covered: nothing is novel any more
    labels[8] = 1
    inside = np.ones(image.shape, bool)
    assert unc.novelty(image, labels, inside, ["z", "y", "x"])[[7, 9, 10]].mean() < 0.01
    assert unc.novelty(image, None, inside, ["z", "y", "x"]) is None


def test_novelty_reads_every_input_channel():
    base = np.full((4, 16, 16), 10.0, np.float32) + np.arange(16, dtype=np.float32)
    other = base.copy()
    other[3, :8] = 90.0  # only the second input differs, on slice 3
    c = xr.DataArray(np.stack([base, other]), dims=("c", "z", "y", "x"))
    labels = np.full((4, 16, 16), -1, np.int16)
    labels[0] = 0
    novel = unc.novelty(c, labels, np.ones((4, 16, 16), bool), ["z", "y", "x"])
    assert novel[3, :8].all() and not novel[:3].any() and not novel[3, 8:].any()
    split = unc.novelty([c.isel(c=0), c.isel(c=1)], labels, np.ones((4, 16, 16), bool), "zyx")
    assert np.array_equal(novel, split)


def test_novelty_streams_slab_by_slab_and_reads_dask(monkeypatch):
    """Slabs of a few slices, a strided sample for the range and a dask image give the
    answer of the whole-array pass."""
    rng = np.random.default_rng(1)
    values = rng.normal(100, 5, (12, 32, 32)).astype(np.float32)
    values[7:11, 4:14, 18:28] = 200
    image = xr.DataArray(values, dims=("z", "y", "x"))
    labels = np.full(values.shape, nbseg.UNLABELLED, np.int16)
    labels[[0, 3]] = 0
    inside = np.ones(values.shape, bool)
    whole = unc.novelty(image, labels, inside, "zyx")
    assert whole[7:11, 4:14, 18:28].all() and whole.mean() < 0.05
    monkeypatch.setattr(unc, "NOVELTY_SLAB_VOXELS", 3 * 32 * 32)  # 4 slabs of 3 slices
    assert np.array_equal(unc.novelty(image, labels, inside, "zyx"), whole)
    assert np.array_equal(unc.novelty(image.chunk({"z": 2}), labels, inside, "zyx"), whole)
    monkeypatch.setattr(unc, "NOVELTY_SAMPLE", 1000)  # the range from every 12th voxel
    sampled = unc.novelty(image, labels, inside, "zyx")
    assert sampled[7:11, 4:14, 18:28].all() and (sampled != whole).mean() < 0.01


def test_suggestions_on_a_multichannel_image_with_labels(monkeypatch):
    """A (c, z, y, x) image: the labels (z, y, x) are those of its voxels, not refused."""
    _known_probabilities(monkeypatch, unsure=range(6, 12))
    values = np.zeros((2, 12, 32, 32), np.float32)
    values[1] = np.arange(32, dtype=np.float32)
    image = xr.DataArray(values, dims=("c", "z", "y", "x"))
    labels = xr.DataArray(np.full((12, 32, 32), nbseg.UNLABELLED, np.int16), dims=("z", "y", "x"))
    labels[[6, 8]] = 0
    picks = nbseg.suggest_slices(None, image, labels, count=2)
    assert len(picks) == 2 and not {6, 8} & set(picks) and all(6 <= z < 12 for z in picks)
    s = unc.suggest(None, image, labels, count=2, regions=2, size=16)
    assert s.slices == picks and all(r.z not in (6, 8) for r in s.regions)
    with pytest.raises(nbseg.InputError, match="axis='c'"):
        nbseg.suggest_slices(None, image, labels, axis="c")
    with pytest.raises(nbseg.InputError, match="labels has shape"):
        nbseg.suggest_slices(None, image, labels.isel(z=slice(0, 6)))


def test_regions_report_the_slice_whatever_the_dim_order(monkeypatch):
    """An image stored (y, x, z): a region's ``z`` is still the slice."""
    image = _known_probabilities(monkeypatch)
    best = nbseg.suggest_regions(None, image, count=1, size=16)[0]
    from nbseg.inference.uncertainty import _rank_regions, _voxel_scores

    probs = unc.segment(None, image)
    u = 1 - probs.max("class")
    pred = probs.argmax("class")
    score, inside = _voxel_scores(u.transpose("y", "x", "z"), pred.transpose("y", "x", "z"), 3)
    moved = _rank_regions(score, inside, None, 1, 16)[0]
    assert 6 <= moved.z < 12 and 6 <= best.z < 12
    assert (moved.y0, moved.x0) == (best.y0, best.x0)


def test_real_model_finds_the_layer_the_labels_missed():
    """A dense-mineral layer (z 16-19) that neither labelled slice (4, 10) crosses: the
    suggested slices lie in it."""
    ds = nbseg.datasets.multiphase(shape=(24, 64, 64), seed=0, dense_grains=0, dense_layer=(16, 19))
    truth = ds.truth.values.astype(np.int16)
    lab = np.full(truth.shape, nbseg.UNLABELLED, np.int16)
    lab[[4, 10]] = truth[[4, 10]]
    labels = nbseg.multi_roi(ds.truth.copy(data=lab), ["pore", "matrix", "grain", "dense"])
    spec = nbseg.ModelSpec(class_count=4, input_dimension="2D", parameters=TINY)
    model = nbseg.generate_model(spec, class_names=["pore", "matrix", "grain", "dense"], seed=0)
    nbseg.train(
        model,
        nbseg.TrainingSet(ds.image, labels),
        nbseg.TrainingParams(epochs=2, patch_size=32),
        feedback=False,
    )
    picks = nbseg.suggest_slices(model, ds.image, labels, count=2)
    assert all(14 <= z <= 21 for z in picks), picks


def test_real_model_suggests_unlabelled_slices(trained):
    model, image, labels, _ = trained
    picks = nbseg.suggest_slices(model, image, labels, count=3)
    assert len(picks) == 3 and not {1, 5} & set(picks)
    assert all(0 <= z < image.sizes["z"] for z in picks)


# -- command line ------------------------------------------------------------------------------
def test_cli_suggest_and_segment_with_uncertainty(trained, tmp_path, capsys):
    from nbseg.cli import main

    model, image, labels, _ = trained
    model.save(tmp_path / "m.nbseg")
    np.save(tmp_path / "image.npy", image.values)
    np.save(tmp_path / "labels.npy", labels.values)
    args = ["suggest", str(tmp_path / "m.nbseg"), str(tmp_path / "image.npy")]
    assert main([*args, "--labels", str(tmp_path / "labels.npy"), "--count", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    picks = [int(v) for v in line.split(":")[1].split(",")]
    assert len(picks) == 2 and not {1, 5} & set(picks)
    assert main([*args, "--regions", "2", "--size", "16"]) == 0
    assert capsys.readouterr().out.count("score") == 2

    seg = ["segment", str(tmp_path / "m.nbseg"), str(tmp_path / "image.npy")]
    out, u = tmp_path / "labels_out.npy", tmp_path / "u.npy"
    assert main([*seg, str(out), "--uncertainty", str(u)]) == 0
    np.testing.assert_allclose(np.load(u), nbseg.uncertainty(model, image).values, atol=1e-6)
    assert main([*seg, str(tmp_path / "other.npy"), "--uncertainty", str(u)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*seg, str(tmp_path / "z.zarr"), "--uncertainty", str(tmp_path / "u.zarr")]) == 0
    streamed = xr.open_zarr(tmp_path / "u.zarr")["uncertainty"]
    np.testing.assert_allclose(streamed.values, np.load(u), atol=1e-5)


def test_suggest_gives_slices_regions_and_maps_of_one_pass(trained):
    model, image, labels, _ = trained
    s = unc.suggest(model, image, labels, count=2, regions=3, size=16)
    assert s.slices == nbseg.suggest_slices(model, image, labels, count=2)
    assert s.regions == nbseg.suggest_regions(model, image, labels, count=3, size=16)
    assert len(s.slice_scores) == 2 and s.slice_scores[0] >= s.slice_scores[1]
    assert not {1, 5} & set(s.slices)  # labelled slices skipped
    np.testing.assert_allclose(
        s.uncertainty.values, nbseg.uncertainty(model, image).values, atol=1e-6
    )
    xr.testing.assert_equal(s.prediction.drop_attrs(), nbseg.segment(model, image).drop_attrs())
    m = s.uncertain_mask(s.slices[0])
    assert m.shape == image.shape[1:] and m.dtype == bool
    with pytest.raises(nbseg.InputError, match="regions=0"):
        unc.suggest(model, image, regions=0)


@pytest.mark.parametrize("method", ["entropy", "tta"])
def test_preview_uncertainty_equals_the_volume_map_on_that_slice(trained, method):
    model, image, *_ = trained
    mask = image.copy(data=np.zeros(image.shape, bool))
    mask[:, 4:44, 4:44] = True
    labels, u = nbseg.preview(
        model, image, 3, mask=mask, return_uncertainty=True, uncertainty_method=method
    )
    assert u.dims == ("y", "x") and labels.dims == ("y", "x")
    full = nbseg.uncertainty(model, image, mask, method=method)
    np.testing.assert_allclose(u.values, full.values[3], atol=1e-5)
    whole, _ = nbseg.segment(model, image, mask, return_uncertainty=True, uncertainty_method=method)
    np.testing.assert_array_equal(labels.values, whole.values[3])
    assert float(u.values[~mask.values[3]].max()) == 0.0
    assert (labels.values[~mask.values[3]] == -1).all()


def test_preview_tta_along_another_dim_keeps_the_slice(trained):
    model, image, *_ = trained
    labels, u = nbseg.preview(
        model, image, 20, dim="y", return_uncertainty=True, uncertainty_method="tta"
    )
    assert u.dims == ("z", "x") and labels.shape == (8, 48)
    # a 2D model previews y-slices as (z, x) images: the map of the volume seen along y,
    # flipped in z and x only, at y = 20 (flipping y would have moved the slice)
    seen_along_y = image.transpose("y", "z", "x").rename({"y": "t"})
    seen_along_y = seen_along_y.rename({"z": "y"}).rename({"t": "z"})
    along_y = nbseg.uncertainty(model, seen_along_y, method="tta")
    np.testing.assert_allclose(u.values, along_y.values[20], atol=1e-5)


def test_segmentation_run_computes_a_lazy_result_in_the_job(trained):
    model, image, *_ = trained
    run = nbseg.SegmentationRun(model, image.chunk({"z": 2}), compute=True)
    run.start()
    run.wait(60)
    assert run.status == "completed" and run.result.chunks is None
    s = unc.suggest(model, image, count=1)
    assert s.unsure_level >= 0.5
    assert s.uncertain_mask(0).sum() == (s.uncertainty.values[0] > s.unsure_level).sum()
