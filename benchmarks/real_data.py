"""Train nbseg's default 2D model on the shared real data and score the held-out slices.

Fixed splits (../shared/README.md): isbi2012 slices 0-19 train, 20-29 test (membrane Dice);
sandstone slices 0-5 train, 6-8 test (mean Dice of 4 phases). Prints Dice per class, the
training time and the epochs done. Needs ../shared/data (skips a dataset that is absent).

    python benchmarks/real_data.py --minutes 10            # the issue-6 budget
    python benchmarks/real_data.py --dataset isbi2012 --minutes 3 --dim 2.5D
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

import nbseg

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SPLITS = {
    "isbi2012": (
        "isbi2012/isbi2012_image.tif",
        "isbi2012/isbi2012_labels.tif",
        20,
        ["interior", "membrane"],
    ),
    "sandstone": (
        "sandstone/sandstone_image.tif",
        "sandstone/sandstone_labels.tif",
        6,
        ["pore", "phase 1", "phase 2", "dense"],
    ),
}


def load(name: str, sparse: float | None = None, seed: int = 0):
    import tifffile

    img_path, lab_path, n_train, classes = SPLITS[name]
    image = tifffile.imread(DATA / img_path)
    labels = tifffile.imread(DATA / lab_path).astype(np.int16)
    dims = ("z", "y", "x")
    train_img = xr.DataArray(image[:n_train], dims=dims, name=name)
    train_lab = labels[:n_train].copy()
    if sparse:
        train_lab = scribbles(train_lab, sparse, seed)
    train_lab = nbseg.multi_roi(xr.DataArray(train_lab, dims=dims), classes)
    test_img = xr.DataArray(image[n_train:], dims=dims)
    return train_img, train_lab, test_img, labels[n_train:], classes


def scribbles(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep ~``fraction`` of the labelled pixels as short random strokes (scribble-like)."""
    return nbseg.datasets.strokes(labels, fraction, seed)


def dice_per_class(pred: np.ndarray, truth: np.ndarray, k: int) -> list[float]:
    out = []
    for c in range(k):
        p, t = pred == c, truth == c
        out.append(float(2 * (p & t).sum() / max(1, p.sum() + t.sum())))
    return out


def run(name: str, args: argparse.Namespace) -> dict:
    train_img, train_lab, test_img, test_truth, classes = load(name, args.sparse)
    arch = nbseg.get_architecture(args.arch)
    spec = nbseg.ModelSpec(
        architecture=args.arch,
        class_count=len(classes),
        input_dimension=args.dim,
        slices=args.slices,
        name=f"{name}-{args.arch}-{args.dim}",
    )
    model = nbseg.generate_model(spec, class_names=classes)
    params = nbseg.TrainingParams(
        patch_size=args.patch,
        batch_size=args.batch,
        epochs=10_000,
        max_minutes=args.minutes,
        learning_rate=args.lr,
        seed=args.seed,
    )
    if args.factor:
        params.augmentation.factor = args.factor
    t0 = time.perf_counter()
    result = nbseg.train(model, nbseg.TrainingSet(train_img, train_lab), params, validation=0.1)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = nbseg.segment(model, test_img).values
    seg_s = time.perf_counter() - t1
    d = dice_per_class(pred, test_truth, len(classes))
    row = {
        "dataset": name,
        "arch": args.arch,
        "dim": args.dim,
        "params": model.parameter_count(),
        "epochs": len(result.history),
        "train_s": round(train_s, 1),
        "segment_s": round(seg_s, 1),
        "dice": [round(v, 4) for v in d],
        "score": round(d[1] if name == "isbi2012" else float(np.mean(d)), 4),
        "sparse": args.sparse,
        "defaults": {k: v for k, v in arch.defaults.items()},
    }
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", choices=[*SPLITS, "all"], default="all")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per dataset")
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--dim", default="2D", choices=["2D", "2.5D", "3D"])
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--factor", type=int, default=0, help="augmentation factor (0 = default)")
    ap.add_argument(
        "--sparse", type=float, default=None, help="keep this fraction of labels as scribbles"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="append the rows to this JSON-lines file")
    args = ap.parse_args(argv)
    names = list(SPLITS) if args.dataset == "all" else [args.dataset]
    if not DATA.exists():
        print(f"no shared data at {DATA}; nothing to do")
        return 0
    print(
        f"{'dataset':10} {'arch':8} {'dim':5} {'params':>8} {'epochs':>6} {'train s':>8} {'seg s':>6}  score   Dice per class"
    )
    for name in names:
        row = run(name, args)
        print(
            f"{row['dataset']:10} {row['arch']:8} {row['dim']:5} {row['params']:8d} {row['epochs']:6d} "
            f"{row['train_s']:8.1f} {row['segment_s']:6.1f}  {row['score']:.4f}  {row['dice']}",
            flush=True,
        )
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
