"""Training sets: input volume(s) + output multi-ROI (+ mask), validated; normalisation.

This is also where the arrays a user passes become nbseg's DataArrays
(:func:`as_dataarray`, :func:`as_input_list`): images, multi-ROIs and masks meet by dim
**name**, plain numpy arrays by position; and where a geometry is checked against a
network (:func:`size_rule`, :func:`check_patch_size`, :meth:`TrainingSet.check_patch`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError, ParamsError, SpecError
from ..models.registry import get_architecture, resolve_parameters, size_divisor
from ..models.spec import ModelSpec
from .multiroi import UNLABELLED, multi_roi

ArrayLike = Any

#: The spatial dims, in the order nbseg works in (a 2D image has the last two).
SPATIAL_DIMS: tuple[str, str, str] = ("z", "y", "x")
#: Dims that hold channels: an input with one is split into one input per channel.
CHANNEL_DIMS: tuple[str, ...] = ("c", "channel")


def as_dataarray(array: ArrayLike, name: str, *, align: bool = True) -> xr.DataArray:
    """One image, multi-ROI or mask as a DataArray with dims ``(z, y, x)`` or ``(y, x)``.

    A numpy array (or anything ``np.asarray`` reads) is positional: ``(z, y, x)`` or
    ``(y, x)``. A DataArray is aligned by dim **name**: dims that are a permutation of
    ``z, y, x`` (or of two of them) are transposed into that order; any other name is
    refused with the ``rename`` that fixes it; a channel dim (``c`` / ``channel``) is refused
    (model inputs split it first, see :func:`as_input_list`). ``align=False`` keeps a
    DataArray's dim order (for callers that slice along another axis on purpose). Complex,
    string and object dtypes are refused: nothing is dropped silently.
    """
    if isinstance(array, xr.DataArray):
        da = array
    else:
        if array is None or isinstance(array, (str, bytes, os.PathLike)):
            hint = ""
            if isinstance(array, (str, os.PathLike)):
                hint = f"; read a file with nbseg.io.read_array({os.fspath(array)!r})"
            raise InputError(
                f"{name} must be an array (xarray.DataArray or numpy) with dims (z, y, x) or "
                f"(y, x), got {type(array).__name__} {array!r}{hint}."
            )
        try:
            arr = np.asarray(array)
        except (TypeError, ValueError) as err:
            raise InputError(
                f"{name} must be an array (xarray.DataArray or numpy); numpy cannot read the "
                f"{type(array).__name__} given as one ({err})."
            ) from None
        if arr.ndim not in (2, 3):
            got = f"a {type(array).__name__}" if arr.ndim == 0 else f"shape {arr.shape}"
            raise InputError(f"{name} must be a 2D (y, x) or 3D (z, y, x) array, got {got}.")
        da = xr.DataArray(arr, dims=SPATIAL_DIMS[-arr.ndim :], name=name)
    check_dtype(da, name)
    return _aligned(da, name) if align else _checked_ndim(da, name)


def check_dtype(da: xr.DataArray | np.ndarray, name: str) -> None:
    """Refuse complex, string and object arrays (by the dtype: no value is read)."""
    dt = da.dtype
    if np.issubdtype(dt, np.complexfloating):
        raise InputError(
            f"{name} is complex-valued (dtype {dt}); nbseg takes real values and never drops "
            "an imaginary part silently: pass the magnitude, abs(array), or the real part, "
            "array.real."
        )
    if not (np.issubdtype(dt, np.number) or np.issubdtype(dt, np.bool_)):
        raise InputError(
            f"{name} has dtype {dt}; images, multi-ROIs and masks must be numeric (or boolean)."
        )


def _checked_ndim(da: xr.DataArray, name: str) -> xr.DataArray:
    if da.ndim not in (2, 3):
        raise InputError(
            f"{name} must have dims (z, y, x) or (y, x), got dims {da.dims} with shape {da.shape}."
        )
    return da


def _aligned(da: xr.DataArray, name: str) -> xr.DataArray:
    dims = tuple(str(d) for d in da.dims)
    c = channel_dim(da)
    if c is not None:
        raise InputError(
            f"{name} has a channel dim {c!r} (dims {dims}); only model inputs take channels "
            f"(one input per channel). Select one with .isel({c}=0), or rename it if it is the "
            f"slice axis: .rename({{{c!r}: 'z'}})."
        )
    unknown = [d for d in dims if d not in SPATIAL_DIMS]
    if unknown:
        spatial = SPATIAL_DIMS[-2:] if len(dims) <= 2 else SPATIAL_DIMS
        free = [d for d in spatial if d not in dims]
        fix = ""
        if len(free) >= len(unknown):
            fix = f", e.g. .rename({dict(zip(unknown, free))})"
        raise InputError(
            f"{name} has dims {dims}: nbseg knows the spatial dims by name, z, y, x ((y, x) "
            f"for a 2D image); {unknown} {'is' if len(unknown) == 1 else 'are'} not. Rename "
            f"them{fix}, or select one position of a non-spatial dim, e.g. "
            f".isel({unknown[0]}=0)."
        )
    _checked_ndim(da, name)
    order = tuple(d for d in SPATIAL_DIMS if d in dims)
    return da if dims == order else da.transpose(*order)


def channel_dim(array: Any) -> str | None:
    """The channel dim (``c`` / ``channel``) of a DataArray, or None."""
    if isinstance(array, xr.DataArray):
        for d in array.dims:
            if str(d) in CHANNEL_DIMS:
                return str(d)
    return None


def as_input_list(inputs: Any, name: str, *, align: bool = True) -> list[xr.DataArray]:
    """A model's input(s) as a list of DataArrays (each through :func:`as_dataarray`),
    named ``"{name} 0"``, ``"{name} 1"`` ... in messages.

    A list or tuple holds one array per model input (the several-inputs convention); a
    DataArray with a channel dim (``c`` or ``channel``) is split into one input per channel,
    in order: ``image`` with dims ``(c, z, y, x)`` means ``[image.isel(c=0), ...]``.
    """
    given = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not given:
        raise InputError(f"{name}: no input given; pass at least one image.")
    out: list[Any] = []
    for a in given:
        c = channel_dim(a)
        if c is None:
            out.append(a)
        else:
            out.extend(a.isel({c: i}, drop=True) for i in range(a.sizes[c]))
    if not out:
        raise InputError(f"{name}: the channel dim holds no channel; pass at least one image.")
    return [as_dataarray(a, f"{name} {i}", align=align) for i, a in enumerate(out)]


def channel_note(inputs: Any) -> str:
    """A note for input-count messages when a channel dim was split, else ``""``."""
    given = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for a in given:
        c = channel_dim(a)
        if c is not None:
            n = a.sizes[c]
            return (
                f" (the {c!r} dim of size {n} counts as {n} inputs, one per channel: select "
                f"one with .isel({c}=0), or rename it to 'z' if it is the slice axis)"
            )
    return ""


def volume_of(da: xr.DataArray) -> np.ndarray:
    """The values as a 3D numpy array, positionally (a 2D image gets a first axis of size
    1); DataArrays from :func:`as_dataarray` are in ``(z, y, x)`` order."""
    arr = np.asarray(da.values)
    return arr[None] if arr.ndim == 2 else arr


def check_finite(da: xr.DataArray, name: str) -> None:
    check_dtype(da, name)
    if np.issubdtype(da.dtype, np.floating):
        values = np.asarray(da.values)
        bad = ~np.isfinite(values)
        if bad.any():
            where = np.argwhere(bad)[0].tolist()
            raise InputError(
                f"{name} holds {int(bad.sum())} NaN/inf values (first at index {where} of shape "
                f"{values.shape}); replace them (e.g. image.fillna(0)) or mask them out."
            )


# -- geometry against a network ----------------------------------------------------------------
def size_rule(spec: ModelSpec) -> tuple[int, str]:
    """The network's size divisor and where it comes from, e.g. ``(8, "U-Net depth 4")``."""
    div = size_divisor(spec)
    info = get_architecture(spec.architecture)
    params = resolve_parameters(spec)
    for key in ("depth", "output_stride"):
        if key in params:
            return div, f"{info.title} {key.replace('_', ' ')} {params[key]}"
    return div, info.title


def nearest_multiples(value: int, divisor: int, limit: int | None = None) -> list[int]:
    """The multiples of ``divisor`` next to ``value`` (at least ``divisor``, at most
    ``limit``): ``nearest_multiples(33, 8) == [32, 40]``."""
    below = max(divisor, value // divisor * divisor)
    out = [below] if below <= value else []
    above = -(-value // divisor) * divisor
    if above not in out:
        out.append(above)
    out = [v for v in out if limit is None or v <= limit]
    return out or ([limit // divisor * divisor] if limit and limit >= divisor else [])


def _alternatives(values: Sequence[Any]) -> str:
    items = [str(v) for v in values]
    return " or ".join(items) if len(items) <= 2 else ", ".join(items[:-1]) + " or " + items[-1]


def patch_sides(spec: ModelSpec, patch_size: Any) -> dict[str, int]:
    """The patch's sides by axis name: ``{"y", "x"}`` in 2D / 2.5D, ``{"z", "y", "x"}`` in
    3D; raises :class:`ParamsError` for a 2-side patch given to a 3D model."""
    axes = SPATIAL_DIMS if spec.spatial_dims == 3 else SPATIAL_DIMS[1:]
    if isinstance(patch_size, (int, np.integer)):
        return {a: int(patch_size) for a in axes}
    size = tuple(int(s) for s in patch_size)
    if len(size) < len(axes):
        raise ParamsError(
            f"TrainingParams.patch_size={size} gives (y, x) but a 3D model needs 3D patches: "
            f"give one side (e.g. {size[-1]}) or (z, y, x) (e.g. {(size[-1], *size)})."
        )
    return dict(zip(axes, size[-len(axes) :]))


def check_patch_size(spec: ModelSpec, patch_size: Any) -> None:
    """Refuse a patch size the network cannot take: each side must be a multiple of its
    :func:`~nbseg.models.registry.size_divisor`; the message names the nearest valid ones."""
    if patch_size is None:
        return
    div, why = size_rule(spec)
    sides = patch_sides(spec, patch_size)
    for axis, p in sides.items():
        if p % div:
            near = nearest_multiples(p, div)
            if isinstance(patch_size, (int, np.integer)):
                fix = _alternatives(near)
            else:
                fix = _alternatives(
                    [tuple(v if a == axis else s for a, s in sides.items()) for v in near]
                )
            what = (
                f"={int(patch_size)}"
                if isinstance(patch_size, (int, np.integer))
                else (f"={tuple(int(s) for s in patch_size)} ({p} along {axis})")
            )
            raise ParamsError(
                f"TrainingParams.patch_size{what} is not a multiple of {div} ({why}): use {fix}."
            )


def shallower(spec: ModelSpec, side: int) -> str:
    """What to change so that the network takes a side of ``side`` voxels: the deepest
    ``depth`` whose size divisor fits it, else a larger volume."""
    params = resolve_parameters(spec)
    depth = params.get("depth")
    if isinstance(depth, int) and not isinstance(depth, bool):
        for d in range(depth - 1, 0, -1):
            trial = dataclasses.replace(spec, parameters={**(spec.parameters or {}), "depth": d})
            try:
                if size_divisor(trial) <= side:
                    return (
                        f"use a shallower network, ModelSpec(parameters={{'depth': {d}, ...}}), "
                        "or a larger volume"
                    )
            except SpecError:
                break
    extra = " or a 2D model" if spec.spatial_dims == 3 else ""
    return f"use a larger volume{extra}"


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
        self._inputs = as_input_list(self.inputs, f"{self.name} input")
        what = f"{self.name} output"
        self.output = multi_roi(as_dataarray(self.output, what), what=what)
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
        return (1, s[0], s[1]) if len(s) == 2 else (s[0], s[1], s[2])  # 2 or 3 dims

    @property
    def class_names(self) -> list[str]:
        return list(self.output.attrs["class_names"])

    @property
    def class_colors(self) -> list[str]:
        return list(self.output.attrs["class_colors"])

    # -- validation ----------------------------------------------------------------------
    def _check_geometry(self) -> None:
        ref = self._inputs[0]
        note = channel_note(self.inputs)
        for i, da in enumerate(self._inputs[1:], start=1):
            if da.shape != ref.shape:
                raise InputError(
                    f"{self.name}: input {i} has shape {da.shape} but input 0 has {ref.shape}; "
                    f"several inputs are modalities of one geometry and must match{note}."
                )
        for what, other in (("output multi-ROI", self.output), ("mask", self.mask)):
            if other is not None and other.shape != ref.shape:
                raise InputError(
                    f"{self.name}: {what} has shape {other.shape} (dims {other.dims}) but the "
                    f"input has {ref.shape} (dims {ref.dims}); they must share one "
                    f"geometry{note}."
                )

    def validate(self, input_count: int | None = None, class_count: int | None = None) -> None:
        """Check values against a model: input count, finite values, classes, labels, mask."""
        if input_count is not None and self.input_count != input_count:
            raise InputError(
                f"{self.name}: the model takes {input_count} input(s) but this training set has "
                f"{self.input_count}{channel_note(self.inputs)}; pass inputs=[...] with one "
                "volume per model input."
            )
        for i, da in enumerate(self._inputs):
            check_finite(da, f"{self.name} input {i}")
        if self.mask is not None:
            check_finite(self.mask, f"{self.name} mask")
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

    def check_patch(self, spec: ModelSpec, patch_size: Any) -> None:
        """Check this set's geometry against a network and a patch size (``None`` = auto,
        which shrinks to fit): a 3D model needs a volume, every patch side must fit the
        volume, and the volume must hold at least one patch side of the network's size
        divisor. Messages name the largest patch that fits."""
        div, why = size_rule(spec)
        ref = self._inputs[0]
        is3d = spec.spatial_dims == 3
        if is3d and ref.ndim == 2:
            raise InputError(
                f"{self.name}: a 3D model needs volumes (z, y, x) but input 0 is a 2D image "
                f"(y, x) of shape {ref.shape}; use a 2D model (input_dimension='2D') or pass "
                "a volume."
            )
        z, y, x = self.shape
        vol = {"z": z, "y": y, "x": x}
        axes = SPATIAL_DIMS if is3d else SPATIAL_DIMS[1:]
        small = [a for a in axes if vol[a] < div]
        if small:
            a = small[0]
            raise InputError(
                f"{self.name}: the volume {self.shape} (z, y, x) has {vol[a]} voxels along "
                f"{a}, fewer than the {div} every patch side of this network needs ({why}); "
                f"{shallower(spec, vol[a])}."
            )
        if patch_size is None:
            return
        sides = patch_sides(spec, patch_size)
        over = [a for a in axes if sides[a] > vol[a]]
        if over:
            a = over[0]
            fit = tuple(min(sides[b], vol[b] // div * div) for b in axes)
            fix = str(fit[0]) if len(set(fit)) == 1 else str(fit)
            raise InputError(
                f"{self.name}: TrainingParams.patch_size={patch_size} is larger than the "
                f"volume {self.shape} (z, y, x) along {a} ({sides[a]} > {vol[a]}); use "
                f"patch_size={fix} (the largest that fits, a multiple of {div}: {why})."
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
