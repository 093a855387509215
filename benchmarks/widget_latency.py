"""Kernel-side latency of the interactive widgets (target ≤ 30 ms per update).

Measures, at 512² and 1024² slices (512 × 512 canvas), the median over ``--repeats`` of:

- **paint move**: one mouse-move event of a brush stroke in the LabelEditor (stamp the disk
  segment, render the dirty region, encode and send it to the canvas);
- **slice scroll**: moving the LabelEditor's slice slider by one slice (contrast window,
  overlay, full frame);
- **feedback redraw**: ``ImageView.set_labels`` with a new prediction (the training panel's
  live feedback image).

The time is what the kernel spends in the callback, including ipycanvas' image encoding; the
transfer to the browser and its drawing are not included.

    .venv/bin/python benchmarks/widget_latency.py [--repeats 30] [--sizes 512 1024]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import xarray as xr

from nbseg.ui.imageview import ImageView
from nbseg.ui.labelling import LabelEditor

TARGET_MS = 30.0


def _ms(fn, repeats: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i + 1)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench(size: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    nz = 8
    image = xr.DataArray(
        rng.normal(100, 20, (nz, size, size)).astype(np.float32), dims=("z", "y", "x")
    )
    ed = LabelEditor(image)
    ed.brush_size.value = 8
    canvas = ed.view.canvas
    scale = ed.view.view.scale

    def send(kind: str, y: float, x: float) -> None:
        cy, cx = ed.view.view.to_canvas(y, x)
        canvas._handle_frontend_event(None, {"event": f"mouse_{kind}", "x": cx, "y": cy}, [])

    send("down", size / 4, size / 4)
    step = 6 / scale  # a 6-canvas-pixel mouse move (a fast stroke)

    def move(i: int) -> None:
        send("move", size / 4 + (i % 200) * step, size / 4 + (i % 200) * step * 0.7)

    out = {"paint move": _ms(move, repeats)}
    send("up", size / 2, size / 2)

    def scroll(i: int) -> None:
        ed.slice_slider.value = i % nz

    out["slice scroll"] = _ms(scroll, repeats)

    view = ImageView(512, 512)
    gray = rng.integers(0, 256, (size, size)).astype(np.uint8)
    view.set_image(gray)
    preds = [rng.integers(0, 3, (size, size)).astype(np.int16) for _ in range(4)]
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]

    def feedback(i: int) -> None:
        view.set_labels(preds[i % len(preds)], colors)

    out["feedback redraw"] = _ms(feedback, repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    args = ap.parse_args()
    print(f"kernel-side ms per update (median of {args.repeats}), target ≤ {TARGET_MS:.0f} ms")
    print(f"{'slice':>9} {'update':<16} {'ms':>7}")
    worst = 0.0
    for size in args.sizes:
        for name, ms in bench(size, args.repeats).items():
            worst = max(worst, ms)
            flag = "" if ms <= TARGET_MS else "  > target"
            print(f"{size:>4}²{'':>4} {name:<16} {ms:7.2f}{flag}")
    print(f"worst {worst:.2f} ms: {'OK' if worst <= TARGET_MS else 'over target'}")


if __name__ == "__main__":
    main()
