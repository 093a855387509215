"""FC-DenseNet, "the one hundred layers Tiramisu" (Jégou et al. 2017), small, 2D/2.5D."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SpecError
from .blocks import init_weights, norm_layer
from .registry import ArchitectureInfo, register
from .spec import ModelSpec


class DenseLayer(nn.Sequential):
    """Pre-activation layer: norm → ReLU → 3×3 convolution (``growth`` maps) → dropout."""

    def __init__(self, in_channels: int, growth: int, norm: str, dropout: float) -> None:
        layers: list[nn.Module] = [
            norm_layer(norm, in_channels, 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth, 3, padding=1, bias=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class DenseBlock(nn.Module):
    """``layers`` dense layers, each fed with the concatenation of all previous outputs.

    ``forward`` returns the input and all new maps concatenated (``keep_input=True``, the
    downsampling path) or only the new maps (the upsampling path, which keeps the width
    bounded).
    """

    def __init__(
        self, in_channels: int, layers: int, growth: int, norm: str, dropout: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth, growth, norm, dropout) for i in range(layers)
        )
        self.new_channels = layers * growth

    def forward(self, x: torch.Tensor, keep_input: bool = True) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features if keep_input else features[1:], dim=1)


class TransitionDown(nn.Sequential):
    """Norm → ReLU → 1×1 convolution → dropout → 2×2 max pooling."""

    def __init__(self, channels: int, norm: str, dropout: float) -> None:
        layers: list[nn.Module] = [
            norm_layer(norm, channels, 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class FCDenseNet(nn.Module):
    """FC-DenseNet (Tiramisu): dense blocks in a U-shaped network with skip connections.

    Parameters
    ----------
    in_channels, out_channels
        Input channels and output classes.
    depth
        Number of 2× downsamplings (input sizes must be multiples of ``2 ** depth``).
    layers_per_block
        Dense layers in every dense block (the bottleneck block included).
    growth_rate
        Feature maps added by each dense layer.
    first_filters
        Channels of the first 3×3 convolution.
    norm, dropout
        Normalisation and dropout of the dense layers and transitions.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 4,
        layers_per_block: int = 4,
        growth_rate: int = 12,
        first_filters: int = 32,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.depth = depth
        L, g = layers_per_block, growth_rate
        self.stem = nn.Conv2d(in_channels, first_filters, 3, padding=1)
        skip_channels = []
        c = first_filters
        self.down_blocks = nn.ModuleList()
        self.transitions_down = nn.ModuleList()
        for _ in range(depth):
            self.down_blocks.append(DenseBlock(c, L, g, norm, dropout))
            c += L * g
            skip_channels.append(c)
            self.transitions_down.append(TransitionDown(c, norm, dropout))
        self.bottleneck = DenseBlock(c, L, g, norm, dropout)
        up_in = L * g
        self.transitions_up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(depth)):
            self.transitions_up.append(nn.ConvTranspose2d(up_in, up_in, 2, stride=2))
            block_in = up_in + skip_channels[i]
            self.up_blocks.append(DenseBlock(block_in, L, g, norm, dropout))
            up_in = L * g
        self.final_norm = nn.Sequential(
            norm_layer(norm, block_in + L * g, 2), nn.ReLU(inplace=True)
        )
        self.head = nn.Conv2d(block_in + L * g, out_channels, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x, keep_input=False)
        for k, (up, block) in enumerate(zip(self.transitions_up, self.up_blocks)):
            x = torch.cat([up(x), skips[self.depth - 1 - k]], dim=1)
            x = block(x, keep_input=k == self.depth - 1)
        return self.head(self.final_norm(x))


def build_fc_densenet(spec: ModelSpec, params: dict[str, Any]) -> nn.Module:
    """Build an :class:`FCDenseNet` for ``spec`` with resolved ``params``."""
    for key, lo, hi in (
        ("depth", 1, 6),
        ("layers_per_block", 1, 16),
        ("growth_rate", 1, 64),
        ("first_filters", 1, 256),
    ):
        if not lo <= params[key] <= hi:
            raise SpecError(f"{key} must lie in {lo}..{hi}, got {params[key]!r}.")
    if not 0.0 <= params["dropout"] < 1.0:
        raise SpecError(f"dropout must lie in [0, 1), got {params['dropout']!r}.")
    return FCDenseNet(
        spec.in_channels,
        spec.class_count,
        depth=params["depth"],
        layers_per_block=params["layers_per_block"],
        growth_rate=params["growth_rate"],
        first_filters=params["first_filters"],
        norm=params["norm"],
        dropout=params["dropout"],
    )


register(
    ArchitectureInfo(
        name="fc_densenet",
        title="FC-DenseNet (Tiramisu)",
        description=(
            "Fully convolutional DenseNet, 'the one hundred layers Tiramisu' (Jégou et al. "
            "2017): every layer sees the feature maps of all earlier layers of its block, so "
            "it reaches good accuracy with few parameters (about 0.5 M by default) and "
            "little training data. It keeps many feature maps at full resolution, so it needs "
            "more memory and time per step than U-Net on a CPU. 2D and 2.5D only."
        ),
        dimensions=("2D", "2.5D"),
        defaults={
            "depth": 4,
            "layers_per_block": 4,
            "growth_rate": 12,
            "first_filters": 32,
            "norm": "batch",
            "dropout": 0.0,
        },
        builder=build_fc_densenet,
        size_divisor=lambda spec, params: 2 ** int(params["depth"]),
    )
)
