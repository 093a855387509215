"""Cost of nbseg's training machinery (Lightning + every callback) over a hand-written loop.

Both sides train the same default 2D U-Net (same initial weights) on the same deterministic
sample volume, with the same patches, batches, on-device augmentation, loss, optimiser (Adam)
and per-epoch cosine schedule, and run the same validation forward passes:

- **nbseg**: ``nbseg.train`` with everything a notebook user gets: per-epoch metrics
  (confusion-matrix Dice/IoU/accuracy), the feedback-region prediction, the checkpoint cache,
  Stop checks, and a widget-like listener that stores every batch's progress, renders the
  feedback RGB overlay and encodes it as PNG every epoch (what the Train tab displays) and
  appends the metrics to a plain list (a bqplot-free graph sink);
- **plain**: a minimal PyTorch loop over the same ``DataLoader``, with the same numerics as
  nbseg's defaults (channels-last memory format; bf16 autocast where nbseg's
  ``precision="auto"`` picks it; the fused Adam kernel), so the difference is the machinery
  alone.

A/B runs are interleaved (``--repeats`` pairs) and the median of the per-pair time ratios is
reported, so a busy machine affects both sides alike. Target: nbseg ≤ 3 % slower.

    python benchmarks/ui_overhead.py                   # ~2 min on 2 cores
    python benchmarks/ui_overhead.py --repeats 5 --epochs 4 --profile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, print_table

import nbseg
from nbseg._png import encode_png
from nbseg.render import render_overlay


class WidgetLikeListener(nbseg.TrainingListener):
    """What the Train tab does on the training thread: keep progress, render the feedback."""

    def __init__(self) -> None:
        self.progress: dict[str, Any] = {}
        self.graph: list[dict[str, Any]] = []
        self.png = b""
        self.colors: list[str] = []
        self.image: np.ndarray | None = None

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.colors = info["class_colors"]
        self.image = info["feedback_image"]

    def on_batch_end(self, progress: dict[str, Any]) -> None:
        self.progress = progress

    def on_epoch_end(self, record: dict[str, Any], feedback: np.ndarray | None) -> None:
        self.graph.append(record)
        if feedback is not None and self.image is not None:
            rgb = render_overlay(self.image, feedback.astype(np.int16), self.colors, 0.5)
            self.png = encode_png(rgb)


def _faults() -> int:
    """Minor page faults of this process so far (fresh memory pages the kernel had to map)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def setup(args: argparse.Namespace):
    ds = nbseg.datasets.fibres(shape=(16, 256, 256), labelled_slices=args.labelled, seed=0)
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="2D")
    params = nbseg.TrainingParams(
        patch_size=args.patch, batch_size=args.batch, epochs=args.epochs, seed=0
    )
    tset = nbseg.TrainingSet(inputs=ds.image, output=ds.labels)
    return spec, params, tset


def run_nbseg(args: argparse.Namespace) -> tuple[float, float, int, int]:
    import torch

    spec, params, tset = setup(args)
    torch.manual_seed(0)
    model = nbseg.generate_model(spec)
    listener = WidgetLikeListener()
    t0, c0, f0 = time.perf_counter(), time.process_time(), _faults()
    result = nbseg.train(model, tset, params, validation=0.2, callbacks=[listener])
    dt, dc, df = time.perf_counter() - t0, time.process_time() - c0, _faults() - f0
    assert len(listener.graph) == args.epochs and listener.png, "listener saw every epoch"
    assert result.checkpoints is not None and result.feedback is not None
    return dt, dc, df, result.extra["train_patches"]


def run_plain(args: argparse.Namespace) -> tuple[float, float, int, int]:
    import pytorch_lightning as pl
    import torch

    from nbseg.data.augment import augment_batch
    from nbseg.data.trainingset import Normalisation
    from nbseg.training.losses import SegmentationLoss
    from nbseg.training.module import SegmentationDataModule, build_optimizer
    from nbseg.training.run import channels_last_format, resolve_precision

    spec, params, tset = setup(args)
    torch.manual_seed(0)
    model = nbseg.generate_model(spec)
    # the same numerics as nbseg's defaults: memory format and (bf16) mixed precision
    fmt = channels_last_format(spec.spatial_dims, "cpu")
    bf16 = resolve_precision(params.precision, "cpu", spec.input_dimension) == "bf16-mixed"
    t0, c0, f0 = time.perf_counter(), time.process_time(), _faults()
    pl.seed_everything(params.seed, verbose=False)
    norm = Normalisation.fit([tset], seed=params.seed)
    dm = SegmentationDataModule([tset], spec, params, norm, 0.2)
    net = model.network.to(memory_format=fmt)
    loss_fn = SegmentationLoss(params)
    opt = build_optimizer(params, net.parameters())  # Adam, fused kernel as in nbseg
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.epochs)
    gen = torch.Generator().manual_seed(params.seed)
    for epoch in range(params.epochs):
        net.train()
        dm.train_patches.set_epoch(epoch)
        for x, y in dm.train_dataloader():
            x, y = augment_batch(x, y, params.augmentation, 2, gen)
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits = net(x.contiguous(memory_format=fmt))
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            for x, y in dm.val_dataloader():
                loss_fn(net(x.contiguous(memory_format=fmt)), y)
    dt, dc, df = time.perf_counter() - t0, time.process_time() - c0, _faults() - f0
    return dt, dc, df, len(dm.train_patches)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved A/B pairs")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--labelled", type=int, default=4, help="labelled slices (epoch length)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--profile", action="store_true", help="cProfile one nbseg run (top 25)")
    args = ap.parse_args(argv)
    print(machine_line())
    # warm-up of both sides: imports (MONAI's on the first feedback prediction), allocator,
    # oneDNN primitives; a notebook pays these once per kernel, not per training
    run_plain(args)
    run_nbseg(args)
    rows = []
    for i in range(args.repeats):
        # alternate which side goes first so drift in machine load cancels
        order = [("plain", run_plain), ("nbseg", run_nbseg)]
        if i % 2:
            order.reverse()
        wall, cpu, faults = {}, {}, {}
        for name, fn in order:
            wall[name], cpu[name], faults[name], patches = fn(args)
        rows.append(
            {
                "pair": i + 1,
                "plain wall s": round(wall["plain"], 2),
                "nbseg wall s": round(wall["nbseg"], 2),
                "wall overhead %": round(100 * (wall["nbseg"] / wall["plain"] - 1), 1),
                "plain CPU s": round(cpu["plain"], 2),
                "nbseg CPU s": round(cpu["nbseg"], 2),
                "CPU overhead %": round(100 * (cpu["nbseg"] / cpu["plain"] - 1), 1),
                "plain faults k": round(faults["plain"] / 1000, 1),
                "nbseg faults k": round(faults["nbseg"] / 1000, 1),
                "patches/epoch": patches,
            }
        )
        print(f"# {rows[-1]}", flush=True)
    med_wall = statistics.median(r["wall overhead %"] for r in rows)
    med_cpu = statistics.median(r["CPU overhead %"] for r in rows)
    pooled = 100 * (sum(r["nbseg CPU s"] for r in rows) / sum(r["plain CPU s"] for r in rows) - 1)
    print()
    print_table(rows)
    print(
        f"\nmedian overhead: wall {med_wall:+.1f} %, CPU time {med_cpu:+.1f} % (target ≤ 3 %); "
        f"pooled CPU time (sum over pairs) {pooled:+.1f} % — "
        f"{args.epochs} epochs, patch {args.patch}, batch {args.batch}, validation 0.2. On a "
        "shared machine trust the CPU-time ratio (process CPU seconds, all threads)."
    )
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run_nbseg, args)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
