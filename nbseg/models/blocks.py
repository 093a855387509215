"""Building blocks shared by the architectures: convolutions, normalisation, conv blocks.

Every block takes ``spatial_dims`` (2 or 3) so the same code builds 2D/2.5D and 3D networks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the mixins' bases, for their attributes (plain classes at runtime)
    _BatchNormBase = nn.modules.batchnorm._BatchNorm
    _InstanceNormBase = nn.modules.instancenorm._InstanceNorm
else:
    _BatchNormBase = _InstanceNormBase = object

NORMS: tuple[str, ...] = ("batch", "instance", "group", "none")


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def channels_last_nd(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of 2D (``channels_last``) or 3D
    (``channels_last_3d``) feature maps."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


@functools.cache
def cpu_bf16_conv3d_is_wrong() -> bool:
    """Whether this CPU's oneDNN gets the bf16 ``Conv3d`` weight gradient wrong on thin inputs.

    Runs the known failing case once per process (a 3×3×3 convolution over 2 slices, a few
    milliseconds) and compares its weight gradient with float32. Wrong on AVX512-BF16 CPUs
    (seen on AMD EPYC with torch 2.13); right on AMX CPUs (Intel Xeon), which need no guard.
    """
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():  # leaves the RNG alone
            torch.manual_seed(0)
            conv = nn.Conv3d(32, 32, 3, padding=1)
            x = torch.randn(2, 32, 2, 8, 8)
            grads = []
            for bf16 in (False, True):
                conv.zero_grad()
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    out = conv(x)
                out.float().square().mean().backward()
                grad = conv.weight.grad
                assert grad is not None  # backward() ran
                grads.append(grad.detach().clone())
    except RuntimeError:  # no bf16 convolution here at all: guarding costs nothing then
        return True
    ref, got = grads
    if not torch.isfinite(got).all():
        return True
    return bool((got - ref).abs().max() > 0.05 * ref.abs().max())


def guard_cpu_bf16_conv3d(network: nn.Module, force: bool = False) -> Callable[[], None]:
    """Work around a wrong bf16 ``Conv3d`` weight gradient on CPU; returns the undo.

    oneDNN (torch 2.13, seen on AVX512-BF16 CPUs without AMX) computes the *weight* gradient
    of a bf16 ``Conv3d`` wrongly — up to 1e37 or NaN — when the input's depth is smaller than the
    kernel's (a 3×3×3 convolution over 2 slices, as at the bottleneck of a 3D U-Net fed 32³
    patches); outputs and input gradients are right, as is every depth ≥ the kernel's
    (``benchmarks/bf16_conv3d.py`` probes the cases). The guarded convolutions run such thin
    inputs in float32 — cheap, as they are thin — and everything else in bf16. Applied to
    every ``nn.Conv3d`` of any network (MONAI's and imported ones too) for the duration of a
    bf16 training; calling the returned function restores the modules.

    Only where :func:`cpu_bf16_conv3d_is_wrong` (``force=True``: always): elsewhere the
    float32 detour would cost time and memory for nothing.
    """
    patched: list[nn.Module] = []
    if not force and not cpu_bf16_conv3d_is_wrong():
        return lambda: None
    for module in network.modules():
        if (
            isinstance(module, nn.Conv3d)
            and module.kernel_size[0] > 1
            and "forward" not in vars(module)
        ):
            # an instance attribute shadowing the class's forward (undo pops it)
            vars(module)["forward"] = functools.partial(_guarded_conv3d_forward, module)
            patched.append(module)

    def undo() -> None:
        for module in patched:
            vars(module).pop("forward", None)

    return undo


def _guarded_conv3d_forward(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    reach = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
    if x.device.type == "cpu" and x.shape[-3] <= reach and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return type(conv).forward(conv, x.float())
    return type(conv).forward(conv, x)


def conv_transpose_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    return nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d


def max_pool_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d``."""
    return nn.MaxPool3d if spatial_dims == 3 else nn.MaxPool2d


def dropout_nd(spatial_dims: int) -> type[nn.Module]:
    """Channel dropout: ``nn.Dropout2d`` or ``nn.Dropout3d``."""
    return nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d


class _SafeBatchNormMixin(_BatchNormBase):
    """Batch normalisation that does not fail on a single value per channel.

    In training mode a batch of one sample whose feature map is 1 pixel (or voxel) wide has
    one value per channel, for which batch statistics are undefined; PyTorch raises. Such a
    batch is normalised with the running statistics instead.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() <= x.shape[1]:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        return super().forward(x)


class SafeBatchNorm2d(_SafeBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that accepts one value per channel in training mode."""


class SafeBatchNorm3d(_SafeBatchNormMixin, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` that accepts one value per channel in training mode."""


class _SafeInstanceNormMixin(_InstanceNormBase):
    """Instance normalisation that does not fail on a 1-pixel (or 1-voxel) feature map.

    PyTorch raises when it normalises a sample with a single value per channel by its own
    statistics (always without running statistics, in eval mode too). The normalised value
    of a single element is 0 (its deviation from its own mean), so the output is the affine
    bias (0 without affine), which this returns instead of raising.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own_stats = self.training or not self.track_running_stats
        if own_stats and x[0, 0].numel() == 1:
            out = x - x.detach()  # zeros that keep the graph (and the gradient's shape)
            if self.affine:
                shape = (1, -1) + (1,) * (x.dim() - 2)
                out = out * self.weight.view(shape) + self.bias.view(shape)
            return out
        return super().forward(x)


class SafeInstanceNorm2d(_SafeInstanceNormMixin, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` that accepts a 1-pixel feature map in training mode."""


class SafeInstanceNorm3d(_SafeInstanceNormMixin, nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` that accepts a 1-voxel feature map in training mode."""


def group_count(channels: int, preferred: int = 8) -> int:
    """The largest divisor of ``channels`` not above ``preferred`` (GroupNorm's groups)."""
    return math.gcd(channels, preferred)


def norm_layer(norm: str, channels: int, spatial_dims: int) -> nn.Module:
    """A normalisation layer by name.

    Parameters
    ----------
    norm
        ``"batch"`` (batch normalisation, safe for one value per channel), ``"instance"``
        (affine instance normalisation), ``"group"`` (GroupNorm with up to 8 groups) or
        ``"none"``.
    channels
        Number of channels to normalise.
    spatial_dims
        2 or 3.
    """
    if norm == "batch":
        return SafeBatchNorm3d(channels) if spatial_dims == 3 else SafeBatchNorm2d(channels)
    if norm == "instance":
        cls = SafeInstanceNorm3d if spatial_dims == 3 else SafeInstanceNorm2d
        return cls(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


class ConvNormAct(nn.Sequential):
    """Convolution → normalisation → ReLU (the convolution has a bias only without norm)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int,
        norm: str = "batch",
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            conv_nd(spatial_dims)(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=norm == "none",
            ),
            norm_layer(norm, out_channels, spatial_dims),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ConvBlock(nn.Module):
    """Two 3×3 convolutions with normalisation and ReLU, optionally residual.

    Parameters
    ----------
    in_channels, out_channels
        Channel counts.
    spatial_dims
        2 or 3.
    norm
        See :func:`norm_layer`.
    dropout
        Channel-dropout probability between the two convolutions (0 = off).
    residual
        Add the (1×1-projected when the channel count changes) input to the output of the
        second convolution before its ReLU, as in ResNet's basic block.
    convs
        Number of convolutions (1 or more).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int,
        norm: str = "batch",
        dropout: float = 0.0,
        residual: bool = False,
        convs: int = 2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            last = i == convs - 1
            layers.append(
                ConvNormAct(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    spatial_dims,
                    norm,
                    act=not (last and residual),
                )
            )
            if dropout > 0 and i == 0 and convs > 1:
                layers.append(dropout_nd(spatial_dims)(dropout))
        self.body = nn.Sequential(*layers)
        self.residual = residual
        if residual:
            self.shortcut: nn.Module = (
                nn.Identity()
                if in_channels == out_channels
                else ConvNormAct(in_channels, out_channels, spatial_dims, norm, 1, act=False)
            )
            self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.body(x)
        return self.act(self.body(x) + self.shortcut(x))


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018, "grid attention").

    The skip features ``x`` (fine) are weighted by a map ``alpha`` in ``[0, 1]`` computed
    from ``x`` and the gating features ``g`` of the next coarser level, at the coarse
    resolution: ``alpha = sigmoid(psi(relu(theta(x) + phi(g))))``, upsampled to ``x``.
    """

    def __init__(
        self, skip_channels: int, gate_channels: int, spatial_dims: int, inter_channels: int
    ) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.theta = conv(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = conv(gate_channels, inter_channels, 1, bias=True)
        self.psi = conv(inter_channels, 1, 1, bias=True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x)
        phi = resize_to(self.phi(g), theta.shape[2:])
        alpha = torch.sigmoid(self.psi(self.act(theta + phi)))
        return x * resize_to(alpha, x.shape[2:])


def resize_to(x: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Bilinear (trilinear) resize of ``x``'s spatial dims to ``size`` (no-op if equal)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "trilinear" if x.dim() == 5 else "bilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def init_weights(module: nn.Module) -> None:
    """He (Kaiming) initialisation of convolutions; norms start as identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
