"""Cost of nbseg's training machinery (Lightning + every callback) over a hand-written loop.

All three sides train the same default 2D U-Net (same initial weights) on the same deterministic
sample volume, with the same patches, batches, on-device augmentation, loss, optimiser (Adam)
and per-epoch cosine schedule, and run the same validation forward passes:

- **nbseg**: ``nbseg.train`` with everything a notebook user gets: per-epoch metrics
  (confusion-matrix Dice/IoU/accuracy), the feedback-region prediction, the checkpoint cache,
  Stop checks, and a widget-like listener that stores every batch's progress, renders the
  feedback RGB overlay and encodes it as PNG every epoch (what the Train tab displays) and
  appends the metrics to a plain list (a bqplot-free graph sink);
- **plain**: a minimal PyTorch loop over the same ``DataLoader``, with the same numerics as
  nbseg's defaults (channels-last memory format; bf16 autocast where nbseg's
  ``precision="auto"`` picks it; the fused Adam kernel) and the gradients zeroed before each
  forward pass (the faster order, which nbseg uses too), so the difference is the machinery
  alone;
- **bare**: ``nbseg.train`` without the listener, the feedback prediction and the checkpoint
  cache: Lightning and nbseg's module alone (the floor under the live UI's own cost).

The three sides run interleaved (``--repeats`` rounds, rotating which goes first) and the
medians of the per-round ratios to the plain loop are reported, with the pooled ratios (sums
over rounds), so a busy machine affects every side alike. Target: nbseg ≤ 3 % slower.

    python benchmarks/ui_overhead.py                   # ~3 min on 2 cores
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


def setup(args: argparse.Namespace):
    ds = nbseg.datasets.fibres(shape=(16, 256, 256), labelled_slices=args.labelled, seed=0)
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="2D")
    params = nbseg.TrainingParams(
        patch_size=args.patch, batch_size=args.batch, epochs=args.epochs, seed=0
    )
    tset = nbseg.TrainingSet(inputs=ds.image, output=ds.labels)
    return spec, params, tset


def run_nbseg(args: argparse.Namespace, bare: bool = False) -> tuple[float, float, int]:
    """``nbseg.train`` with every callback; ``bare``: without listener, feedback and cache."""
    import torch

    spec, params, tset = setup(args)
    if bare:
        params.checkpoint_cache_mb = 0
    torch.manual_seed(0)
    model = nbseg.generate_model(spec)
    listener = WidgetLikeListener()
    kw: dict[str, Any] = {"feedback": False} if bare else {"callbacks": [listener]}
    t0, c0 = time.perf_counter(), time.process_time()
    result = nbseg.train(model, tset, params, validation=0.2, **kw)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    if not bare:
        assert len(listener.graph) == args.epochs and listener.png, "listener saw every epoch"
        assert result.checkpoints is not None and result.feedback is not None
    return dt, dc, result.extra["train_patches"]


def run_bare(args: argparse.Namespace) -> tuple[float, float, int]:
    return run_nbseg(args, bare=True)


def run_plain(args: argparse.Namespace) -> tuple[float, float, int]:
    import pytorch_lightning as pl
    import torch

    from nbseg.data.augment import augment_batch
    from nbseg.data.trainingset import Normalisation
    from nbseg.devices import resolve_precision
    from nbseg.training.losses import SegmentationLoss
    from nbseg.training.module import SegmentationDataModule, build_optimizer
    from nbseg.training.run import channels_last_format

    spec, params, tset = setup(args)
    torch.manual_seed(0)
    model = nbseg.generate_model(spec)
    # the same numerics as nbseg's defaults: memory format and (bf16) mixed precision
    fmt = channels_last_format(spec.spatial_dims, "cpu")
    bf16 = resolve_precision(params.precision, "cpu", spec.input_dimension) == "bf16-mixed"
    t0, c0 = time.perf_counter(), time.process_time()
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
            # gradients zeroed before the forward pass, as in PyTorch's examples and in nbseg
            # (not Lightning): 1-2 % faster steps than zeroing between forward and backward
            opt.zero_grad()
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits = net(x.contiguous(memory_format=fmt))
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            for x, y in dm.val_dataloader():
                loss_fn(net(x.contiguous(memory_format=fmt)), y)
    return time.perf_counter() - t0, time.process_time() - c0, len(dm.train_patches)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the three sides")
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
    run_bare(args)
    run_nbseg(args)
    sides = [("plain", run_plain), ("bare", run_bare), ("nbseg", run_nbseg)]
    rows = []
    for i in range(args.repeats):
        # rotate which side goes first so drift in machine load cancels
        order = sides[i % 3 :] + sides[: i % 3]
        wall, cpu = {}, {}
        for name, fn in order:
            wall[name], cpu[name], patches = fn(args)
        rows.append(
            {
                "run": i + 1,
                "plain wall s": round(wall["plain"], 2),
                "nbseg wall s": round(wall["nbseg"], 2),
                "wall overhead %": round(100 * (wall["nbseg"] / wall["plain"] - 1), 1),
                "plain CPU s": round(cpu["plain"], 2),
                "bare CPU s": round(cpu["bare"], 2),
                "nbseg CPU s": round(cpu["nbseg"], 2),
                "floor %": round(100 * (cpu["bare"] / cpu["plain"] - 1), 1),
                "CPU overhead %": round(100 * (cpu["nbseg"] / cpu["plain"] - 1), 1),
                "patches/epoch": patches,
            }
        )
        print(f"# {rows[-1]}", flush=True)

    def pooled(side: str) -> float:
        return 100 * (
            sum(r[f"{side} CPU s"] for r in rows) / sum(r["plain CPU s"] for r in rows) - 1
        )

    med_wall = statistics.median(r["wall overhead %"] for r in rows)
    med_cpu = statistics.median(r["CPU overhead %"] for r in rows)
    med_floor = statistics.median(r["floor %"] for r in rows)
    print()
    print_table(rows)
    print(
        f"\nmedian overhead: wall {med_wall:+.1f} %, CPU time {med_cpu:+.1f} % (target ≤ 3 %); "
        f"pooled CPU time (sum over runs) {pooled('nbseg'):+.1f} %. Of it, the Lightning floor "
        f"(nbseg.train without listener, feedback and checkpoint cache): median "
        f"{med_floor:+.1f} %, pooled {pooled('bare'):+.1f} % — {args.epochs} epochs, patch "
        f"{args.patch}, batch {args.batch}, validation 0.2. On a shared machine trust the "
        "CPU-time ratio (process CPU seconds, all threads)."
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
