"""Training throughput (patches/s) of the default 2D, 2.5D and 3D U-Nets on CPU.

For each input dimension it times training steps (after ``--warmup`` steps) of:

- ``nbseg``: ``nbseg.train`` (Lightning, every callback, on-device augmentation) with the
  default ``TrainingParams`` (``precision="auto"``: bf16 mixed on bf16-native CPUs in 2D/2.5D;
  channels-last memory format), and ``nbseg fp32`` with ``precision="32"``;
- ``plain``: a hand-written loop over the same ``DataLoader``, augmentation, loss and Adam,
  in fp32, and the variants ``plain+channels_last``, ``plain+bf16`` (CPU autocast) and, with
  ``--compile``, ``plain+compile`` (``torch.compile``; its compile time is excluded).

It also reports the fraction of nbseg's step time spent waiting for data (patch extraction +
collation + augmentation, measured between one batch's end and the next one's start).
Variants run interleaved in ``--rounds`` rounds; the table gives the median patches/s and the
median ratio to ``plain`` of the same round.

    python benchmarks/throughput.py --dims 2D,2.5D           # ~4 min on 2 cores
    python benchmarks/throughput.py --dims 3D --steps 6 --warmup 2
    python benchmarks/throughput.py --dims 2D --steps 30 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, print_table

import nbseg

SETTINGS = {"2D": (128, 8), "2.5D": (128, 8), "3D": (48, 4)}  # patch (the auto default), batch


def make(dim: str, precision: str = "auto"):
    ds = nbseg.datasets.fibres(shape=(48, 160, 160), seed=0)
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension=dim)
    patch, batch = SETTINGS[dim]
    params = nbseg.TrainingParams(
        patch_size=patch, batch_size=batch, epochs=1, precision=precision, seed=0
    )
    return spec, params, nbseg.TrainingSet(inputs=ds.image, output=ds.truth)


def run_nbseg(dim: str, steps: int, warmup: int, precision: str = "auto") -> tuple[float, float]:
    """(patches/s, data-wait fraction) of nbseg.train."""
    import pytorch_lightning as pl
    import torch

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.ends: list[float] = []

        def on_train_batch_start(self, *a) -> None:
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, *a) -> None:
            self.ends.append(time.perf_counter())

    spec, params, tset = make(dim, precision)
    torch.manual_seed(0)
    model = nbseg.generate_model(spec)
    clock = Clock()
    nbseg.train(
        model,
        tset,
        params,
        validation=0,
        callbacks=[clock],
        trainer_kwargs={"limit_train_batches": warmup + steps},
    )
    s, e = clock.starts[warmup:], clock.ends[warmup - 1 :]
    total = e[-1] - e[0]
    wait = sum(s[i] - e[i] for i in range(len(s)))
    return params.batch_size * steps / total, wait / total


def run_plain(dim: str, steps: int, warmup: int, variant: str = "") -> float:
    import torch

    from nbseg.data.augment import augment_batch
    from nbseg.data.trainingset import Normalisation
    from nbseg.models.blocks import channels_last_nd
    from nbseg.training.losses import SegmentationLoss
    from nbseg.training.module import SegmentationDataModule

    spec, params, tset = make(dim, "32")
    torch.manual_seed(0)
    net = nbseg.generate_model(spec).network
    dm = SegmentationDataModule([tset], spec, params, Normalisation.fit([tset]), 0)
    loss_fn = SegmentationLoss(params)
    fmt = channels_last_nd(spec.spatial_dims)
    if variant == "channels_last":
        net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=params.learning_rate)
    fwd = torch.compile(net) if variant == "compile" else net
    gen = torch.Generator().manual_seed(0)
    net.train()
    t0 = 0.0
    for i, (x, y) in enumerate(dm.train_dataloader()):
        if i == warmup:
            t0 = time.perf_counter()
        if i == warmup + steps:
            break
        x, y = augment_batch(x, y, params.augmentation, spec.spatial_dims, gen)
        if variant == "channels_last":
            x = x.contiguous(memory_format=fmt)
        ctx = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if variant == "bf16"
            else contextlib.nullcontext()
        )
        opt.zero_grad()  # before the forward pass: the faster order (see ui_overhead.py)
        with ctx:
            loss = loss_fn(fwd(x), y)
        loss.backward()
        opt.step()
    return params.batch_size * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dims", default="2D,2.5D,3D")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    args = ap.parse_args(argv)
    print(machine_line())
    variants = ["plain", "plain+channels_last", "plain+bf16", "nbseg", "nbseg fp32"]
    if args.compile:
        variants.insert(3, "plain+compile")
    rows = []
    for dim in args.dims.split(","):
        speed: dict[str, list[float]] = {v: [] for v in variants}
        ratio: dict[str, list[float]] = {v: [] for v in variants}
        waits: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            this: dict[str, float] = {}
            for v in order:
                if v.startswith("nbseg"):
                    prec = "32" if "fp32" in v else "auto"
                    this[v], wait = run_nbseg(dim, args.steps, args.warmup, prec)
                    waits[v].append(wait)
                else:
                    this[v] = run_plain(dim, args.steps, args.warmup, v.partition("+")[2])
                print(f"# {dim} round {r + 1} {v}: {this[v]:.1f} patches/s", flush=True)
            for v in variants:
                speed[v].append(this[v])
                ratio[v].append(this[v] / this["plain"])
        patch, batch = SETTINGS[dim]
        for v in variants:
            rows.append(
                {
                    "dim": dim,
                    "patch × batch": f"{patch} × {batch}",
                    "variant": v,
                    "patches/s": round(statistics.median(speed[v]), 1),
                    "× plain": round(statistics.median(ratio[v]), 2),
                    "data wait %": round(100 * statistics.median(waits[v]), 1) if waits[v] else "",
                }
            )
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
