"""MONAI networks in the registry: SegResNet and the residual U-Net.

MONAI is imported only when the network is built (``import monai`` takes seconds). Not
offered: UNETR, whose position embeddings fix the input size at build time (conflicting with
sliding-window inference on windows of any padded size), and SwinUNETR, which needs the
``einops`` package (not an nbseg dependency) and is several times slower than U-Net on a CPU.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import SpecError
from .blocks import (
    SafeBatchNorm2d,
    SafeBatchNorm3d,
    SafeInstanceNorm2d,
    SafeInstanceNorm3d,
    group_count,
)
from .registry import ArchitectureInfo, register
from .spec import ModelSpec


def make_norms_safe(module: nn.Module) -> nn.Module:
    """Replace plain batch- and instance-norm layers by the safe variants (in place).

    See :class:`nbseg.models.blocks.SafeBatchNorm2d` and ``SafeInstanceNorm2d``: a batch of
    one sample with a 1-pixel feature map is then normalised (with the running statistics,
    or to the bias) instead of raising.
    """
    safe_kinds: dict[type[nn.Module], type[nn.modules.batchnorm._NormBase]] = {
        nn.BatchNorm2d: SafeBatchNorm2d,
        nn.BatchNorm3d: SafeBatchNorm3d,
        nn.InstanceNorm2d: SafeInstanceNorm2d,
        nn.InstanceNorm3d: SafeInstanceNorm3d,
    }
    for name, child in module.named_children():
        kind = safe_kinds.get(type(child))
        if kind is not None and isinstance(child, nn.modules.batchnorm._NormBase):
            safe = kind(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            safe.load_state_dict(child.state_dict())
            setattr(module, name, safe)
        else:
            make_norms_safe(child)
    return module


def _check_common(params: dict[str, Any], max_depth: int) -> None:
    """Range checks of the parameters every MONAI network here shares."""
    depth, filters, dropout = params["depth"], params["filters"], params["dropout"]
    if not 2 <= depth <= max_depth:
        raise SpecError(f"depth must lie in 2..{max_depth}, got {depth!r}.")
    if not 1 <= filters <= 256:
        raise SpecError(f"filters must lie in 1..256, got {filters!r}.")
    if not 0.0 <= dropout < 1.0:
        raise SpecError(f"dropout must lie in [0, 1), got {dropout!r}.")


def _monai_norm(norm: str, filters: int) -> tuple[str, dict[str, Any]]:
    if norm == "batch":
        return ("BATCH", {})
    if norm == "instance":
        return ("INSTANCE", {"affine": True})
    if norm == "group":
        return ("GROUP", {"num_groups": group_count(filters)})
    raise SpecError(
        f"norm must be 'batch', 'instance' or 'group' for MONAI networks, got {norm!r}."
    )


_BLOCKS_DOWN = (1, 2, 2, 4, 4, 4)


def build_segresnet(spec: ModelSpec, params: dict[str, Any]) -> nn.Module:
    """Build a MONAI ``SegResNet`` for ``spec`` with resolved ``params``."""
    from monai.networks.nets import SegResNet

    _check_common(params, max_depth=len(_BLOCKS_DOWN))
    depth, filters = params["depth"], params["filters"]
    net = SegResNet(
        spatial_dims=spec.spatial_dims,
        init_filters=filters,
        in_channels=spec.in_channels,
        out_channels=spec.class_count,
        dropout_prob=params["dropout"] or None,
        norm=_monai_norm(params["norm"], filters),
        blocks_down=_BLOCKS_DOWN[:depth],
        blocks_up=(1,) * (depth - 1),
        upsample_mode="nontrainable",
    )
    return make_norms_safe(net)


register(
    ArchitectureInfo(
        name="segresnet",
        title="SegResNet (MONAI)",
        description=(
            "MONAI's SegResNet (Myronenko 2018, BraTS winner): a residual encoder with "
            "group normalisation and a light decoder with bilinear/trilinear upsampling. "
            "Trains well with small batches and in 3D; a good alternative to U-Net for CT and "
            "MRI volumes. 'depth' is the number of resolution levels (inputs padded to "
            "multiples of 2^(depth-1)). 2D, 2.5D and 3D; similar cost to U-Net on a CPU."
        ),
        dimensions=("2D", "2.5D", "3D"),
        defaults={"depth": 4, "filters": 16, "norm": "group", "dropout": 0.0},
        builder=build_segresnet,
        size_divisor=lambda spec, params: 2 ** (int(params["depth"]) - 1),
    )
)


def build_residual_unet(spec: ModelSpec, params: dict[str, Any]) -> nn.Module:
    """Build a MONAI ``UNet`` with residual units for ``spec`` with resolved ``params``."""
    from monai.networks.nets import UNet

    _check_common(params, max_depth=7)
    depth, filters, units = params["depth"], params["filters"], params["residual_units"]
    if not 0 <= units <= 4:
        raise SpecError(f"residual_units must lie in 0..4, got {units!r}.")
    net = UNet(
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.class_count,
        channels=tuple(filters * 2**i for i in range(depth)),
        strides=(2,) * (depth - 1),
        num_res_units=units,
        norm=_monai_norm(params["norm"], filters),
        dropout=params["dropout"],
    )
    return make_norms_safe(net)


register(
    ArchitectureInfo(
        name="residual_unet",
        title="Residual U-Net (MONAI)",
        description=(
            "MONAI's UNet (Kerfoot et al. 2018): every level is a strided convolution "
            "followed by residual units, so the network computes from half resolution on, "
            "with instance normalisation. About half the cost of U-Net per step on a CPU "
            "(0.4 M parameters at the defaults), so more steps fit in a few CPU-minutes. "
            "'depth' is the number of resolution levels (inputs padded to multiples of "
            "2^(depth-1)). 2D, 2.5D and 3D."
        ),
        dimensions=("2D", "2.5D", "3D"),
        defaults={
            "depth": 4,
            "filters": 16,
            "residual_units": 2,
            "norm": "instance",
            "dropout": 0.0,
        },
        builder=build_residual_unet,
        size_divisor=lambda spec, params: 2 ** (int(params["depth"]) - 1),
    )
)
