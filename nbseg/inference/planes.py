"""Predictions of one plane of a volume — xy, xz or yz — for orthogonal views.

The xy plane is :func:`nbseg.inference.sliding.preview`. An xz (yz) plane cuts every z slice,
so it is predicted as the model segments the volume: a slab of the window's size along y (x)
around the plane is segmented (2D and 2.5D models slice by slice, which is what an xz view
judges: how consistent the slice-by-slice prediction is along z; 3D models with their 3D
window) and the plane is taken from it. When the window covers the volume along that axis the
slab is the volume, so the plane equals the plane of :func:`nbseg.segment`'s result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..data.trainingset import as_input_list
from ..errors import InputError
from .predictor import checked_mask, checked_model, checked_window
from .settings import InferenceSettings
from .sliding import preview, segment
from .tiling import resolve_window

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["PLANE_AXES", "preview_plane"]

#: the plane → the position (in the ``(z, y, x)`` order) of the axis it cuts
PLANE_AXES = {"xy": 0, "xz": 1, "yz": 2}


def preview_plane(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    plane: str,
    index: int,
    *,
    mask: xr.DataArray | None = None,
    settings: InferenceSettings | Mapping[str, Any] | None = None,
    return_uncertainty: bool = False,
    uncertainty_method: str = "entropy",
    **overrides: Any,
) -> Any:
    """The labels of ``plane`` (``"xy"``, ``"xz"`` or ``"yz"``) of a ``(z, y, x)`` volume at
    position ``index`` along the axis it cuts (z, y or x): dims ``(y, x)``, ``(z, x)`` or
    ``(z, y)``. ``return_uncertainty=True``: ``(labels, uncertainty)`` of the plane.
    ``settings`` / ``**overrides``: the inference settings, as for :func:`nbseg.segment`."""
    if plane not in PLANE_AXES:
        raise InputError(f"plane={plane!r}: choose one of {', '.join(PLANE_AXES)}.")
    images = as_input_list(image, "image")
    ref = images[0]
    if ref.ndim == 2 and plane != "xy":
        raise InputError(f"A 2D image has only the xy plane; plane={plane!r} needs a volume.")
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise InputError(f"preview_plane: index={index!r} must be an integer (a slice position).")
    extra: dict[str, Any] = (
        {"return_uncertainty": True, "uncertainty_method": uncertainty_method}
        if return_uncertainty
        else {}
    )
    if plane == "xy" or ref.ndim == 2:
        dim = ref.dims[0] if ref.ndim == 3 else "z"
        return preview(
            model,
            image,
            int(index),
            dim=dim,
            mask=mask,
            settings=settings,
            **{
                **overrides,
                **extra,
            },
        )
    axis = PLANE_AXES[plane]
    dim = ref.dims[axis]
    n = ref.sizes[dim]
    index = int(index)
    if not 0 <= index < n:
        raise InputError(
            f"preview_plane: index={index} is outside 0 … {n - 1} along {str(dim)!r} (the "
            f"{plane} plane's axis)."
        )
    s = InferenceSettings.build(settings, **overrides)
    checked_model(model)
    checked_window(model, s)
    full_mask = checked_mask(mask, ref)
    win = resolve_window(model, s.window, ref.shape)[axis]
    lo = max(0, min(index - win // 2, n - win))
    hi = min(n, lo + win)
    part = {dim: slice(lo, hi)}
    sub = [im.isel(part).compute() for im in images]
    sub_mask = None if full_mask is None else full_mask.isel(part).compute()
    res = segment(model, sub if len(sub) > 1 else sub[0], sub_mask, settings=s, **extra)
    at = {dim: index - lo}
    if return_uncertainty:
        labels, u = res
        return labels.isel(at), u.isel(at)
    return res.isel(at)
