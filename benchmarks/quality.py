"""Segmentation quality on the shared real data: nbseg vs classical baselines vs a plain loop.

Fixed splits (``../shared/README.md``): isbi2012 slices 0-19 train, 20-29 test (score =
membrane Dice); sandstone slices 0-5 train, 6-8 test (score = mean Dice of the 4 phases);
``rare`` (synthetic, ``nbseg.datasets.multiphase(dense_grains=0)``, no shared data needed):
a 4-phase volume whose dense phase is 0.5 % of the voxels, slices 0-7 train, 8-11 test.
Methods (``--methods``, comma separated):

- ``otsu``, ``kmeans``: multi-Otsu thresholds / k-means on intensity, clusters mapped to
  classes by the classes' mean training intensity;
- ``forest``: ilastik-style random forest (100 trees, 200k class-balanced pixels) on
  Gaussian, LoG, gradient magnitude, Hessian and structure-tensor eigenvalues and DoG at
  σ = 0.7, 1.6, 3.5, 5.0;
- ``plain``: a hand-written PyTorch loop (MONAI UNet 16-128 with 2 residual units, AdamW 2e-3,
  cross-entropy + Dice, flips + 90° rotations, 128² patches, batch 8) for the same budget,
  predicted with MONAI ``sliding_window_inference``;
- ``nbseg``: ``nbseg.train`` with the default 2D U-Net (``--arch`` picks another registered
  architecture, ``--model`` its parameters) and default ``TrainingParams`` except
  ``max_minutes`` (the budget) and any ``--set`` overrides, then ``nbseg.segment``;
- ``nbseg-2.5D``: the same with the 2.5D model (3 slices);
- every nbseg row is followed by a ``+tta`` row: the same trained model, predicted with
  test-time augmentation (``segment(..., tta=True)``, the mean over flips);
- ``nbseg-sparse``, ``forest-sparse``, ``plain-sparse``: trained on ~10 % of the labelled
  pixels, kept as scribble-like strokes;
- ``--set semi_supervised=pseudo_labels``: nbseg also learns from pseudo-labels on the
  unlabelled training voxels; ``--unlabelled-test`` adds the test volume as ``unlabelled=``
  (its labels are never read).

The deep methods get ``--minutes`` of training each (wall clock, validation included for
nbseg). Needs ``../shared/data`` (skips with a message when absent) and scikit-learn +
scikit-image for the classical baselines.

    python benchmarks/quality.py                           # full: 10 min per deep method
    python benchmarks/quality.py --minutes 3 --methods nbseg,plain --datasets isbi2012
    python benchmarks/quality.py --methods nbseg --arch residual_unet --set aug.shear=0
    python benchmarks/quality.py --methods nbseg --validation 0 --window 512   # all slices
    python benchmarks/quality.py --methods nbseg --datasets isbi2012 --minutes 30 --curve 8
    python benchmarks/quality.py --methods nbseg-sparse --minutes 4 --set semi_supervised=pseudo_labels
    python benchmarks/quality.py --methods nbseg-sparse --minutes 4 --unlabelled-test
    python benchmarks/quality.py --methods nbseg-sparse --minutes 4 --set semi_supervised=feature_teacher
    python benchmarks/quality.py --methods nbseg,forest --minutes 4 --labelled-slices 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, machine_line, print_table
from real_data import SPLITS, dice_per_class, load, scribbles

#: synthetic cases made by nbseg.datasets (no shared data needed)
SYNTHETIC = ("rare",)


def load_synthetic(name: str, sparse: float | None = None, seed: int = 0):
    """``rare``: the multiphase sample with no dense grains, so the dense phase is only small
    inclusions (0.5 % of the voxels); 12 x 256², slices 0-7 fully labelled for training,
    8-11 for the test."""
    import xarray as xr

    import nbseg

    ds = nbseg.datasets.multiphase(shape=(12, 256, 256), seed=0, dense_grains=0.0)
    image, truth = ds.image.values, ds.truth.values.astype(np.int16)
    classes = list(ds.attrs.get("class_names", ["pore", "matrix", "grain", "dense"]))
    dims = ("z", "y", "x")
    train_lab = truth[:8].copy()
    if sparse:
        train_lab = scribbles(train_lab, sparse, seed)
    train_lab = nbseg.multi_roi(xr.DataArray(train_lab, dims=dims), classes)
    return (
        xr.DataArray(image[:8], dims=dims, name=name),
        train_lab,
        xr.DataArray(image[8:], dims=dims),
        truth[8:],
        classes,
    )


ALL_METHODS = "otsu,kmeans,forest,plain,nbseg,nbseg-2.5D,nbseg-sparse,forest-sparse"
SIGMAS = (0.7, 1.6, 3.5, 5.0)


def score(name: str, pred: np.ndarray, truth: np.ndarray, k: int) -> tuple[float, list[float]]:
    d = dice_per_class(pred, truth, k)
    return (d[1] if name == "isbi2012" else float(np.mean(d))), d


# -- classical baselines -------------------------------------------------------------------
def _cluster_to_class(cluster_means: np.ndarray, class_means: np.ndarray) -> np.ndarray:
    """Map clusters to classes by intensity rank (both sorted dark → bright)."""
    order_c = np.argsort(cluster_means)
    order_k = np.argsort(class_means)
    lut = np.zeros(len(cluster_means), dtype=np.int64)
    lut[order_c] = order_k
    return lut


def class_means(img: np.ndarray, lab: np.ndarray, k: int) -> np.ndarray:
    return np.array([img[lab == c].mean() if (lab == c).any() else np.inf for c in range(k)])


def run_otsu(train_img, train_lab, test_img, k, seed):
    from skimage.filters import threshold_multiotsu

    th = threshold_multiotsu(train_img, classes=k)
    clusters = np.digitize(test_img, th)
    centres = np.array([train_img[np.digitize(train_img, th) == c].mean() for c in range(k)])
    return _cluster_to_class(centres, class_means(train_img, train_lab, k))[clusters]


def run_kmeans(train_img, train_lab, test_img, k, seed):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    sample = rng.choice(train_img.ravel(), 200_000).astype(np.float32)[:, None]
    km = KMeans(k, n_init=4, random_state=seed).fit(sample)
    clusters = km.predict(test_img.reshape(-1, 1).astype(np.float32)).reshape(test_img.shape)
    lut = _cluster_to_class(km.cluster_centers_[:, 0], class_means(train_img, train_lab, k))
    return lut[clusters]


def features(slice2d: np.ndarray) -> np.ndarray:
    """ilastik-style pixel features of one slice: (H, W, F) float32."""
    from scipy import ndimage as ndi
    from skimage.feature import (
        hessian_matrix,
        hessian_matrix_eigvals,
        structure_tensor,
        structure_tensor_eigenvalues,
    )

    x = slice2d.astype(np.float32) / 255.0
    out = [x]
    for s in SIGMAS:
        g = ndi.gaussian_filter(x, s)
        out += [g, ndi.gaussian_laplace(x, s), ndi.gaussian_gradient_magnitude(x, s)]
        out += list(
            hessian_matrix_eigvals(hessian_matrix(x, s, order="rc", use_gaussian_derivatives=False))
        )
        out += list(structure_tensor_eigenvalues(structure_tensor(x, s, order="rc")))
        out.append(g - ndi.gaussian_filter(x, 1.6 * s))
    return np.stack(out, axis=-1).astype(np.float32)


def run_forest(train_img, train_lab, test_img, k, seed, samples=200_000, trees=100):
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    per_class = samples // k
    xs, ys = [], []
    labelled = [np.flatnonzero(train_lab == c) for c in range(k)]
    picks = [rng.choice(ix, min(per_class, len(ix)), replace=False) for ix in labelled]
    chosen = np.sort(np.concatenate(picks))
    z_of = chosen // (train_img.shape[1] * train_img.shape[2])
    for z in np.unique(z_of):
        f = features(train_img[z])
        f = f.reshape(-1, f.shape[-1])
        idx = chosen[z_of == z] - z * train_img.shape[1] * train_img.shape[2]
        xs.append(f[idx])
        ys.append(train_lab[z].ravel()[idx])
    rf = RandomForestClassifier(trees, n_jobs=-1, random_state=seed, min_samples_leaf=2)
    rf.fit(np.concatenate(xs), np.concatenate(ys))
    pred = np.empty(test_img.shape, dtype=np.int64)
    for z in range(test_img.shape[0]):
        f = features(test_img[z])
        pred[z] = rf.predict(f.reshape(-1, f.shape[-1])).reshape(test_img.shape[1:])
    return pred


# -- the plain hand-written loop -----------------------------------------------------------
def run_plain(train_img, train_lab, test_img, k, seed, minutes, patch=128, batch=8):
    """What a user writes by hand (see ../shared/baselines.md), for a wall-clock budget."""
    import torch
    import torch.nn.functional as F
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(train_img, [0.5, 99.5])
    img = ((train_img.astype(np.float32) - lo) / (hi - lo)).astype(np.float32)
    lab = train_lab.astype(np.int64)
    net = UNet(2, 1, k, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    z, h, w = img.shape
    # patches from the slices that hold labels (all of them unless --labelled-slices)
    zs = np.flatnonzero((lab >= 0).reshape(z, -1).any(1))
    t_end = time.perf_counter() + minutes * 60
    steps = 0
    net.train()
    while time.perf_counter() < t_end:
        xb, yb = [], []
        for _ in range(batch):
            zz, y0, x0 = rng.choice(zs), rng.integers(h - patch + 1), rng.integers(w - patch + 1)
            xi = img[zz, y0 : y0 + patch, x0 : x0 + patch]
            yi = lab[zz, y0 : y0 + patch, x0 : x0 + patch]
            r = rng.integers(4)
            xi, yi = np.rot90(xi, r), np.rot90(yi, r)
            if rng.random() < 0.5:
                xi, yi = xi[:, ::-1], yi[:, ::-1]
            xb.append(xi.copy())
            yb.append(yi.copy())
        x = torch.from_numpy(np.stack(xb))[:, None]
        y = torch.from_numpy(np.stack(yb))
        logits = net(x)
        keep = y >= 0
        if not keep.any():
            continue
        ce = F.cross_entropy(logits, y, ignore_index=-1)
        p = logits.softmax(1).movedim(1, -1)[keep]
        g = F.one_hot(y[keep], k).float()
        dice = 1 - ((2 * (p * g).sum(0) + 1) / (p.sum(0) + g.sum(0) + 1)).mean()
        loss = ce + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    net.eval()
    test = torch.from_numpy(((test_img.astype(np.float32) - lo) / (hi - lo)).astype(np.float32))
    pred = np.empty(test_img.shape, dtype=np.int64)
    with torch.inference_mode():
        for i in range(test.shape[0]):
            out = sliding_window_inference(
                test[i][None, None], (patch, patch), 8, net, overlap=0.25, mode="gaussian"
            )
            pred[i] = out.argmax(1)[0].numpy()
    return pred, {"steps": steps}


# -- nbseg ---------------------------------------------------------------------------------
def run_nbseg(
    name,
    train_img,
    train_lab,
    test_img,
    classes,
    minutes,
    dim,
    seed,
    overrides,
    model_params,
    save_dir=None,
    architecture="unet",
    validation=0.2,
    window=None,
    unlabelled=None,
):
    import nbseg

    spec = nbseg.ModelSpec(
        architecture=architecture,
        class_count=len(classes),
        input_dimension=dim,
        name=name,
        parameters=model_params,
    )
    model = nbseg.generate_model(spec, class_names=classes)
    params = nbseg.TrainingParams(epochs=100_000, max_minutes=minutes, seed=seed)
    for key, value in overrides.items():
        if key.startswith("aug."):
            setattr(params.augmentation, key[4:], value)
        else:
            setattr(params, key, value)
    result = nbseg.train(
        model,
        nbseg.TrainingSet(train_img, train_lab),
        params,
        validation=validation,
        unlabelled=unlabelled,
    )
    pred = nbseg.segment(model, test_img, window=window).values
    t0 = time.perf_counter()
    pred_tta = nbseg.segment(model, test_img, tta=True, window=window).values
    info = {"epochs": len(result.history), "best": result.best_epoch}
    choice = result.extra.get("teacher") or {}
    if choice:  # the feature teacher ran: was it kept for the prediction (teacher_blend)?
        info["teacher kept"] = (
            f"{'yes' if choice['kept'] else 'no'} (val Dice {choice['val_dice_network']:.3f} "
            f"alone, {choice['val_dice_blend']:.3f} blended)"
        )
    tta_info = {**info, "tta predict s": round(time.perf_counter() - t0, 1)}
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        model.save(Path(save_dir) / f"{name}-{dim}.nbseg")
    return pred, info, pred_tta, tta_info, result


def print_curve(name: str, history: list[dict], best_epoch: int | None, every: int) -> None:
    """Every ``every``-th epoch of a run, the best (by the run's monitor) and the last."""
    key = "val_dice_membrane" if name == "isbi2012" else "val_dice"
    keep = [
        r
        for i, r in enumerate(history)
        if (i + 1) % every == 0 or r["epoch"] == best_epoch or i == len(history) - 1
    ]
    rows = [
        {
            "epoch": r["epoch"],
            "minutes": f"{r['time'] / 60:.1f}",
            "lr": f"{r['lr']:.1e}",
            "loss": f"{r['loss']:.4f}",
            "val_loss": f"{r.get('val_loss', float('nan')):.4f}",
            key: f"{r.get(key, float('nan')):.4f}",
            "note": "best, kept" if r["epoch"] == best_epoch else "",
        }
        for r in keep
    ]
    print()
    print_table(rows)
    print()


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="isbi2012,sandstone")
    ap.add_argument("--methods", default=ALL_METHODS)
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per deep method")
    ap.add_argument("--sparse", type=float, default=0.1, help="label fraction of *-sparse")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--labelled-slices",
        type=int,
        default=0,
        help="keep the labels of only N evenly spaced training slices (the others stay in the "
        "training images, unlabelled); 0 = all",
    )
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        help="TrainingParams overrides for nbseg, e.g. patch_size=128",
    )
    ap.add_argument(
        "--model",
        nargs="*",
        default=[],
        help="U-Net parameter overrides for nbseg, e.g. filters=8",
    )
    ap.add_argument("--arch", default="unet", help="nbseg architecture (registry name)")
    ap.add_argument(
        "--validation",
        type=float,
        default=0.2,
        help="nbseg's validation fraction (0 = train on every labelled slice, keep the last epoch)",
    )
    ap.add_argument(
        "--window", type=int, help="nbseg's inference window (default: the training patch size)"
    )
    ap.add_argument(
        "--curve",
        type=int,
        metavar="N",
        help="after each nbseg run print every N-th epoch (loss, val_loss, validation Dice)",
    )
    ap.add_argument(
        "--unlabelled-test",
        action="store_true",
        help="nbseg rows also get the test volume as unlabelled= (transductive: its labels "
        "are never read; with semi_supervised='auto' this turns pseudo-labels on)",
    )
    ap.add_argument("--save", help="save each trained nbseg model into this folder")
    ap.add_argument("--json", help="append the rows to this JSON-lines file")
    args = ap.parse_args(argv)
    if not DATA.exists() and not set(args.datasets.split(",")) <= set(SYNTHETIC):
        print(f"no shared data at {DATA}; nothing to do (--datasets rare needs none)")
        return 0
    import torch

    print(machine_line())
    print(
        f"# budget {args.minutes} min per deep method; overrides {args.set or 'none'}; "
        f"architecture {args.arch}, parameters {args.model or 'defaults'}; validation "
        f"{args.validation}, window {args.window or 'patch size'}; unlabelled "
        f"{'the test volume' if args.unlabelled_test else 'none'}; labelled training slices "
        f"{args.labelled_slices or 'all'}"
    )
    overrides = parse_overrides(args.set)
    rows = []
    for name in args.datasets.split(","):
        if name not in SPLITS and name not in SYNTHETIC:
            raise SystemExit(f"unknown dataset {name!r}; choose from {[*SPLITS, *SYNTHETIC]}")
        for method in args.methods.split(","):
            sparse = args.sparse if method.endswith("-sparse") else None
            loader = load_synthetic if name in SYNTHETIC else load
            tr_img, tr_lab, te_img, truth, classes = loader(name, sparse, args.seed)
            if args.labelled_slices:  # only N evenly spaced training slices keep labels
                n = tr_lab.shape[0]
                keep = np.unique(np.linspace(0, n - 1, args.labelled_slices).round().astype(int))
                tr_lab = tr_lab.copy()
                tr_lab.values[np.setdiff1d(np.arange(n), keep)] = -1
            x, lab, test = tr_img.values, tr_lab.values.astype(np.int64), te_img.values
            k = len(classes)
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            info: dict = {}
            extra = None  # a second row from the same training (nbseg with tta)
            base = method.removesuffix("-sparse")
            if base == "otsu":
                pred = run_otsu(x, lab, test, k, args.seed)
            elif base == "kmeans":
                pred = run_kmeans(x, lab, test, k, args.seed)
            elif base == "forest":
                pred = run_forest(x, lab, test, k, args.seed)
            elif base == "plain":
                pred, info = run_plain(x, lab, test, k, args.seed, args.minutes)
            elif base in ("nbseg", "nbseg-2.5D"):
                dim = "2.5D" if base == "nbseg-2.5D" else "2D"
                pred, info, pred_tta, tta_info, result = run_nbseg(
                    name,
                    tr_img,
                    tr_lab,
                    te_img,
                    classes,
                    args.minutes,
                    dim,
                    args.seed,
                    overrides,
                    parse_overrides(args.model),
                    args.save,
                    args.arch,
                    args.validation,
                    args.window,
                    [te_img] if args.unlabelled_test else None,
                )
                extra = (pred_tta, tta_info)
                if args.curve:
                    print_curve(name, result.history, result.best_epoch, args.curve)
            else:
                raise SystemExit(f"unknown method {method!r}")
            seconds = round(time.perf_counter() - t0, 1)
            results = [(method, pred, info)]
            if extra is not None:
                results.append((f"{method}+tta", *extra))
            for label, p, notes in results:
                s, d = score(name, p, truth, k)
                row = {
                    "dataset": name,
                    "method": label,
                    "score": round(s, 4),
                    "dice per class": " / ".join(f"{v:.3f}" for v in d),
                    "seconds": seconds,
                    "notes": ", ".join(f"{a} {b}" for a, b in notes.items()),
                }
                rows.append(row)
                print(f"# {json.dumps(row)}", flush=True)
                if args.json:
                    with open(args.json, "a") as fh:
                        record = {
                            **row,
                            "minutes": args.minutes,
                            "set": args.set,
                            "model": args.model,
                            "arch": args.arch,
                        }
                        fh.write(json.dumps(record) + "\n")
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
