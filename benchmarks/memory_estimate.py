"""Memory estimate vs measured peak of a real training step, over a grid of settings.

Run with ``python benchmarks/memory_estimate.py`` (about 2 minutes on a 2-core CPU). For each
architecture × input dimension × patch size × batch size (× optimiser) it prints the
estimate of :func:`nbseg.training.memory.estimate_training_memory`, the peak measured by
:func:`nbseg.training.memory.measure_training_step_peak` (CPU allocations recorded by the
PyTorch profiler over a warm-up and a second training step) and their ratio; the target is
every ratio within ±20 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbseg.models.spec import ModelSpec
from nbseg.training.memory import estimate_training_memory, measure_training_step_peak

MIB = 1 << 20

# (architecture, dimension, patch, batch, optimizer, parameters)
GRID: list[tuple[str, str, int, int, str, dict]] = [
    ("unet", "2D", 64, 2, "adam", {}),
    ("unet", "2D", 128, 8, "adam", {}),
    ("unet", "2D", 256, 4, "adam", {}),
    ("unet", "2D", 128, 8, "sgd", {}),
    ("unet", "2D", 128, 8, "adadelta", {}),
    ("unet", "2D", 128, 4, "adam", {"filters": 32, "residual": True}),
    ("unet", "2.5D", 128, 4, "adam", {}),
    ("unet", "3D", 32, 1, "adam", {}),
    ("unet", "3D", 32, 4, "adam", {}),
    ("unet", "3D", 48, 2, "adam", {}),
    ("attention_unet", "2D", 128, 4, "adam", {}),
    ("attention_unet", "3D", 32, 2, "adam", {}),
    ("deeplabv3plus", "2D", 128, 8, "adam", {}),
    ("deeplabv3plus", "2D", 128, 4, "adam", {"output_stride": 8}),
    ("deeplabv3plus", "2.5D", 256, 2, "adam", {}),
    ("fc_densenet", "2D", 64, 4, "adam", {}),
    ("fc_densenet", "2D", 128, 2, "adam", {}),
    ("sensor3d", "2.5D", 64, 4, "adam", {}),
    ("sensor3d", "2.5D", 128, 2, "adam", {"final_lstm": True}),
    ("segresnet", "2D", 128, 8, "adam", {}),
    ("segresnet", "3D", 32, 1, "adam", {}),
    ("segresnet", "3D", 48, 2, "adam", {}),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only every third case")
    parser.add_argument(
        "--precision",
        default="32",
        help="32, bf16-mixed, or auto (nbseg's default: bf16-mixed for 2D/2.5D where native)",
    )
    args = parser.parse_args(argv)
    from nbseg.devices import resolve_precision

    grid = GRID[::3] if args.quick else GRID
    header = (
        f"{'arch':15s} {'dim':5s} {'patch':>5s} {'batch':>5s} {'optim':9s}"
        f" {'precision':10s} {'estimate MiB':>12s} {'measured MiB':>12s} {'ratio':>6s}"
    )
    print(header)
    print("-" * len(header))
    within = 0
    start = time.perf_counter()
    for arch, dim, patch, batch, optimizer, params in grid:
        spec = ModelSpec(architecture=arch, input_dimension=dim, parameters=params)
        prec = resolve_precision(args.precision, "cpu", dim)
        estimate = estimate_training_memory(spec, patch, batch, optimizer, precision=prec).total
        measured = measure_training_step_peak(spec, patch, batch, optimizer, precision=prec)
        ratio = estimate / measured
        within += abs(ratio - 1) <= 0.2
        label = arch + ("*" if params else "")
        print(
            f"{label:15s} {dim:5s} {patch:5d} {batch:5d} {optimizer:9s} {prec:10s}"
            f" {estimate / MIB:12.1f} {measured / MIB:12.1f} {ratio:6.2f}",
            flush=True,
        )
    print("-" * len(header))
    print(
        f"{within}/{len(grid)} estimates within ±20 % of the measured peak "
        f"({time.perf_counter() - start:.0f} s; * = non-default parameters)"
    )
    return 0 if within == len(grid) else 1


if __name__ == "__main__":
    raise SystemExit(main())
