"""Compare a segmentation with ground truth, and show a slice with its labels in a notebook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from ._png import encode_png
from .data.multiroi import UNLABELLED, default_class_colors
from .data.trainingset import check_dtype
from .errors import InputError
from .render import render_overlay, to_uint8
from .training.losses import metrics_from_confusion


def evaluate(
    prediction: xr.DataArray | np.ndarray,
    truth: xr.DataArray | np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    mask: xr.DataArray | np.ndarray | None = None,
) -> dict[str, float]:
    """Dice and IoU per class, their means, and accuracy of ``prediction`` against ``truth``.

    Voxels where ``truth`` is unlabelled (< 0) or outside ``mask`` are ignored. Keys:
    ``dice``, ``iou``, ``accuracy``, ``dice_<class>``, ``iou_<class>`` (class names from
    ``class_names``, else the truth's ``class_names`` attribute, else ``0 … K-1``).
    """
    if isinstance(prediction, xr.DataArray) and "class" in prediction.dims:
        raise InputError(
            "evaluate: prediction has a 'class' dim (probabilities); pass labels, e.g. "
            "prediction.argmax('class'), or segment without probabilities=True."
        )
    if isinstance(prediction, xr.DataArray) and isinstance(truth, xr.DataArray):
        prediction = _aligned_to(prediction, truth, "prediction")
    if isinstance(mask, xr.DataArray) and isinstance(truth, xr.DataArray):
        mask = _aligned_to(mask, truth, "mask")
    p = _class_ids(prediction, "prediction")
    t = _class_ids(truth, "truth")
    if p.shape != t.shape:
        raise InputError(
            f"evaluate: prediction has shape {p.shape} but truth has shape {t.shape}; "
            "compare arrays of the same geometry."
        )
    if class_names is None and isinstance(truth, xr.DataArray):
        class_names = truth.attrs.get("class_names")
    if class_names is None and isinstance(prediction, xr.DataArray):
        class_names = prediction.attrs.get("class_names")
    keep = t >= 0
    if mask is not None:
        keep &= np.asarray(mask).astype(bool)
    keep &= p >= 0
    k = int(max(t[keep].max(initial=0), p[keep].max(initial=0))) + 1
    if class_names is not None:
        k = max(k, len(class_names))
    idx = t[keep].astype(np.int64) * k + p[keep].astype(np.int64)
    cm = np.bincount(idx, minlength=k * k).reshape(k, k)
    names = list(class_names)[:k] if class_names is not None else None
    if names is not None and len(names) < k:
        names += [str(i) for i in range(len(names), k)]
    return metrics_from_confusion(torch.from_numpy(cm), names)


def _aligned_to(da: xr.DataArray, ref: xr.DataArray, name: str) -> xr.DataArray:
    """``da`` in ``ref``'s dim order when its dims are the same names in another order."""
    if da.dims != ref.dims and set(da.dims) == set(ref.dims):
        return da.transpose(*ref.dims)
    return da


def _class_ids(array: xr.DataArray | np.ndarray, name: str) -> np.ndarray:
    """Integer class ids (``-1`` = unlabelled); refuses complex, text and fractional values."""
    if array is None or isinstance(array, (str, bytes)):
        raise InputError(f"evaluate: {name} must be an array of class ids, got {array!r}.")
    a = np.asarray(array)
    check_dtype(a, f"evaluate: {name}")
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return a
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise InputError(
            f"evaluate: {name} holds non-integer values (dtype {a.dtype}); pass class ids "
            "(e.g. nbseg.segment's labels, or probabilities.argmax('class'))."
        )
    return a.astype(np.int64)


def overlay(
    image: xr.DataArray | np.ndarray,
    labels: xr.DataArray | np.ndarray | None = None,
    index: int | None = None,
    *,
    opacity: float = 0.45,
    colors: Sequence[str] | None = None,
) -> np.ndarray:
    """RGB uint8 rendering of one slice (``index`` along the first axis of a 3D volume,
    default the middle) with ``labels`` blended over it; unlabelled voxels stay grey."""
    img = np.asarray(image)
    lab = None if labels is None else np.asarray(labels)
    if lab is not None and lab.shape != img.shape:
        raise InputError(
            f"overlay: labels have shape {lab.shape} but the image has shape {img.shape}."
        )
    if img.ndim == 3:
        index = img.shape[0] // 2 if index is None else int(index)
        if not 0 <= index < img.shape[0]:
            raise InputError(f"overlay: slice {index} is outside 0 … {img.shape[0] - 1}.")
        img = img[index]
        lab = None if lab is None else lab[index]
    elif img.ndim != 2:
        raise InputError(f"overlay: expected a 2D image or a 3D volume, got shape {img.shape}.")
    if colors is None:
        attrs = getattr(labels, "attrs", {}) or {}
        k = int(lab.max()) + 1 if lab is not None and lab.size and lab.max() >= 0 else 2
        colors = attrs.get("class_colors") or default_class_colors(max(k, 2))
    if lab is not None:
        lab = np.where(lab == UNLABELLED, -1, lab)
    return render_overlay(to_uint8(img), lab, list(colors), opacity)


def show(
    image: xr.DataArray | np.ndarray,
    labels: xr.DataArray | np.ndarray | None = None,
    index: int | None = None,
    *,
    opacity: float = 0.45,
    width: int = 384,
) -> Any:
    """A notebook-displayable PNG (``ipywidgets.Image``) of :func:`overlay`; several
    ``labels`` side by side when a list is given (e.g. ``[truth, prediction]``)."""
    import ipywidgets as widgets

    label_list = labels if isinstance(labels, (list, tuple)) else [labels]
    images = [
        widgets.Image(
            value=encode_png(overlay(image, lab, index, opacity=opacity)),
            format="png",
            layout=widgets.Layout(width=f"{width}px"),
        )
        for lab in label_list
    ]
    return images[0] if len(images) == 1 else widgets.HBox(images)
