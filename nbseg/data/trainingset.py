"""Training sets: input volume(s) + output multi-ROI (+ mask), validated; normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .multiroi import UNLABELLED, multi_roi

ArrayLike = Any


def as_dataarray(array: ArrayLike, name: str) -> xr.DataArray:
    """Wrap a numpy array as a DataArray with dims ``(z, y, x)`` / ``(y, x)``."""
    if isinstance(array, xr.DataArray):
        da = array
    else:
        arr = np.asarray(array)
        if arr.ndim not in (2, 3):
            raise InputError(
                f"{name} must be a 2D (y, x) or 3D (z, y, x) array, got shape {arr.shape}."
            )
        da = xr.DataArray(arr, dims=("z", "y", "x")[-arr.ndim :], name=name)
    if da.ndim not in (2, 3):
        raise InputError(
            f"{name} must have dims (z, y, x) or (y, x), got dims {da.dims} with shape "
            f"{da.shape}; select a channel/time point first (e.g. image.isel(c=0))."
        )
    return da


def volume_of(da: xr.DataArray) -> np.ndarray:
    """The values as a 3D ``(z, y, x)`` numpy array (a 2D image gets ``z`` of size 1)."""
    arr = np.asarray(da.values)
    return arr[None] if arr.ndim == 2 else arr


def check_finite(da: xr.DataArray, name: str) -> None:
    if np.issubdtype(da.dtype, np.floating) or np.issubdtype(da.dtype, np.complexfloating):
        values = np.asarray(da.values)
        bad = ~np.isfinite(values)
        if bad.any():
            where = np.argwhere(bad)[0].tolist()
            raise InputError(
                f"{name} holds {int(bad.sum())} NaN/inf values (first at index {where} of shape "
                f"{values.shape}); replace them (e.g. image.fillna(0)) or mask them out."
            )
    elif not (np.issubdtype(da.dtype, np.integer) or da.dtype == bool):
        raise InputError(f"{name} has dtype {da.dtype}; images must be numeric.")


@dataclass
class TrainingSet:
    """One training set: input(s), output multi-ROI and optional mask of one geometry.

    Parameters
    ----------
    inputs
        The input volume, or a list of volumes (one per model input, e.g. two modalities);
        ``xarray.DataArray`` with dims ``(z, y, x)`` or ``(y, x)``, any numeric dtype.
    output
        The multi-ROI: integer class ids ``0 … class_count-1``, ``-1`` (or the ``unlabelled``
        attribute) where nothing is labelled. Labelling only a few slices is fine.
    mask
        Optional boolean ROI restricting where patches are taken and where the loss counts.
    name
        Shown in widgets and error messages.
    """

    inputs: xr.DataArray | Sequence[xr.DataArray]
    output: xr.DataArray
    mask: xr.DataArray | None = None
    name: str = "training set"
    _inputs: list[xr.DataArray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        raw = [self.inputs] if not isinstance(self.inputs, (list, tuple)) else list(self.inputs)
        if not raw:
            raise InputError(f"{self.name}: no input given; pass at least one image.")
        self._inputs = [as_dataarray(a, f"{self.name} input {i}") for i, a in enumerate(raw)]
        self.output = multi_roi(as_dataarray(self.output, f"{self.name} output"))
        if self.mask is not None:
            self.mask = as_dataarray(self.mask, f"{self.name} mask")
        self._check_geometry()

    # -- properties ----------------------------------------------------------------------
    @property
    def input_list(self) -> list[xr.DataArray]:
        return self._inputs

    @property
    def input_count(self) -> int:
        return len(self._inputs)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Geometry as ``(z, y, x)`` (``z`` = 1 for a 2D image)."""
        s = self._inputs[0].shape
        return (1, *s) if len(s) == 2 else tuple(s)  # type: ignore[return-value]

    @property
    def class_names(self) -> list[str]:
        return list(self.output.attrs["class_names"])

    @property
    def class_colors(self) -> list[str]:
        return list(self.output.attrs["class_colors"])

    # -- validation ----------------------------------------------------------------------
    def _check_geometry(self) -> None:
        ref = self._inputs[0]
        for i, da in enumerate(self._inputs[1:], start=1):
            if da.shape != ref.shape:
                raise InputError(
                    f"{self.name}: input {i} has shape {da.shape} but input 0 has {ref.shape}; "
                    "several inputs are modalities of one geometry and must match."
                )
        for what, other in (("output multi-ROI", self.output), ("mask", self.mask)):
            if other is not None and other.shape != ref.shape:
                raise InputError(
                    f"{self.name}: {what} has shape {other.shape} but the input has {ref.shape}; "
                    "they must share one geometry."
                )

    def validate(self, input_count: int | None = None, class_count: int | None = None) -> None:
        """Check values against a model: input count, finite values, classes, labels, mask."""
        if input_count is not None and self.input_count != input_count:
            raise InputError(
                f"{self.name}: the model takes {input_count} input(s) but this training set has "
                f"{self.input_count}; pass inputs=[...] with one volume per model input."
            )
        for i, da in enumerate(self._inputs):
            check_finite(da, f"{self.name} input {i}")
        labels = np.asarray(self.output.values)
        labelled = labels != UNLABELLED
        if self.mask is not None:
            labelled &= np.asarray(self.mask.values).astype(bool)
        if not labelled.any():
            where = "inside the mask " if self.mask is not None else ""
            raise InputError(
                f"{self.name}: the output multi-ROI has no labelled voxel {where}(all are "
                f"{UNLABELLED}); paint at least one slice or pass a labelled multi-ROI."
            )
        if class_count is not None:
            top = int(labels[labels != UNLABELLED].max())
            if top >= class_count:
                raise InputError(
                    f"{self.name}: the multi-ROI holds class id {top} but the model has "
                    f"{class_count} classes (ids 0 … {class_count - 1}); generate a model with "
                    f"class_count={top + 1} or relabel."
                )

    def labels_volume(self) -> np.ndarray:
        """Labels as int16 ``(z, y, x)``, with voxels outside the mask set to unlabelled."""
        labels = volume_of(self.output).astype(np.int16)
        if self.mask is not None:
            labels = np.where(volume_of(self.mask).astype(bool), labels, UNLABELLED).astype(
                np.int16
            )
        return labels


@dataclass
class Normalisation:
    """Per-input intensity normalisation ``(x - low) / (high - low)``, stored with the model.

    ``low``/``high`` are robust percentiles (default 0.5 % and 99.5 %) of the training inputs,
    so ``segment`` reproduces the training intensities on new volumes.
    """

    low: list[float]
    high: list[float]
    method: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)

    @classmethod
    def fit(
        cls,
        training_sets: Sequence[TrainingSet],
        percentiles: tuple[float, float] = (0.5, 99.5),
        max_samples: int = 2_000_000,
        seed: int = 0,
    ) -> Normalisation:
        count = training_sets[0].input_count
        rng = np.random.default_rng(seed)
        low, high = [], []
        for i in range(count):
            samples = []
            for ts in training_sets:
                vals = np.asarray(ts.input_list[i].values).ravel()
                take = max_samples // max(1, len(training_sets))
                if vals.size > take:
                    vals = vals[rng.integers(0, vals.size, take)]
                samples.append(vals.astype(np.float64))
            allv = np.concatenate(samples)
            lo, hi = np.percentile(allv, percentiles)
            if not hi > lo:
                lo, hi = float(allv.min()), float(allv.max())
            if not hi > lo:
                hi = lo + 1.0
            low.append(float(lo))
            high.append(float(hi))
        return cls(low=low, high=high, percentiles=(percentiles[0], percentiles[1]))

    def apply(self, volume: np.ndarray, index: int) -> np.ndarray:
        """Normalise input ``index`` to float32."""
        lo, hi = self.low[index], self.high[index]
        out = volume.astype(np.float32)
        out -= np.float32(lo)
        out *= np.float32(1.0 / (hi - lo))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "low": self.low,
            "high": self.high,
            "percentiles": list(self.percentiles),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        return cls(
            low=[float(v) for v in data["low"]],
            high=[float(v) for v in data["high"]],
            method=data.get("method", "percentile"),
            percentiles=tuple(data.get("percentiles", (0.5, 99.5))),
        )
