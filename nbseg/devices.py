"""Devices and numeric precision (a leaf module: torch only)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["accelerator_for", "resolve_precision", "torch_device"]


def resolve_precision(precision: str, accelerator: str, input_dimension: str = "2D") -> str:
    """``"auto"`` → ``"bf16-mixed"`` where the device computes bf16 natively (CPUs with
    AVX512-BF16 / AMX via oneDNN, CUDA GPUs with bf16), else ``"32"``. Weights stay fp32.

    In 3D on CPU, :func:`nbseg.models.blocks.guard_cpu_bf16_conv3d` keeps the convolutions
    whose weight gradient oneDNN gets wrong in bf16 (inputs thinner than the kernel) in fp32.
    """
    if precision != "auto":
        return precision
    try:
        if accelerator == "cpu":
            return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32"
        if accelerator == "gpu" and torch.cuda.is_available():
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32"
    except Exception:  # an older torch without the probe: play safe
        return "32"
    return "32"


def accelerator_for(device: str) -> tuple[str, Any]:
    """Lightning ``(accelerator, devices)`` for nbseg's ``device`` setting (``"auto"``,
    ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``)."""
    if device == "auto":
        return ("gpu", 1) if torch.cuda.is_available() else ("cpu", 1)
    if device.startswith("cuda"):
        idx = device.split(":")[1] if ":" in device else "0"
        return "gpu", [int(idx)]
    return device, 1


def torch_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a memory estimate of ``device``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"
