"""The embedded synthetic sample volumes (nbseg.datasets)."""

from __future__ import annotations

import numpy as np
import pytest

import nbseg
from nbseg import datasets

CLASSES = {
    "fibres": ["background", "fibre"],
    "multiphase": ["pore", "matrix", "grain", "dense"],
    "membranes": ["interior", "membrane"],
}


@pytest.fixture(scope="module")
def samples():
    return {name: datasets.load(name) for name in datasets.SAMPLES}


def otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def test_samples_list_and_classes():
    assert datasets.SAMPLES == ("fibres", "multiphase", "membranes")
    assert set(CLASSES) == set(datasets.SAMPLES)


@pytest.mark.parametrize("name", datasets.SAMPLES)
def test_structure(samples, name):
    ds = samples[name]
    assert set(ds.data_vars) == {"image", "labels", "truth"}
    image, labels, truth = ds["image"], ds["labels"], ds["truth"]
    for da in (image, labels, truth):
        assert da.dims == ("z", "y", "x")
        assert da.shape == image.shape
        for dim in ("z", "y", "x"):
            assert da[dim].attrs["units"] == "µm"
            assert np.all(np.diff(da[dim].values) > 0)
    assert image.dtype in (np.uint8, np.uint16)
    assert image.attrs["units"] and image.attrs["description"]
    assert labels.dtype == np.int16 and truth.dtype == np.int16
    names = CLASSES[name]
    for da in (labels, truth):
        assert da.attrs["class_names"] == names
        colors = da.attrs["class_colors"]
        assert len(colors) == len(names)
        assert all(len(c) == 7 and c.startswith("#") and int(c[1:], 16) >= 0 for c in colors)
    assert ds.attrs["name"] == name and ds.attrs["description"]
    # every class present in the truth, and nothing else
    assert sorted(np.unique(truth.values)) == list(range(len(names)))
    # image is not saturated or constant
    values = image.values
    info = np.iinfo(values.dtype)
    assert values.std() > 0.02 * (info.max - info.min)
    assert np.mean((values == info.min) | (values == info.max)) < 0.05


@pytest.mark.parametrize("name", datasets.SAMPLES)
def test_labels_only_on_labelled_slices(samples, name):
    ds = samples[name]
    labels, truth = ds["labels"].values, ds["truth"].values
    slices = ds.attrs["labelled_slices"]
    assert slices == sorted(set(slices)) and len(slices) >= 3
    np.testing.assert_array_equal(labels[slices], truth[slices])
    others = [z for z in range(labels.shape[0]) if z not in slices]
    assert others, "some slices must stay unlabelled"
    assert np.all(labels[others] == nbseg.UNLABELLED)
    # the labelled slices together show every class
    assert set(np.unique(labels[slices])) == set(range(len(CLASSES[name])))


@pytest.mark.parametrize("name", datasets.SAMPLES)
def test_deterministic(name):
    shape = (4, 48, 40)
    a = datasets.load(name, shape=shape, labelled_slices=2, seed=3)
    b = datasets.load(name, shape=shape, labelled_slices=2, seed=3)
    c = datasets.load(name, shape=shape, labelled_slices=2, seed=4)
    for var in ("image", "labels", "truth"):
        np.testing.assert_array_equal(a[var].values, b[var].values)
    assert not np.array_equal(a["image"].values, c["image"].values)
    assert not np.array_equal(a["truth"].values, c["truth"].values)
    assert a["image"].shape == shape


def test_labelled_slices_options():
    ds = datasets.fibres(shape=(10, 32, 32), labelled_slices=[7, 2])
    assert ds.attrs["labelled_slices"] == [2, 7]
    assert np.all(ds["labels"].values[[0, 1, 3, 4, 5, 6, 8, 9]] == -1)
    assert datasets.fibres(shape=(32, 32, 32)).attrs["labelled_slices"] == [5, 16, 26]
    assert datasets.membranes(shape=(8, 32, 32), labelled_slices=8).attrs[
        "labelled_slices"
    ] == list(range(8))
    single = datasets.multiphase(shape=(1, 40, 40), labelled_slices=1)
    assert single.attrs["labelled_slices"] == [0]
    assert np.all(single["labels"].values >= 0)


def test_noise_level_changes_image_not_truth():
    a = datasets.membranes(shape=(3, 48, 48), noise=1.0)
    b = datasets.membranes(shape=(3, 48, 48), noise=0.0)
    np.testing.assert_array_equal(a["truth"].values, b["truth"].values)
    assert a["image"].values.astype(float).std() > b["image"].values.astype(float).std()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"shape": (4, 8, 8)}, nbseg.InputError, "too small"),
        ({"shape": (4, 64)}, nbseg.InputError, "three integers"),
        ({"shape": "big"}, nbseg.InputError, "three integers"),
        ({"labelled_slices": 0}, nbseg.InputError, "between 1"),
        ({"labelled_slices": [0, 99]}, nbseg.InputError, "outside"),
        ({"labelled_slices": [1, 1]}, nbseg.InputError, "duplicates"),
        ({"labelled_slices": []}, nbseg.InputError, "empty"),
        ({"noise": -1}, nbseg.ParamsError, "noise"),
        ({"noise": float("nan")}, nbseg.ParamsError, "noise"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"shape": (4, 32, 32), **kwargs}
    with pytest.raises(error, match=match):
        datasets.fibres(**kwargs)


def test_load_unknown_name_and_arguments():
    with pytest.raises(nbseg.InputError, match="fibres, multiphase, membranes"):
        datasets.load("sandstone")
    with pytest.raises(nbseg.InputError, match="accepted"):
        datasets.load("fibres", size=3)


def test_fibres_threshold_is_not_enough(samples):
    """A global Otsu threshold stays clearly below what a small CNN reaches (~0.88)."""
    ds = samples["fibres"]
    image, truth = ds["image"].values.astype(np.float64), ds["truth"].values
    test = [z for z in range(image.shape[0]) if z not in ds.attrs["labelled_slices"]]
    pred = image[test] > otsu(image)
    fibre = truth[test] == 1
    dice = 2 * (pred & fibre).sum() / (pred.sum() + fibre.sum())
    assert 0.4 < dice < 0.8
    # the classes still differ in mean intensity: the image is informative
    assert image[truth == 1].mean() > image[truth == 0].mean() + 0.5 * image.std()


def test_multiphase_phases_ordered_dark_to_bright(samples):
    ds = samples["multiphase"]
    image, truth = ds["image"].values.astype(float), ds["truth"].values
    means = [image[truth == c].mean() for c in range(4)]
    assert means == sorted(means)
    fractions = np.bincount(truth.ravel(), minlength=4) / truth.size
    assert np.all(fractions > 0.01)


def test_membranes_are_thin_and_dark(samples):
    ds = samples["membranes"]
    image, truth = ds["image"].values.astype(float), ds["truth"].values
    assert 0.1 < (truth == 1).mean() < 0.35
    assert image[truth == 1].mean() < image[truth == 0].mean()


def test_multiphase_dense_grains_makes_a_rare_class():
    """``dense_grains=0`` leaves only the small inclusions: a class under 1 % of the voxels
    (the rare-class case of benchmarks/quality.py); the default is unchanged."""
    rare = nbseg.datasets.multiphase(shape=(8, 128, 128), seed=0, dense_grains=0.0)
    share = float((rare.truth.values == 3).mean())
    assert 0.0 < share < 0.01
    default = nbseg.datasets.multiphase(shape=(8, 128, 128), seed=0)
    same = nbseg.datasets.multiphase(shape=(8, 128, 128), seed=0, dense_grains=0.04)
    assert (default.image.values == same.image.values).all()
    with pytest.raises(nbseg.ParamsError, match="dense_grains"):
        nbseg.datasets.multiphase(shape=(8, 64, 64), dense_grains=1.5)


def test_multiphase_dense_layer_confines_the_dense_class_to_a_z_band():
    """``dense_layer=(z0, z1)`` with ``dense_grains=0``: the dense class lies in the layer
    (inclusions reach 3 slices below it and 4 above) and nowhere else; bad layers are refused
    with the argument named."""
    ds = nbseg.datasets.multiphase(shape=(40, 64, 64), seed=0, dense_grains=0, dense_layer=(20, 23))
    per_slice = (ds.truth.values == 3).sum(axis=(1, 2))
    assert per_slice[20:23].min() > 0
    assert per_slice[:16].sum() == 0 and per_slice[27:].sum() == 0
    assert ds.image.values[ds.truth.values == 3].mean() > ds.image.values.mean() + 50
    for bad in [(5, 5), (-1, 3), (30, 41), (1,), "ab", (1.5, 3)]:
        with pytest.raises(nbseg.InputError, match="dense_layer"):
            nbseg.datasets.multiphase(shape=(40, 64, 64), dense_layer=bad)


def test_strokes_keep_a_share_of_the_labels_inside_one_class_each():
    ds = nbseg.datasets.multiphase(shape=(2, 64, 64), labelled_slices=[0, 1], seed=1)
    dense = ds.labels.values.astype(np.int16)
    s = nbseg.datasets.strokes(dense, 0.1, seed=3)
    kept = s >= 0
    assert 0.1 <= kept.mean() < 0.2
    assert np.array_equal(s[kept], dense[kept])  # every kept label is the true one
    assert np.array_equal(s, nbseg.datasets.strokes(dense, 0.1, seed=3))  # deterministic
    with pytest.raises(nbseg.ParamsError, match="fraction"):
        nbseg.datasets.strokes(dense, 0.0)
