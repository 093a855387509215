"""Probe oneDNN's bf16 ``Conv3d`` on this CPU: relative error against float32, per kernel and
input depth, without and with nbseg's guard (``nbseg.models.blocks.guard_cpu_bf16_conv3d``).

For each convolution (32 → 32 channels, batch 2, 8×8 in-plane) and input depth, the table
gives max |bf16 − fp32| / max |fp32| of the output, the input gradient and the weight
gradient. bf16 rounding gives about 0.004; a wrong kernel gives ≥ 1 (up to 1e37, or nan).
The "guarded" column forces the guard; in training nbseg applies it only where its runtime
check (``cpu_bf16_conv3d_is_wrong``) finds this CPU's weight gradient wrong.

    python benchmarks/bf16_conv3d.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, print_table

from nbseg.models.blocks import cpu_bf16_conv3d_is_wrong, guard_cpu_bf16_conv3d

CONVS = {
    "3×3×3": dict(kernel_size=3, padding=1),
    "5×5×5": dict(kernel_size=5, padding=2),
    "3×1×1": dict(kernel_size=(3, 1, 1), padding=(1, 0, 0)),
    "1×3×3": dict(kernel_size=(1, 3, 3), padding=(0, 1, 1)),
    "3×3×3 stride 2": dict(kernel_size=3, padding=1, stride=2),
}


def errors(conv: torch.nn.Module, x0: torch.Tensor) -> list[float]:
    results = {}
    for bf16 in (False, True):
        conv.zero_grad()
        x = x0.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = conv(x)
        out.float().square().mean().backward()
        results[bf16] = (out.float().detach(), x.grad, conv.weight.grad.clone())
    return [
        float((a - b).abs().max() / b.abs().max()) for a, b in zip(results[True], results[False])
    ]


def main() -> int:
    print(machine_line())
    torch.manual_seed(0)
    rows = []
    for name, kw in CONVS.items():
        for depth in (1, 2, 3, 4, 6):
            conv = torch.nn.Conv3d(32, 32, **kw)
            x = torch.randn(2, 32, depth, 8, 8)
            plain = errors(conv, x)
            undo = guard_cpu_bf16_conv3d(conv, force=True)
            guarded = errors(conv, x)
            undo()
            rows.append(
                {
                    "conv": name,
                    "depth": depth,
                    "bf16 out": f"{plain[0]:.2g}",
                    "bf16 grad in": f"{plain[1]:.2g}",
                    "bf16 grad w": f"{plain[2]:.2g}",
                    "guarded grad w": f"{guarded[2]:.2g}",
                    "wrong": "yes" if not plain[2] < 0.05 else "",
                }
            )
    print_table(rows)
    need = cpu_bf16_conv3d_is_wrong()
    print(
        f"\nnbseg's runtime check (cpu_bf16_conv3d_is_wrong): {need} — bf16 3D training on this "
        + ("CPU runs thin inputs in float32." if need else "CPU needs no guard.")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
