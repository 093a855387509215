import numpy as np
import pytest
import xarray as xr

import nbseg
from nbseg.data.trainingset import Normalisation


def _vol(shape=(4, 16, 16), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.random(shape).astype(dtype), dims=("z", "y", "x")[-len(shape) :])


def _labels(shape=(4, 16, 16)):
    lab = np.full(shape, -1, np.int16)
    lab[1] = 0
    lab[1, 4:8, 4:8] = 1
    return xr.DataArray(lab, dims=("z", "y", "x")[-len(shape) :])


def test_mismatched_geometry_names_both_shapes():
    with pytest.raises(
        nbseg.InputError, match=r"\(4, 16, 16\).*\(4, 16, 15\)|\(4, 16, 15\).*\(4, 16, 16\)"
    ):
        nbseg.TrainingSet(_vol(), _labels().isel(x=slice(0, 15)))


def test_mismatched_inputs():
    with pytest.raises(nbseg.InputError, match="input 1"):
        nbseg.TrainingSet([_vol(), _vol((4, 8, 8))], _labels())


def test_nan_in_image_is_reported_with_position():
    v = _vol()
    v.values[2, 3, 4] = np.nan
    ts = nbseg.TrainingSet(v, _labels())
    with pytest.raises(nbseg.InputError, match=r"NaN/inf.*\[2, 3, 4\]"):
        ts.validate(1, 2)


def test_nothing_labelled():
    ts = nbseg.TrainingSet(
        _vol(), xr.DataArray(np.full((4, 16, 16), -1, np.int16), dims=("z", "y", "x"))
    )
    with pytest.raises(nbseg.InputError, match="no labelled voxel"):
        ts.validate(1, 2)


def test_mask_leaving_nothing_labelled():
    mask = xr.DataArray(np.zeros((4, 16, 16), bool), dims=("z", "y", "x"))
    ts = nbseg.TrainingSet(_vol(), _labels(), mask=mask)
    with pytest.raises(nbseg.InputError, match="inside the mask"):
        ts.validate(1, 2)


def test_class_count_too_small_for_labels():
    lab = _labels()
    lab.values[1, 0, 0] = 2
    ts = nbseg.TrainingSet(_vol(), lab)
    with pytest.raises(nbseg.InputError, match=r"class id 2.*2 classes"):
        ts.validate(1, 2)


def test_wrong_input_count():
    ts = nbseg.TrainingSet(_vol(), _labels())
    with pytest.raises(nbseg.InputError, match="takes 2 input"):
        ts.validate(2, 2)


def test_mask_unlabels_outside():
    mask = np.zeros((4, 16, 16), bool)
    mask[:, :8] = True
    ts = nbseg.TrainingSet(_vol(), _labels(), mask=xr.DataArray(mask, dims=("z", "y", "x")))
    lab = ts.labels_volume()
    assert (lab[:, 8:] == -1).all() and (lab[1, :8] >= 0).all()


def test_normalisation_robust_percentiles_any_dtype():
    v = xr.DataArray(
        np.linspace(1000, 5000, 4 * 16 * 16).reshape(4, 16, 16).astype(np.uint16),
        dims=("z", "y", "x"),
    )
    norm = Normalisation.fit([nbseg.TrainingSet(v, _labels())])
    out = norm.apply(v.values, 0)
    assert out.dtype == np.float32
    assert -0.05 < out.min() < 0.01 and 0.99 < out.max() < 1.05
    again = Normalisation.from_dict(norm.to_dict())
    assert again.low == norm.low and again.high == norm.high
