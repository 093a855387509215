"""The architecture registry: names → builders, defaults and user-facing descriptions.

Every architecture module (``unet.py``, ``deeplabv3plus.py`` ...) calls :func:`register` with
an :class:`ArchitectureInfo` when imported; the built-in modules are imported at the end of
this module, so :data:`ARCHITECTURES` is complete once ``nbseg.models.registry`` is loaded.

Network contract (what :func:`build_network` returns):

* input: float tensor ``(B, spec.in_channels, H, W)`` for ``"2D"`` and ``"2.5D"`` (2.5D
  channels are ordered input-major: ``channel = input_index * slices + slice_index``), or
  ``(B, spec.input_count, D, H, W)`` for ``"3D"``;
* output: raw logits ``(B, spec.class_count, H, W)`` or ``(B, class_count, D, H, W)``, the same
  spatial size as the input, for every spatial size that is a multiple of
  :func:`size_divisor` (callers pad to that).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import SpecError
from .blocks import NORMS
from .spec import ModelSpec


@dataclass
class ArchitectureInfo:
    """One registered architecture.

    Parameters
    ----------
    name
        Registry key, used in :attr:`ModelSpec.architecture`.
    title
        Display name.
    description
        User-facing paragraph: what it is, when to use it, what it costs on a CPU.
    dimensions
        Supported input dimensions among ``"2D"``, ``"2.5D"``, ``"3D"``.
    defaults
        Editable parameters and their default values (int, float, str or bool).
    builder
        ``builder(spec, params) -> nn.Module`` with ``params`` the resolved parameters.
    size_divisor
        ``size_divisor(spec, params) -> int``: spatial sizes must be multiples of it.
    """

    name: str
    title: str
    description: str
    dimensions: tuple[str, ...]
    defaults: dict[str, Any]
    builder: Callable[[ModelSpec, dict], nn.Module]
    size_divisor: Callable[[ModelSpec, dict], int]


ARCHITECTURES: dict[str, ArchitectureInfo] = {}

#: One line of help per architecture parameter (the New model panel's tooltips, docs).
PARAMETER_HELP: dict[str, str] = {
    "depth": "Number of resolution levels (each halves the patch size).",
    "filters": "Feature channels at the first level (doubled at every level).",
    "norm": "Normalisation layer after each convolution.",
    "dropout": "Dropout probability (0 = off).",
    "residual": "Use residual (ResNet-style) convolution blocks.",
    "output_stride": "Ratio of input to encoder output resolution (8 or 16).",
    "atrous_rate": "Base dilation of the ASPP atrous convolutions.",
    "layers_per_block": "Dense layers in each dense block.",
    "growth_rate": "Channels added by every dense layer.",
    "first_filters": "Channels of the first convolution.",
    "lstm_channels": "Hidden channels of the convolutional LSTM across slices.",
    "final_lstm": "Add a final convolutional LSTM layer.",
}

#: Parameters whose values are a fixed set of strings (shown as a Dropdown).
PARAMETER_CHOICES: dict[str, tuple[str, ...]] = {"norm": tuple(NORMS)}


def register(info: ArchitectureInfo) -> ArchitectureInfo:
    """Add (or replace) an architecture in the registry; returns ``info``."""
    for key, value in info.defaults.items():
        if not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"{info.name}: default {key}={value!r} must be an int, float, str or bool."
            )
    ARCHITECTURES[info.name] = info
    return info


def architectures() -> list[ArchitectureInfo]:
    """All registered architectures, in registration order."""
    return list(ARCHITECTURES.values())


def get_architecture(name: str) -> ArchitectureInfo:
    """The architecture registered as ``name``.

    Raises
    ------
    SpecError
        When ``name`` is unknown; the message lists the known names.
    """
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise SpecError(
            f"Unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}."
        ) from None


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, type(default))


def resolve_parameters(spec: ModelSpec) -> dict[str, Any]:
    """The architecture's default parameters overridden by ``spec.parameters``.

    Integers are accepted where a float is expected (and converted).

    Raises
    ------
    SpecError
        For an unknown architecture, an unknown parameter name or a value of the wrong type;
        the message names the parameter and lists the valid ones.
    """
    info = get_architecture(spec.architecture)
    params = dict(info.defaults)
    given = spec.parameters or {}
    if not isinstance(given, dict):
        raise SpecError(f"ModelSpec.parameters must be a dict, got {type(given).__name__}.")
    for key, value in given.items():
        if key not in info.defaults:
            valid = ", ".join(f"{k} (default {v!r})" for k, v in info.defaults.items())
            raise SpecError(
                f"Unknown parameter {key!r} for architecture {info.name!r}; valid parameters: "
                f"{valid or 'none'}."
            )
        default = info.defaults[key]
        if not _type_ok(default, value):
            raise SpecError(
                f"Parameter {key!r} of {info.name!r} must be a {type(default).__name__} "
                f"(default {default!r}), got {value!r}."
            )
        params[key] = float(value) if isinstance(default, float) else value
    return params


def _check_choice(info: ArchitectureInfo, params: dict[str, Any]) -> None:

    norm = params.get("norm")
    if norm is not None and isinstance(info.defaults.get("norm"), str) and norm not in NORMS:
        raise SpecError(f"Parameter 'norm' of {info.name!r} must be one of {NORMS}, got {norm!r}.")


def build_network(spec: ModelSpec) -> nn.Module:
    """Build the untrained network described by ``spec``.

    Parameters
    ----------
    spec
        The model specification; validated here.

    Returns
    -------
    nn.Module
        Maps ``(B, spec.in_channels, H, W)`` (2D/2.5D) or ``(B, input_count, D, H, W)`` (3D)
        to logits ``(B, class_count, ...)`` of the same spatial size, for sizes that are
        multiples of :func:`size_divisor`.

    Raises
    ------
    SpecError
        When the spec is invalid, the architecture unknown or the input dimension not
        supported by the architecture, or a parameter is unknown or invalid.
    """
    spec.validate()
    info = get_architecture(spec.architecture)
    if spec.input_dimension not in info.dimensions:
        raise SpecError(
            f"Architecture {info.name!r} does not support input dimension "
            f"{spec.input_dimension!r}; it supports {', '.join(info.dimensions)}."
        )
    params = resolve_parameters(spec)
    _check_choice(info, params)
    try:
        return info.builder(spec, params)
    except SpecError:
        raise
    except (ValueError, TypeError, AssertionError) as err:
        raise SpecError(f"Cannot build {info.name!r} with parameters {params}: {err}") from None


def size_divisor(spec: ModelSpec) -> int:
    """Spatial sizes the network accepts are multiples of this number (pad inputs to it)."""
    info = get_architecture(spec.architecture)
    return int(info.size_divisor(spec, resolve_parameters(spec)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def input_shape(spec: ModelSpec, patch_size: int | Sequence[int], batch_size: int = 1) -> tuple:
    """The network input shape for a patch: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.

    ``patch_size`` is an int (square / cubic patch) or a tuple whose last two (2D, 2.5D) or
    three (3D) entries are used, matching :func:`nbseg.data.patches.patch_shape`.
    """
    if isinstance(patch_size, int):
        size = (patch_size,) * spec.spatial_dims
    else:
        size = tuple(int(s) for s in patch_size)
        if len(size) < spec.spatial_dims:
            raise SpecError(
                f"A {spec.input_dimension} model needs a {spec.spatial_dims}D patch size, got "
                f"{tuple(patch_size)}."
            )
        size = size[-spec.spatial_dims :]
    return (int(batch_size), spec.in_channels, *size)


def layer_rows(network: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    leaves: list[tuple[str, nn.Module]] = []

    def expand(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.ModuleList | nn.ModuleDict) or (
                type(child) is nn.Sequential and prefix == ""
            ):
                expand(f"{full}.", child)
            else:
                leaves.append((full, child))

    expand("", network)
    rows: list[dict[str, Any]] = []
    handles = []

    def hook_for(name: str, module: nn.Module) -> Callable[[nn.Module, Any, Any], None]:
        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            rows.append(
                {
                    "name": name,
                    "type": type(mod).__name__,
                    "output_shape": shape,
                    "parameters": count_parameters(mod),
                }
            )

        return hook

    for name, module in leaves:
        handles.append(module.register_forward_hook(hook_for(name, module)))
    try:
        with torch.no_grad():
            network(x)
    finally:
        for h in handles:
            h.remove()
    # a module used several times (e.g. a shared pooling layer) gets one row per call
    return rows


def describe_network(spec: ModelSpec, patch_size: int | Sequence[int] = 64) -> list[dict]:
    """A table of the network's top-level blocks and their output shapes for one patch.

    Parameters
    ----------
    spec
        The model specification.
    patch_size
        Patch size as for training (int or tuple); rounded up to :func:`size_divisor`.

    Returns
    -------
    list of dict
        One row per block call in execution order, e.g. ``{"name": "encoder.0", "type":
        "ConvBlock", "output_shape": (1, 16, 64, 64), "parameters": 2320}``, computed on the
        meta device (no memory, no compute).
    """
    network = build_network(spec)
    div = size_divisor(spec)
    shape = list(input_shape(spec, patch_size, 1))
    shape[2:] = [-(-s // div) * div for s in shape[2:]]
    network = network.to("meta").eval()
    x = torch.empty(shape, device="meta")
    return layer_rows(network, x)


# Built-in architectures register themselves on import, in this (display) order.
BUILTIN_MODULES: tuple[str, ...] = (
    "unet",
    "attention_unet",
    "deeplabv3plus",
    "fc_densenet",
    "sensor3d",
    "monai_nets",
)
for _module in BUILTIN_MODULES:
    importlib.import_module(f"{__package__}.{_module}")
