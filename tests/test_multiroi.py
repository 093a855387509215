import numpy as np
import pytest
import xarray as xr

import nbseg
from nbseg.data.multiroi import UNLABELLED, extract_labelled_slices, from_binary_rois, multi_roi


def test_plain_integer_array_is_fully_labelled_multiroi_with_defaults():
    labels = xr.DataArray(np.array([[0, 1], [2, 1]], dtype=np.uint8), dims=("y", "x"))
    roi = multi_roi(labels)
    assert roi.dtype == np.int16
    assert roi.attrs["class_names"] == ["background", "class 1", "class 2"]
    assert len(roi.attrs["class_colors"]) == 3
    assert (roi.values == labels.values).all()


def test_unlabelled_marker_attribute_is_converted():
    labels = xr.DataArray(np.array([[255, 1], [0, 255]], dtype=np.uint8), dims=("y", "x"))
    labels.attrs["unlabelled"] = 255
    roi = multi_roi(labels, ["a", "b"])
    assert (roi.values == [[UNLABELLED, 1], [0, UNLABELLED]]).all()
    assert "unlabelled" not in roi.attrs


def test_labels_beyond_named_classes_raise():
    with pytest.raises(nbseg.InputError, match="class id 3"):
        multi_roi(np.array([[0, 3]]), ["a", "b"])


def test_float_labels_with_fractions_raise():
    with pytest.raises(nbseg.InputError, match="non-integer"):
        multi_roi(xr.DataArray(np.array([[0.5, 1.0]]), dims=("y", "x")))


def test_from_binary_rois_later_wins_and_complement():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    roi = from_binary_rois([a, b], ["a", "b"])
    assert roi.values[0, 0] == 0 and roi.values[1, 0] == 1 and roi.values[3, 0] == UNLABELLED
    dense = from_binary_rois([a, b], ["a", "b"], complement="background")
    assert dense.attrs["class_names"] == ["background", "a", "b"]
    assert dense.values[3, 0] == 0 and dense.values[0, 0] == 1 and dense.values[2, 0] == 2


def test_extract_labelled_slices_keeps_coords_and_context():
    img = xr.DataArray(
        np.arange(6 * 4 * 4).reshape(6, 4, 4),
        dims=("z", "y", "x"),
        coords={"z": np.arange(6) * 0.5},
    )
    lab = np.full((6, 4, 4), -1, np.int16)
    lab[3] = 1
    lab[3, 0, 0] = 0
    roi = multi_roi(xr.DataArray(lab, dims=img.dims, coords=img.coords), ["a", "b"])
    small_img, small_lab = extract_labelled_slices(img, roi, context=1)
    assert list(small_img.z.values) == [1.0, 1.5, 2.0]
    assert nbseg.labelled_slices(small_lab) == [1]
