"""Attention U-Net (Oktay et al. 2018): U-Net with attention gates on the skips."""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import ArchitectureInfo, register
from .spec import ModelSpec
from .unet import UNET_DEFAULTS, make_unet, pow2_divisor


def build_attention_unet(spec: ModelSpec, params: dict[str, Any]) -> nn.Module:
    """Build a :class:`UNet` with attention gates for ``spec`` with resolved ``params``."""
    return make_unet(spec, params, attention=True)


register(
    ArchitectureInfo(
        name="attention_unet",
        title="Attention U-Net",
        description=(
            "U-Net whose skip connections pass through attention gates (Oktay et al. 2018) "
            "that learn to suppress irrelevant regions: helps when the objects are small or "
            "sparse in a large field of view (organs, inclusions). About 10-20 % slower than "
            "U-Net with the same depth and filters; 2D, 2.5D and 3D."
        ),
        dimensions=("2D", "2.5D", "3D"),
        defaults=dict(UNET_DEFAULTS),
        builder=build_attention_unet,
        size_divisor=pow2_divisor,
    )
)
