"""`VolumePredictor`: class probabilities of a prepared volume, tile by tile.

The one code path of :func:`nbseg.segment`, :func:`nbseg.preview`, streamed segmentation
(:mod:`nbseg.inference.stream`) and the training feedback region: batches of tiles (placed by
:func:`~nbseg.inference.tiling.tile_starts`) through the network (channels-last, optional
flips for test-time augmentation, optional autocast), weighted by the importance map and
summed. :func:`checked_inputs` / :func:`prepare_inputs` check images against a model and
normalise them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from ..data.trainingset import as_dataarray, as_input_list, channel_note, check_finite, volume_of
from ..errors import InputError
from ..jobs import Cancelled
from ..models.blocks import channels_last_nd
from ..progress import ProgressCallback, ProgressTracker
from ..training.teacher import blend
from .settings import InferenceSettings
from .tiling import gaussian_importance, tile_starts

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "VolumePredictor",
    "checked_inputs",
    "checked_mask",
    "checked_model",
    "checked_window",
    "prepare_inputs",
    "resolve_device",
]

#: torch autocast dtype per inference precision ("32": none)
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / None: CUDA when available, else the CPU; otherwise ``device``, which must
    exist here (:class:`InputError` otherwise, not torch's assertion at the first tile)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = " (this PyTorch is a CPU-only build)" if torch.version.cuda is None else ""
            raise InputError(
                f"InferenceSettings.device={str(device)!r}: no CUDA GPU is available here"
                f"{build}; use device='cpu' or 'auto'."
            )
        if d.index is not None and d.index >= count:
            raise InputError(
                f"InferenceSettings.device={str(device)!r}: this machine has {count} CUDA "
                f"GPU(s), cuda:0 … cuda:{count - 1}."
            )
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            f"InferenceSettings.device={str(device)!r}: Apple's MPS is not available here; use "
            "device='cpu' or 'auto'."
        )
    return d


class VolumePredictor:
    """Predict class probabilities of a prepared (normalised) volume, tile by tile.

    This is the single code path of :func:`segment`, :func:`preview`, the training
    feedback region and streaming segmentation.
    """

    def __init__(
        self,
        model: Model,
        window: tuple[int, int, int],
        settings: InferenceSettings | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = s = InferenceSettings.build(settings, **overrides)
        self.model = model
        self.spec = model.spec
        self.window = window
        self.overlap = s.overlap
        self.batch_size = s.batch_size
        self.device = resolve_device(s.device)
        spatial = window if self.spec.input_dimension == "3D" else window[1:]
        imp = (
            gaussian_importance(spatial)
            if s.blending == "gaussian"
            else np.ones(spatial, np.float32)
        )
        self.importance = torch.from_numpy(imp).to(self.device)
        self.tta = s.tta
        precision = s.resolved_precision(self.device.type, self.spec.input_dimension)
        self.autocast_dtype = _AUTOCAST.get(precision)
        self.memory_format: torch.memory_format | None = None  # set by predict
        teacher = getattr(model, "teacher", None)
        if teacher is not None and getattr(model, "teacher_blend", 0.0) > 0:
            teacher = teacher.to(self.device)
        else:
            teacher = None
        #: the model's kept feature teacher on the device (None: the network alone)
        self.teacher = teacher

    def tiles(
        self, shape: tuple[int, int, int], mask: np.ndarray | None, z_indices: Sequence[int]
    ) -> list[tuple[int, int, int]]:
        wz, wy, wx = self.window
        ys = tile_starts(shape[1], wy, self.overlap)
        xs = tile_starts(shape[2], wx, self.overlap)
        if self.spec.input_dimension == "3D":
            zs = tile_starts(shape[0], wz, self.overlap)
        else:
            zs = list(z_indices)
        out = []
        for z in zs:
            for y in ys:
                for x in xs:
                    if mask is not None:
                        zsl = slice(z, z + wz)
                        if not mask[zsl, y : y + wy, x : x + wx].any():
                            continue
                    out.append((z, y, x))
        return out

    def _gather(self, vol: np.ndarray, tile: tuple[int, int, int]) -> np.ndarray:
        z, y, x = tile
        wz, wy, wx = self.window
        ys, xs = slice(y, y + wy), slice(x, x + wx)
        if self.spec.input_dimension == "3D":
            return vol[:, z : z + wz, ys, xs]
        if self.spec.input_dimension == "2.5D":
            idx = np.clip(np.asarray(self.spec.slice_offsets) + z, 0, vol.shape[1] - 1)
            return vol[:, idx, ys, xs].reshape(-1, wy, wx)
        return vol[:, z, ys, xs]

    def batches(self, vol: np.ndarray, tiles: list[tuple[int, int, int]]) -> Iterator[Any]:
        net = self.model.network
        for i in range(0, len(tiles), self.batch_size):
            chunk = tiles[i : i + self.batch_size]
            x = torch.from_numpy(np.stack([self._gather(vol, t) for t in chunk])).to(self.device)
            if self.memory_format is not None and x.dim() in (4, 5):
                x = x.contiguous(memory_format=self.memory_format)
            with torch.inference_mode(), self._autocast():
                prob = self._probabilities(net, x)
            if self.teacher is not None:
                with torch.inference_mode():
                    t = self.teacher.on_network_input(x, self.spec)
                    prob = blend(prob, t, self.model.teacher_blend)
            yield chunk, prob * self.importance

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _probabilities(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Softmax of the network; with ``tta`` the mean over every combination of flips of
        the spatial axes (4 passes in 2D/2.5D, 8 in 3D), each flipped back."""
        if not self.tta:
            return net(x).float().softmax(dim=1)
        axes = list(range(2, x.dim()))
        total = torch.zeros(())
        for n in range(len(axes) + 1):
            for dims in itertools.combinations(axes, n):
                xf = torch.flip(x, dims) if dims else x
                p = net(xf).float().softmax(dim=1)
                total = total + (torch.flip(p, dims) if dims else p)
        return total / 2 ** len(axes)

    def predict(
        self,
        vol: np.ndarray,
        mask: np.ndarray | None = None,
        z_indices: Sequence[int] | None = None,
        progress: ProgressCallback | None = None,
        tiles: list[tuple[int, int, int]] | None = None,
        crop: Sequence[slice] | None = None,
        stop_event: threading.Event | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted probability sums ``(K, Z', Y, X)`` and weights ``(Z', Y, X)``.

        ``vol`` is normalised ``(C, Z, Y, X)``, at least one window large. For 2D/2.5D
        models ``z_indices`` selects the slices to predict (``Z'`` = their count).
        ``tiles`` (start corners in ``vol``, in the order to accumulate) replaces the tile grid
        of ``vol``, and ``crop`` (slices of ``vol``: z, y, x for 3D models, y, x otherwise)
        accumulates only that box: streaming passes the tiles of the whole volume that meet
        one block, and the block. A set ``stop_event`` raises :class:`nbseg.jobs.Cancelled`
        after the current batch of tiles.
        """
        k = self.spec.class_count
        _, nz, ny, nx = vol.shape
        is3d = self.spec.input_dimension == "3D"
        z_indices = list(range(nz)) if z_indices is None else list(z_indices)
        out_z = nz if is3d else len(z_indices)
        row = {z: i for i, z in enumerate(z_indices)}
        if crop is not None:
            box = [(sl.start, sl.stop) for sl in crop]
            sizes = [b - a for a, b in box]
            if is3d:
                out_z, ny, nx = sizes
            else:
                ny, nx = sizes
        acc = torch.zeros((k, out_z, ny, nx), dtype=torch.float32, device=self.device)
        wsum = torch.zeros((out_z, ny, nx), dtype=torch.float32, device=self.device)
        if tiles is None:
            tiles = self.tiles(vol.shape[1:], mask, z_indices)
        wz, wy, wx = self.window
        net = self.model.network
        was_training = net.training
        net.eval()
        net.to(self.device)
        converted = self._use_channels_last(net)
        try:
            tracker = ProgressTracker(len(tiles), "tile", progress)
            for chunk, prob in self.batches(vol, tiles):
                for (z, y, x), p in zip(chunk, prob):
                    if crop is not None:
                        self._add_cropped(acc, wsum, p, (z, y, x), box, is3d, row)
                    elif is3d:
                        acc[:, z : z + wz, y : y + wy, x : x + wx] += p
                        wsum[z : z + wz, y : y + wy, x : x + wx] += self.importance
                    else:
                        r = row[z]
                        acc[:, r, y : y + wy, x : x + wx] += p
                        wsum[r, y : y + wy, x : x + wx] += self.importance
                tracker.advance(len(chunk))
                if stop_event is not None and stop_event.is_set():
                    raise Cancelled("The segmentation was stopped.")
        finally:
            net.train(was_training)
            if converted:
                # Module.to takes memory_format (torch's overloads omit it)
                net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        return acc.cpu().numpy(), wsum.cpu().numpy()

    def _use_channels_last(self, net: torch.nn.Module) -> bool:
        """Run the network in the channels-last format (oneDNN/cuDNN: 1.25× faster 2D and
        1.55× faster 3D forward passes on CPU); True when its weights were converted here and
        must go back. A network already in that format (training's feedback prediction) is
        left as it is; TorchScript modules are never converted."""
        self.memory_format = None
        if self.device.type not in ("cpu", "cuda") or isinstance(net, torch.jit.ScriptModule):
            return False
        fmt = channels_last_nd(self.spec.spatial_dims)
        self.memory_format = fmt
        # a weight whose layout tells the formats apart (not 1 input channel, not 1×1)
        weight = next(
            (
                p
                for p in net.parameters()
                if p.dim() in (4, 5) and p.shape[1] > 1 and math.prod(p.shape[2:]) > 1
            ),
            None,
        )
        if weight is None or (
            weight.is_contiguous(memory_format=fmt) and not weight.is_contiguous()
        ):
            return False
        net.to(memory_format=fmt)  # type: ignore[call-overload]
        return True

    def _add_cropped(
        self,
        acc: torch.Tensor,
        wsum: torch.Tensor,
        p: torch.Tensor,
        tile: tuple[int, int, int],
        box: list[tuple[int, int]],
        is3d: bool,
        row: dict[int, int],
    ) -> None:
        """Add the part of one weighted tile that falls in ``box`` (same sums, same order)."""
        starts = tile if is3d else tile[1:]
        sizes = self.window if is3d else self.window[1:]
        src: list[slice] = []
        dst: list[slice | int] = []  # 2D/2.5D: the output row first
        for s, w, (a0, a1) in zip(starts, sizes, box):
            b0, b1 = max(s, a0), min(s + w, a1)
            if b1 <= b0:
                return
            src.append(slice(b0 - s, b1 - s))
            dst.append(slice(b0 - a0, b1 - a0))
        if not is3d:
            dst.insert(0, row[tile[0]])
        acc[(slice(None), *dst)] += p[(slice(None), *src)]
        wsum[tuple(dst)] += self.importance[tuple(src)]


def checked_model(model: Any) -> None:
    """Refuse anything that is not an nbseg model (a path, a network ...)."""
    if not all(hasattr(model, a) for a in ("spec", "network", "trained")):
        hint = (
            f"; load a file with nbseg.load_model({os.fspath(model)!r})"
            if isinstance(model, (str, os.PathLike))
            else ""
        )
        raise InputError(
            f"model must be an nbseg.Model (nbseg.generate_model, nbseg.load_model), got "
            f"{type(model).__name__}{hint}."
        )


def checked_inputs(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    what: str = "image",
    *,
    align: bool = True,
) -> list[xr.DataArray]:
    """The inputs as a list of DataArrays (:func:`~nbseg.data.trainingset.as_input_list`:
    aligned by dim name, a channel dim split into inputs), checked against a trained
    ``model`` (input count, one shared geometry, a volume for a 3D model); raises
    :class:`InputError` naming what to change. ``align=False`` keeps the dim order."""
    checked_model(model)
    if not model.trained:
        raise InputError(
            f"Model {model.name!r} is untrained (it has no intensity normalisation yet); "
            "train it with nbseg.train first, or load a trained model."
        )
    images = as_input_list(image, what, align=align)
    if len(images) != model.spec.input_count:
        raise InputError(
            f"Model {model.name!r} takes {model.spec.input_count} input(s) "
            f"({model.spec.input_names}) but {len(images)} were given{channel_note(image)}."
        )
    for i, im in enumerate(images[1:], start=1):
        if im.shape != images[0].shape:
            raise InputError(
                f"{what} {i} has shape {im.shape} but {what} 0 has {images[0].shape}; the "
                "inputs must share one geometry."
            )
    if model.spec.input_dimension == "3D" and images[0].ndim == 2:
        raise InputError(
            f"Model {model.name!r} is a 3D model and needs a volume (z, y, x), but {what} is "
            f"a 2D image (y, x) of shape {images[0].shape}; segment a volume, or use a 2D / "
            "2.5D model."
        )
    return images


def checked_mask(
    mask: Any, ref: xr.DataArray, *, align: bool = True, what: str = "image"
) -> xr.DataArray | None:
    """``mask`` as a DataArray of ``ref``'s geometry (aligned by dim name), or None."""
    if mask is None:
        return None
    m = as_dataarray(mask, "mask", align=align)
    if m.shape != ref.shape:
        raise InputError(
            f"mask has shape {m.shape} (dims {m.dims}) but the {what} has {ref.shape} (dims "
            f"{ref.dims}); give a mask of the image's geometry."
        )
    return m


def checked_window(model: Model, settings: InferenceSettings) -> None:
    """Refuse a window the model cannot use (a (y, x) window for a 3D model); any other
    window is rounded up to the network's size divisor."""
    w = settings.window
    if model.spec.input_dimension == "3D" and isinstance(w, tuple) and len(w) < 3:
        raise InputError(
            f"InferenceSettings.window={w} gives (y, x) but model {model.name!r} is 3D: give "
            f"one side (e.g. window={w[-1]}) or (z, y, x) (e.g. window={(w[-1], *w)})."
        )


def prepare_inputs(
    model: Model,
    image: xr.DataArray | Sequence[xr.DataArray],
    what: str = "image",
    *,
    align: bool = True,
) -> tuple[list[xr.DataArray], np.ndarray]:
    """Validate inputs against the model and return them normalised as ``(C, Z, Y, X)``."""
    images = checked_inputs(model, image, what, align=align)
    for i, im in enumerate(images):
        check_finite(im, f"{what} {i}")
    norm = model.normalisation
    assert norm is not None
    vol = np.stack([norm.apply(volume_of(im), i) for i, im in enumerate(images)])
    return images, vol
