"""U-Net (Ronneberger et al. 2015), 2D/2.5D/3D, optionally with attention gates."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SpecError
from .blocks import (
    AttentionGate,
    ConvBlock,
    conv_nd,
    conv_transpose_nd,
    init_weights,
    max_pool_nd,
)
from .registry import ArchitectureInfo, register
from .spec import ModelSpec


class UNet(nn.Module):
    """U-Net with ``depth`` resolution levels, optionally with attention-gated skips.

    Parameters
    ----------
    in_channels, out_channels
        Input channels and output classes (logits).
    spatial_dims
        2 (2D and 2.5D) or 3.
    depth
        Number of resolution levels including the bottleneck (``depth - 1`` 2× poolings), so
        input sizes must be multiples of ``2 ** (depth - 1)``.
    filters
        Feature channels at full resolution, doubled at every level down.
    norm
        ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
    dropout
        Channel-dropout probability in the two deepest levels (0 = off).
    residual
        Residual conv blocks (ResNet basic blocks) instead of plain double convolutions.
    attention
        Attention gates on the skip connections (Attention U-Net).

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        depth: int = 5,
        filters: int = 16,
        norm: str = "batch",
        dropout: float = 0.0,
        residual: bool = False,
        attention: bool = False,
    ) -> None:
        super().__init__()
        ch = [filters * 2**i for i in range(depth)]
        self.depth = depth
        self.encoder = nn.ModuleList(
            ConvBlock(
                in_channels if i == 0 else ch[i - 1],
                ch[i],
                spatial_dims,
                norm,
                dropout=dropout if i >= depth - 2 else 0.0,
                residual=residual,
            )
            for i in range(depth)
        )
        self.pool = max_pool_nd(spatial_dims)(2)
        self.upsample = nn.ModuleList(
            conv_transpose_nd(spatial_dims)(ch[i + 1], ch[i], 2, stride=2) for i in range(depth - 1)
        )
        self.gates = (
            nn.ModuleList(
                AttentionGate(ch[i], ch[i + 1], spatial_dims, max(ch[i] // 2, 4))
                for i in range(depth - 1)
            )
            if attention
            else None
        )
        self.decoder = nn.ModuleList(
            ConvBlock(2 * ch[i], ch[i], spatial_dims, norm, residual=residual)
            for i in range(depth - 1)
        )
        self.head = conv_nd(spatial_dims)(ch[0], out_channels, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        for i in reversed(range(self.depth - 1)):
            skip = skips[i]
            if self.gates is not None:
                skip = self.gates[i](skip, x)
            x = self.decoder[i](torch.cat([self.upsample[i](x), skip], dim=1))
        return self.head(x)


def pow2_divisor(spec: ModelSpec, params: dict[str, Any]) -> int:
    return 2 ** (int(params["depth"]) - 1)


def _check(params: dict[str, Any]) -> None:

    if not 2 <= int(params["depth"]) <= 7:
        raise SpecError(f"depth must lie in 2..7, got {params['depth']!r}.")
    if not 1 <= int(params["filters"]) <= 256:
        raise SpecError(f"filters must lie in 1..256, got {params['filters']!r}.")
    if not 0.0 <= float(params["dropout"]) < 1.0:
        raise SpecError(f"dropout must lie in [0, 1), got {params['dropout']!r}.")


def make_unet(spec: ModelSpec, params: dict[str, Any], attention: bool) -> nn.Module:
    """A :class:`UNet` (with attention gates when ``attention``) for ``spec``."""
    _check(params)
    return UNet(
        spec.in_channels,
        spec.class_count,
        spec.spatial_dims,
        depth=int(params["depth"]),
        filters=int(params["filters"]),
        norm=params["norm"],
        dropout=float(params["dropout"]),
        residual=bool(params["residual"]),
        attention=attention,
    )


def build_unet(spec: ModelSpec, params: dict[str, Any]) -> nn.Module:
    """Build a :class:`UNet` for ``spec`` with resolved ``params``."""
    return make_unet(spec, params, attention=False)


UNET_DEFAULTS: dict[str, Any] = {
    "depth": 5,
    "filters": 16,
    "norm": "batch",
    "dropout": 0.0,
    "residual": False,
}

register(
    ArchitectureInfo(
        name="unet",
        title="U-Net",
        description=(
            "The classic encoder-decoder with skip connections (Ronneberger et al. 2015): the "
            "default choice for most segmentation tasks in 2D, 2.5D and 3D, and the fastest to "
            "train. 'depth' is the number of resolution levels (inputs are padded to multiples "
            "of 2^(depth-1)); 'filters' the channels at full resolution, doubled per level; "
            "'residual' uses ResNet-style blocks. The defaults (depth 5, 16 filters, about 2 M "
            "parameters) train a 128×128 batch of 8 in about half a second on two CPU cores; "
            "3D networks cost roughly the patch's voxel count more."
        ),
        dimensions=("2D", "2.5D", "3D"),
        defaults=dict(UNET_DEFAULTS),
        builder=build_unet,
        size_divisor=pow2_divisor,
    )
)
