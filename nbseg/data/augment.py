"""Vectorised data augmentation of training batches (torch, CPU or GPU).

:func:`augment_batch` transforms a whole batch at once: every sample gets its own random
geometric transform (flips, 90° rotations, free rotation, zoom, shear and an optional elastic
deformation, composed into one sampling grid and applied with a single
:func:`torch.nn.functional.grid_sample` call for the images and one for the labels) and its
own random intensity changes (contrast, brightness, Gaussian noise). There is no Python loop
over samples or pixels.

Conventions

- ``images``: float ``(B, C, *S)``; ``labels``: integer ``(B, *S)`` with ``-1`` = unlabelled;
  ``S = (H, W)`` (``spatial_dims=2``) or ``(D, H, W)`` (``spatial_dims=3``).
- Images are expected normalised (about zero mean, unit standard deviation): ``noise`` and
  ``brightness`` act in those units.
- Rotations, zoom, shear and 90° rotations act in the y-x plane (about the z axis); flips act
  on every spatial axis, z included. 3D elastic displacements are in-plane (y, x) but vary
  smoothly in all three directions.
- Images are resampled bilinearly, with reflection padding; labels with nearest neighbour,
  and label voxels whose source lies outside the patch become ``-1`` (unlabelled), so that
  the loss ignores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import InputError, ParamsError
from ..settings import Bool, Float, Int, Range, Settings, setting

__all__ = ["AugmentationParams", "augment_batch"]

_G = "Augmentation"


@dataclass
class AugmentationParams(Settings):
    """Random augmentation applied to every training batch.

    Parameters
    ----------
    factor
        Dragonfly's *augmentation factor*: each training patch is used ``factor`` times per
        epoch, each time with different random augmentations (``1`` = once). Used by the
        patch sampler, not by :func:`augment_batch`.
    flip
        Random flips, independently along every spatial axis (z included in 3D).
    rotate90
        Random rotations by multiples of 90° in the y-x plane (only 0° or 180° for
        non-square patches).
    rotation
        Maximum free rotation angle in degrees, in the y-x plane; the angle is drawn
        uniformly in ``[-rotation, rotation]`` (``0`` = off; Dragonfly's default is 180).
    zoom
        ``(min, max)`` in-plane zoom factor (> 1 magnifies), drawn uniformly.
    shear
        Maximum shear angle in degrees (y-x plane), drawn uniformly in ``[-shear, shear]``
        for each of the two in-plane shear directions.
    elastic
        Random smooth elastic deformation.
    elastic_alpha
        Elastic: standard deviation of the displacement at the control points, in voxels.
    elastic_sigma
        Elastic: spacing of the random control points (the deformation's length scale), in
        voxels; the displacement is interpolated smoothly between them.
    noise
        Maximum standard deviation of additive Gaussian noise, in normalised intensity units;
        each sample gets a std drawn uniformly in ``[0, noise]`` (``0`` = off).
    brightness
        ``(min, max)`` brightness factor ``b`` written Dragonfly-style around 1. Images are
        normalised (zero mean), where multiplying would only change contrast, so it is
        applied as an **additive** shift of ``b - 1`` normalised units: the default
        ``(0.9, 1.1)`` shifts each sample by up to ±0.1 standard deviations.
    contrast
        ``(min, max)`` **multiplicative** contrast factor ``c``, applied about each sample's
        mean: ``x' = mean + c * (x - mean)``.
    probability
        Probability that a sample is augmented at all; the others pass unchanged (``1`` =
        every sample is augmented).

    Notes
    -----
    The default is exact and geometric: flips and 90° rotations (applied by indexing, no
    resampling), factor 4. Zoom, shear, free rotation, elastic deformation, noise,
    brightness and contrast stay off by default. Resampling (zoom, shear, rotation, elastic)
    interpolates the image and moves label boundaries by up to half a voxel, and it costs
    time: on the sandstone benchmark (8 CPU-minutes, default U-Net) dropping the former zoom
    0.9–1.1 and shear 2° raised the mean Dice from 0.946 to 0.960; brightness/contrast
    0.9–1.1 had lowered it from 0.946 to 0.935, because grey values *are* the classes of a
    micro-CT scan. Turn them on for data with varying scale or brightness, or for very few
    labelled slices. :meth:`disabled` gives no augmentation at all.
    """

    _title: ClassVar[str] = "augmentation parameters"
    _owner: ClassVar[str] = "AugmentationParams"
    _error: ClassVar[type] = ParamsError
    _groups: ClassVar[tuple[str, ...]] = ("Augmentation",)

    factor: int = setting(
        4,
        Int(minimum=1),
        "Augmentation factor",
        "Each patch is used this many times per epoch (1 = each patch once per epoch)",
        group=_G,
    )
    flip: bool = setting(True, Bool(), "Flips", "Random flips along every axis", group=_G)
    rotate90: bool = setting(
        True, Bool(), "90° rotations", "Random rotations by multiples of 90°", group=_G
    )
    rotation: float = setting(
        0.0,
        Float(0.0, 180.0),
        "Rotation",
        "Maximum free rotation angle in the y-x plane (0 = off)",
        group=_G,
        unit="°",
        widget="slider",
        step=1.0,
    )
    zoom: tuple[float, float] = setting(
        (1.0, 1.0),
        Range(0.1, 10.0, positive=True),
        "Zoom",
        "Range of the random in-plane zoom factor (> 1 magnifies)",
        group=_G,
        widget_range=(0.1, 4.0),
    )
    shear: float = setting(
        0.0,
        Float(0.0, 45.0),
        "Shear",
        "Maximum shear angle in the y-x plane (0 = off)",
        group=_G,
        unit="°",
        widget="slider",
        step=1.0,
    )
    elastic: bool = setting(
        False, Bool(), "Elastic deformation", "Random smooth elastic deformation", group=_G
    )
    elastic_alpha: float = setting(
        3.0,
        Float(0.0),
        "Elastic strength",
        "Standard deviation of the elastic displacement",
        group=_G,
        unit="voxels",
        enabled_if=("elastic", (True,)),
    )
    elastic_sigma: float = setting(
        16.0,
        Float(1.0),
        "Elastic scale",
        "Spacing of the elastic deformation's control points",
        group=_G,
        unit="voxels",
        enabled_if=("elastic", (True,)),
    )
    noise: float = setting(
        0.0,
        Float(0.0),
        "Noise",
        "Maximum standard deviation of Gaussian noise, in normalised units (0 = off)",
        group=_G,
    )
    brightness: tuple[float, float] = setting(
        (1.0, 1.0),
        Range(positive=True),
        "Brightness",
        "Range of the brightness factor (applied as an additive shift of factor - 1)",
        group=_G,
        widget_range=(0.1, 3.0),
    )
    contrast: tuple[float, float] = setting(
        (1.0, 1.0),
        Range(positive=True),
        "Contrast",
        "Range of the multiplicative contrast factor about each sample's mean",
        group=_G,
        widget_range=(0.1, 3.0),
    )
    probability: float = setting(
        1.0,
        Float(0.0, 1.0),
        "Probability",
        "Probability that a sample is augmented at all",
        group=_G,
        widget="slider",
        step=0.05,
    )

    def __post_init__(self) -> None:
        for name in ("zoom", "brightness", "contrast"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))

    # -- constructors --------------------------------------------------------------------
    @classmethod
    def disabled(cls) -> AugmentationParams:
        """Parameters that leave every batch unchanged (factor 1, every option off)."""
        return cls(
            factor=1,
            flip=False,
            rotate90=False,
            rotation=0.0,
            zoom=(1.0, 1.0),
            shear=0.0,
            elastic=False,
            noise=0.0,
            brightness=(1.0, 1.0),
            contrast=(1.0, 1.0),
        )

    # -- summaries -----------------------------------------------------------------------
    @property
    def continuous(self) -> bool:
        """Whether a resampling transform is on (rotation, zoom, shear or elastic)."""
        return (
            float(self.rotation) > 0
            or tuple(float(z) for z in self.zoom) != (1.0, 1.0)
            or float(self.shear) > 0
            or (self.elastic and float(self.elastic_alpha) > 0)
        )

    @property
    def geometric(self) -> bool:
        """Whether any geometric augmentation is on."""
        return self.probability > 0 and (self.flip or self.rotate90 or self.continuous)

    @property
    def intensity(self) -> bool:
        """Whether any intensity augmentation is on."""
        return self.probability > 0 and (
            float(self.noise) > 0
            or tuple(float(b) for b in self.brightness) != (1.0, 1.0)
            or tuple(float(c) for c in self.contrast) != (1.0, 1.0)
        )


# ---------------------------------------------------------------------------------------------
class _Random:
    """Draws from ``generator`` (on its own device) and moves the values to ``device``."""

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.generator = generator
        self.source = generator.device if generator is not None else device
        self.device = device

    def uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, device=self.source, dtype=torch.float32)
        return (lo + (hi - lo) * u).to(self.device)

    def bernoulli(self, n: int, p: float = 0.5) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, device=self.source)
        return (u < p).to(self.device)

    def integers(self, n: int, high: int) -> torch.Tensor:
        return torch.randint(high, (n,), generator=self.generator, device=self.source).to(
            self.device
        )

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(
            shape, generator=self.generator, device=self.source, dtype=torch.float32
        ).to(self.device)


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise InputError(f"spatial_dims={spatial_dims!r} is invalid: use 2 or 3")
    if images.ndim != spatial_dims + 2:
        raise InputError(
            f"images must have shape (B, C, {'D, ' if spatial_dims == 3 else ''}H, W) for "
            f"spatial_dims={spatial_dims}, got {tuple(images.shape)}"
        )
    if labels.ndim != spatial_dims + 1:
        raise InputError(
            f"labels must have shape (B, {'D, ' if spatial_dims == 3 else ''}H, W) for "
            f"spatial_dims={spatial_dims}, got {tuple(labels.shape)}"
        )
    if labels.shape[0] != images.shape[0] or labels.shape[1:] != images.shape[2:]:
        raise InputError(
            f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}: "
            "expected (B, *S) for images (B, C, *S)"
        )
    if not images.is_floating_point():
        raise InputError(f"images must be a float tensor, got {images.dtype}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"labels must be an integer tensor, got {labels.dtype}")


def _flip_where(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    view = (-1,) + (1,) * (x.ndim - 1)
    return torch.where(mask.view(view), x.flip(dim), x)


def _dihedral(
    rnd: _Random, params: AugmentationParams, n: int, square: bool, spatial_dims: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample in-plane signed permutation (as transpose + flips) and z flips.

    Returns ``transpose`` (bool, B), ``signs`` (float, B x 2: y, x signs applied after the
    optional transpose) and ``flip_z`` (bool, B).
    """
    device = rnd.device
    transpose = torch.zeros(n, dtype=torch.bool, device=device)
    signs = torch.ones(n, 2, device=device)
    flip_z = torch.zeros(n, dtype=torch.bool, device=device)
    if params.rotate90:
        k = rnd.integers(n, 4) if square else 2 * rnd.integers(n, 2)
        # rotation by k * 90°: k odd -> transpose then flip one axis; k = 2 -> flip both
        transpose = k % 2 == 1
        signs[:, 0] = torch.where((k == 2) | (k == 3), -1.0, 1.0)
        signs[:, 1] = torch.where((k == 1) | (k == 2), -1.0, 1.0)
    if params.flip:
        fy, fx = rnd.bernoulli(n), rnd.bernoulli(n)
        # a flip applied after the rotation: compose signs on the output axes
        signs[:, 0] = torch.where(fy, -signs[:, 0], signs[:, 0])
        signs[:, 1] = torch.where(fx, -signs[:, 1], signs[:, 1])
        if spatial_dims == 3:
            flip_z = rnd.bernoulli(n)
    return transpose, signs, flip_z


def _apply_dihedral(
    x: torch.Tensor,
    transpose: torch.Tensor,
    signs: torch.Tensor,
    flip_z: torch.Tensor,
    spatial_dims: int,
) -> torch.Tensor:
    """Exact transposes / flips by indexing (``x``: (B, ..., [D,] H, W))."""
    if bool(transpose.any()):
        view = (-1,) + (1,) * (x.ndim - 1)
        x = torch.where(transpose.view(view), x.transpose(-1, -2), x)
    if bool((signs[:, 0] < 0).any()):
        x = _flip_where(x, signs[:, 0] < 0, x.ndim - 2)
    if bool((signs[:, 1] < 0).any()):
        x = _flip_where(x, signs[:, 1] < 0, x.ndim - 1)
    if spatial_dims == 3 and bool(flip_z.any()):
        x = _flip_where(x, flip_z, x.ndim - 3)
    return x


def _elastic_field(
    rnd: _Random, params: AugmentationParams, n: int, size: tuple[int, ...]
) -> torch.Tensor:
    """Smooth random in-plane displacements in voxels, shape (B, *S, 2) as (dx, dy)."""
    sigma = float(params.elastic_sigma)
    coarse = tuple(max(2, math.ceil(s / sigma) + 1) for s in size)
    ctrl = rnd.normal((n, 2, *coarse)) * float(params.elastic_alpha)
    if len(size) == 2:
        disp = F.interpolate(ctrl, size=size, mode="bicubic", align_corners=True)
    else:
        disp = F.interpolate(ctrl, size=size, mode="trilinear", align_corners=True)
    return disp.movedim(1, -1)


def _resample(
    images: torch.Tensor,
    labels: torch.Tensor,
    params: AugmentationParams,
    rnd: _Random,
    transpose: torch.Tensor,
    signs: torch.Tensor,
    flip_z: torch.Tensor,
    spatial_dims: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All geometric transforms as one grid: one ``grid_sample`` each for images, labels."""
    n = images.shape[0]
    size = tuple(images.shape[2:])
    h, w = size[-2], size[-1]
    dev = images.device

    # in-plane matrix acting on centred pixel coordinates (y, x): input = A @ output
    ang = torch.deg2rad(rnd.uniform(n, -float(params.rotation), float(params.rotation)))
    cos, sin = torch.cos(ang), torch.sin(ang)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear = float(params.shear)
    ty = torch.tan(torch.deg2rad(rnd.uniform(n, -shear, shear)))
    tx = torch.tan(torch.deg2rad(rnd.uniform(n, -shear, shear)))
    one = torch.ones(n, device=dev)
    shr = torch.stack([torch.stack([one, tx], -1), torch.stack([ty, one], -1)], -2)
    zlo, zhi = (float(v) for v in params.zoom)
    inv_zoom = 1.0 / rnd.uniform(n, zlo, zhi)
    # dihedral part: output (y, x) -> input; transpose swaps the axes, then signs flip them
    perm = torch.zeros(n, 2, 2, device=dev)
    t = transpose.to(perm.dtype)
    perm[:, 0, 0] = (1 - t) * signs[:, 0]
    perm[:, 1, 1] = (1 - t) * signs[:, 1]
    perm[:, 0, 1] = t * signs[:, 1]  # transposed: y_in = s_x * x_out, x_in = s_y * y_out
    perm[:, 1, 0] = t * signs[:, 0]
    a_yx = perm @ rot @ shr * inv_zoom.view(n, 1, 1)

    # to normalised (x, y) coordinates (align_corners=False): pixel offset = norm * size / 2
    a_xy = a_yx.flip(-1).flip(-2)  # reorder (y, x) -> (x, y)
    half = torch.tensor([w / 2.0, h / 2.0], device=dev)
    a_xy = a_xy * half.view(1, 1, 2) / half.view(1, 2, 1)
    if spatial_dims == 2:
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, :, :2] = a_xy
    else:
        theta = torch.zeros(n, 3, 4, device=dev)
        theta[:, :2, :2] = a_xy
        theta[:, 2, 2] = torch.where(flip_z, -1.0, 1.0)
    grid = F.affine_grid(theta, [n, 1, *size], align_corners=False)
    if params.elastic and float(params.elastic_alpha) > 0:
        disp = _elastic_field(rnd, params, n, size)
        scale = torch.tensor([2.0 / w, 2.0 / h], device=dev)
        grid = grid.clone()
        grid[..., :2] += disp * scale

    dtype = images.dtype
    work = images if dtype in (torch.float32, torch.float64) else images.float()
    out = F.grid_sample(
        work, grid.to(work.dtype), mode="bilinear", padding_mode="reflection", align_corners=False
    ).to(dtype)
    shifted = (labels + 1).to(torch.float32).unsqueeze(1)  # outside -> 0 -> -1
    lab = F.grid_sample(
        shifted, grid.float(), mode="nearest", padding_mode="zeros", align_corners=False
    )
    lab = lab.squeeze(1).round().to(labels.dtype) - 1
    return out, lab


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    params: AugmentationParams,
    spatial_dims: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly augment a batch: same geometry for image and labels, new draw per sample.

    Parameters
    ----------
    images
        Float tensor ``(B, C, *S)``, normalised intensities.
    labels
        Integer tensor ``(B, *S)``; class ids ``0 … K-1``, ``-1`` = unlabelled.
    params
        The augmentation to apply (validated here).
    spatial_dims
        ``2`` (``S = (H, W)``) or ``3`` (``S = (D, H, W)``; in-plane transforms act on the
        y-x plane, flips on all three axes).
    generator
        Source of randomness; with a seeded generator the result is reproducible. Values are
        drawn on the generator's device and moved to the images' device.

    Returns
    -------
    images, labels
        New tensors of the input shapes and dtypes (the inputs are not modified). Label
        voxels mapped from outside the patch are ``-1``. When no geometric option is on,
        ``labels`` is returned unchanged (the same tensor); when nothing is on, ``images``
        too.

    Raises
    ------
    InputError
        Shapes, dtypes or ``spatial_dims`` that do not fit.
    ParamsError
        Invalid ``params``.

    Notes
    -----
    Flips and 90° rotations alone are applied exactly by indexing. With rotation, zoom,
    shear or elastic on, all geometric transforms are composed into one sampling grid per
    sample, and the whole batch is resampled with one ``grid_sample`` call for the images
    (bilinear, reflection padding) and one for the labels (nearest neighbour).
    """
    _check_inputs(images, labels, spatial_dims)
    params.validate()
    n = images.shape[0]
    if n == 0 or not (params.geometric or params.intensity):
        return images, labels
    rnd = _Random(generator, images.device)
    p = float(params.probability)
    active = rnd.bernoulli(n, p) if p < 1 else None
    out_images, out_labels = images, labels

    if params.geometric:
        size = tuple(images.shape[2:])
        square = size[-1] == size[-2]
        transpose, signs, flip_z = _dihedral(rnd, params, n, square, spatial_dims)
        if params.continuous:
            out_images, out_labels = _resample(
                images, labels, params, rnd, transpose, signs, flip_z, spatial_dims
            )
        else:
            out_images = _apply_dihedral(images, transpose, signs, flip_z, spatial_dims)
            out_labels = _apply_dihedral(labels, transpose, signs, flip_z, spatial_dims)
        if active is not None:
            view = (-1,) + (1,) * (labels.ndim - 1)
            out_labels = torch.where(active.view(view), out_labels, labels)
            out_images = torch.where(active.view((*view, 1)), out_images, images)

    if params.intensity:
        x = out_images
        view = (-1,) + (1,) * (x.ndim - 1)
        gain = x.new_ones(n)
        offset = x.new_zeros(n)
        clo, chi = (float(v) for v in params.contrast)
        if (clo, chi) != (1.0, 1.0):
            c = rnd.uniform(n, clo, chi).to(x.dtype)
            mean = x.mean(dim=tuple(range(1, x.ndim)))
            gain = c
            offset = mean * (1 - c)
        blo, bhi = (float(v) for v in params.brightness)
        if (blo, bhi) != (1.0, 1.0):
            offset = offset + rnd.uniform(n, blo - 1.0, bhi - 1.0).to(x.dtype)
        if active is not None:
            gain = torch.where(active, gain, x.new_ones(n))
            offset = torch.where(active, offset, x.new_zeros(n))
        x = x * gain.view(view) + offset.view(view)
        if float(params.noise) > 0:
            std = rnd.uniform(n, 0.0, float(params.noise)).to(x.dtype)
            if active is not None:
                std = std * active.to(x.dtype)
            x = x + rnd.normal(tuple(x.shape)).to(x.dtype) * std.view(view)
        out_images = x
    return out_images, out_labels
