"""Guided labelling: does labelling the slices `nbseg.suggest_slices` picks pay off?

A simulated user on fully labelled data (issue 18, "Measured"). Each dataset is split into a
**pool** of slices the user may label and a **test** part that is never labelled:

- ``isbi2012``: pool = slices 0-19, centre-cropped to ``--crop`` (256²) so that one slice
  holds a few patches, not 16; test = slices 20-29, whole (512²); score = membrane Dice.
- ``sandstone``: only 6 training slices (0-5), so each is cut into tiles of about
  ``--crop``² (4 x 4 tiles of 256 x 249) and the 96 tiles are the pool "slices" (a tile =
  what the user paints at a time); test = slices 6-8, whole; score = mean Dice of 4 phases.
- ``multiphase`` (``nbseg.datasets``, every voxel labelled): a 32 x 256 x 256 volume (seed
  0); pool = z 0-23, test = z 24-31; score = mean Dice of 4 classes. ``fibres`` and
  ``membranes`` work the same way (pool = the first 3/4 of z).
- ``lamina`` (``nbseg.datasets.multiphase(dense_grains=0, dense_layer=...)``): the dense
  class only in a thin layer of a 192 x 256² pool, at a place the start slices miss (drawn
  with ``--seed``); test = another volume with the layer; score = mean Dice of 4
  classes. What labelling is for in practice: a phase, a tissue or a defect confined to a
  few slices, where evenly spaced slices find it only by chance.

The user starts with ``--start`` (2) labelled slices, evenly spaced and the same for every
arm, and adds ``--per-round`` (2) slices per round for ``--rounds`` (3) rounds (2, 4, 6, 8
slices). Three arms choose the slices to add:

- ``guided``: ``nbseg.suggest_slices(model, pool, labels)`` with the model trained in the
  previous round and the labels painted so far (its defaults otherwise);
- ``even``: evenly spaced: the slices farthest from every labelled slice and from the pool's
  ends (the middles of the largest gaps), as a user filling the gaps would;
- ``random``: uniformly among the unlabelled slices (``numpy`` generator seeded ``--seed``).

Every round trains a **fresh** default 2D U-Net (``generate_model(spec, seed=--seed)``) with
default ``TrainingParams`` except the budget and ``seed=--seed`` (validation 0.2, the
default). The budget is ``--steps`` (150) optimizer steps: the epochs are set to
``ceil(steps / steps per epoch)`` for the labels of that training, so every arm gets the same
compute at a round whatever else runs on the machine (the cosine schedule follows the epochs).
``--max-minutes`` gives a wall-clock budget instead (fairer in time, but at the mercy of the
machine's load) and ``--epochs`` a fixed number of epochs. The **reference** trains once on
every pool slice with the same budget. Reported: the test score per round and arm, and how many labelled slices each arm
needs to reach 95 % of the reference score (``> 8`` when never). **Goal: guided needs at most
60 % of the slices the even arm needs, and never scores below it at any round.**

Calibration of the uncertainty (``segment(..., return_uncertainty=True)``, entropy) on the
test part: voxel accuracy and score of the voxels above vs at-or-below the median uncertainty,
and the share of the errors in the upper half (50 % = the map says nothing).

Needs ``../shared/data`` for isbi2012 and sandstone (skipped with a message when absent).

    python benchmarks/guided_labelling.py --quick                       # smoke run, seconds
    python benchmarks/guided_labelling.py                               # all four datasets
    python benchmarks/guided_labelling.py --max-minutes 1               # wall-clock budget
    python benchmarks/guided_labelling.py --datasets multiphase --rounds 3 --per-round 2
    python benchmarks/guided_labelling.py --datasets lamina --seed 1
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, machine_line, print_table

import nbseg

DIMS = ("z", "y", "x")
ARMS = ("guided", "even", "random")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
SAMPLES = ("multiphase", "fibres", "membranes")


@dataclass
class Case:
    name: str
    pool: np.ndarray  # (n, y, x) the slices the user may label
    pool_truth: np.ndarray
    test: np.ndarray  # never labelled
    test_truth: np.ndarray
    classes: list[str]
    membrane: bool  # score = Dice of class 1 (isbi2012), else the mean Dice
    split: str


# -- data ------------------------------------------------------------------------------------
def _centre(a: np.ndarray, size: int) -> np.ndarray:
    if not size:
        return a
    y0 = max(0, (a.shape[1] - size) // 2)
    x0 = max(0, (a.shape[2] - size) // 2)
    return a[:, y0 : y0 + size, x0 : x0 + size]


def _tiles(a: np.ndarray, size: int) -> np.ndarray:
    """Cut every slice into a grid of about ``size``² tiles, stacked slice by slice."""
    ny, nx = a.shape[1:]
    ry, rx = max(1, round(ny / size)), max(1, round(nx / size))
    ty, tx = ny // ry, nx // rx
    return np.stack(
        [
            a[z, i * ty : (i + 1) * ty, j * tx : (j + 1) * tx]
            for z in range(a.shape[0])
            for i in range(ry)
            for j in range(rx)
        ]
    )


def load_case(name: str, args: argparse.Namespace) -> Case | None:
    if name in ("isbi2012", "sandstone"):
        import tifffile

        folder = DATA / name
        if not (folder / f"{name}_image.tif").exists():
            print(f"# {name}: skipped, no shared data at {folder.resolve()}", flush=True)
            return None
        image = tifffile.imread(folder / f"{name}_image.tif")
        truth = tifffile.imread(folder / f"{name}_labels.tif").astype(np.int16)
        if name == "isbi2012":
            n_pool, classes = 20, ["interior", "membrane"]
            pool, pool_truth = (
                _centre(image[:n_pool], args.crop),
                _centre(truth[:n_pool], args.crop),
            )
            test, test_truth = image[n_pool:], truth[n_pool:]
            if args.quick:
                pool, pool_truth = pool[:8, :128, :128], pool_truth[:8, :128, :128]
                test, test_truth = test[:2, :128, :128], test_truth[:2, :128, :128]
            split = (
                f"pool slices 0-{pool.shape[0] - 1} (centre {pool.shape[1]}x{pool.shape[2]}), test "
                f"{test.shape[0]} slices {test.shape[1]}x{test.shape[2]}"
            )
            return Case(name, pool, pool_truth, test, test_truth, classes, True, split)
        n_pool, classes = 6, ["pore", "phase 1", "phase 2", "dense"]
        pool, pool_truth = image[:n_pool], truth[:n_pool]
        test, test_truth = image[n_pool:], truth[n_pool:]
        if args.quick:
            pool, pool_truth = pool[:2, :256, :256], pool_truth[:2, :256, :256]
            test, test_truth = test[:1, :128, :128], test_truth[:1, :128, :128]
        pool, pool_truth = _tiles(pool, args.crop), _tiles(pool_truth, args.crop)
        split = (
            f"pool = slices 0-{n_pool - 1} cut into {pool.shape[0]} tiles of "
            f"{pool.shape[1]}x{pool.shape[2]}, test {test.shape[0]} slices "
            f"{test.shape[1]}x{test.shape[2]}"
        )
        return Case(name, pool, pool_truth, test, test_truth, classes, False, split)
    if name in SAMPLES:
        shape = (12, 128, 128) if args.quick else (32, args.crop or 256, args.crop or 256)
        ds = nbseg.datasets.load(name, shape=shape, seed=0)
        image, truth = ds["image"].values, ds["truth"].values.astype(np.int16)
        classes = list(ds["truth"].attrs["class_names"])
        n_pool = shape[0] * 3 // 4
        split = (
            f"nbseg.datasets.{name}{shape} seed 0: pool z 0-{n_pool - 1}, test z "
            f"{n_pool}-{shape[0] - 1}"
        )
        return Case(
            name,
            image[:n_pool],
            truth[:n_pool],
            image[n_pool:],
            truth[n_pool:],
            classes,
            name == "membranes",
            split,
        )
    if name == "lamina":
        return lamina_case(args)
    raise SystemExit(
        f"unknown dataset {name!r}; choose from isbi2012, sandstone, lamina, {SAMPLES}"
    )


def lamina_case(args: argparse.Namespace) -> Case:
    """A dense-mineral layer 3 slices thick (its inclusions reach 3 slices below it and 4 above) in a
    ``nbseg.datasets.multiphase(dense_grains=0)`` pool of 192 x 256² (a tall volume of
    which a user labels a handful of slices); it lies where no start slice crosses it (a
    start that does makes every arm equal and shows nothing about the choice), drawn with
    ``--seed``. Test: another volume (seed + 1000) of 16 slices with the layer in its
    middle."""
    n = 12 if args.quick else 192
    side = 64 if args.quick else 256
    start = even_start(n, args.start)
    free = [a for a in range(3, n - 6) if all(not a - 4 <= z < a + 7 for z in start)]
    a = int(np.random.default_rng([args.seed, 18]).choice(free)) if free else n // 2
    pool = nbseg.datasets.multiphase(
        shape=(n, side, side), seed=args.seed, dense_grains=0, dense_layer=(a, a + 3)
    )
    nt = 8 if args.quick else 16
    test = nbseg.datasets.multiphase(
        shape=(nt, side, side),
        seed=args.seed + 1000,
        dense_grains=0,
        dense_layer=(nt // 2 - 2, nt // 2 + 1),
    )
    split = (
        f"pool nbseg.datasets.multiphase({n}, {side}, {side}; seed {args.seed}, dense_grains=0, "
        f"dense_layer=({a}, {a + 3})), test the same with seed {args.seed + 1000}, {nt} slices, "
        f"layer ({nt // 2 - 2}, {nt // 2 + 1})"
    )
    return Case(
        "lamina",
        pool["image"].values,
        pool["truth"].values.astype(np.int16),
        test["image"].values,
        test["truth"].values.astype(np.int16),
        list(pool["truth"].attrs["class_names"]),
        False,
        split,
    )


# -- scores ----------------------------------------------------------------------------------
def dice_per_class(pred: np.ndarray, truth: np.ndarray, k: int) -> list[float]:
    out = []
    for c in range(k):
        p, t = pred == c, truth == c
        denom = p.sum() + t.sum()
        out.append(float(2 * (p & t).sum() / denom) if denom else float("nan"))
    return out


def score(case: Case, pred: np.ndarray, truth: np.ndarray) -> float:
    d = dice_per_class(pred, truth, len(case.classes))
    return d[1] if case.membrane else float(np.nanmean(d))


def calibration(case: Case, pred: np.ndarray, u: np.ndarray) -> dict:
    """Accuracy and score above vs at-or-below the median uncertainty on the test part."""
    truth = case.test_truth
    med = float(np.median(u))
    high = u > med
    wrong = pred != truth
    return {
        "median u": med,
        "share above": float(high.mean()),
        "acc above": float((~wrong[high]).mean()) if high.any() else float("nan"),
        "acc below": float((~wrong[~high]).mean()),
        "score above": score(case, pred[high], truth[high]) if high.any() else float("nan"),
        "score below": score(case, pred[~high], truth[~high]),
        "errors above": float(wrong[high].sum() / max(1, wrong.sum())),
    }


# -- the simulated user ----------------------------------------------------------------------
def even_start(n: int, count: int) -> list[int]:
    """``count`` evenly spaced slices of ``n``: the centres of ``count`` equal bins."""
    return sorted({min(n - 1, int((2 * i + 1) * n / (2 * count))) for i in range(count)})


def even_next(n: int, labelled: list[int], count: int) -> list[int]:
    """The middles of the largest gaps: farthest from every labelled slice and the ends."""
    have = list(labelled)
    out: list[int] = []
    for _ in range(count):
        free = [i for i in range(n) if i not in have]
        if not free:
            break
        dist = [min([i + 1, n - i] + [abs(i - j) for j in have]) for i in free]
        best = free[int(np.argmax(dist))]
        have.append(best)
        out.append(best)
    return out


def labels_of(case: Case, labelled: list[int]) -> xr.DataArray:
    lab = np.full(case.pool.shape, nbseg.UNLABELLED, np.int16)
    lab[labelled] = case.pool_truth[labelled]
    return nbseg.multi_roi(xr.DataArray(lab, dims=DIMS), case.classes)


#: With a step budget, an epoch-wise cosine schedule needs a few epochs to anneal: when the
#: budget makes fewer, the augmentation factor drops to 1 (the same patches and augmentation,
#: shorter epochs). In practice this only concerns the all-slices references.
MIN_EPOCHS = 8


def config_key(args: argparse.Namespace) -> tuple:
    budget = (args.max_minutes, args.epochs, args.steps if not args.max_minutes else None)
    return (args.seed, budget, args.crop, bool(args.quick))


def train_and_test(
    case: Case,
    labelled: list[int],
    args: argparse.Namespace,
    cache: dict | None = None,
    need_model: bool = False,
) -> dict:
    """Train a fresh model on ``labelled``, score it on the test part. A training already in
    ``cache`` (``--reuse``: same data, labels, seed and planned epochs) is not repeated unless
    its model is needed."""
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=len(case.classes), input_dimension="2D", name=case.name
    )
    model = nbseg.generate_model(spec, class_names=case.classes, seed=args.seed)
    params = nbseg.TrainingParams(seed=args.seed)
    if args.quick:
        params.patch_size = 64
    tset = nbseg.TrainingSet(xr.DataArray(case.pool, dims=DIMS), labels_of(case, labelled))
    if args.max_minutes:
        params.epochs, params.max_minutes = args.epochs or 100_000, args.max_minutes
    elif args.epochs:
        params.epochs = args.epochs
    else:
        params.epochs = math.ceil(args.steps / steps_per_epoch(model, tset, params))
        if params.epochs < MIN_EPOCHS and params.augmentation.factor > 1:
            params.augmentation.factor = 1
            params.epochs = math.ceil(args.steps / steps_per_epoch(model, tset, params))
    key = (case.name, tuple(sorted(labelled)), config_key(args), params.epochs)
    key += (params.augmentation.factor,)
    if cache is not None and key in cache and not args.max_minutes and not need_model:
        return {**cache[key], "model": None, "labels": tset.output, "key": key, "reused": True}
    t0 = time.perf_counter()
    result = nbseg.train(model, tset, params, feedback=False)
    train_s = time.perf_counter() - t0
    pred, u = nbseg.segment(model, xr.DataArray(case.test, dims=DIMS), return_uncertainty=True)
    pred, u = pred.values, u.values
    return {
        "model": model,
        "labels": tset.output,
        "score": score(case, pred, case.test_truth),
        "calibration": calibration(case, pred, u),
        "epochs": len(result.history),
        "train s": round(train_s, 1),
        "key": key,
    }


def load_cache(path: str | None) -> tuple[dict, dict]:
    """Trainings recorded by ``--json`` (by key) and the guided arm's picks (by dataset)."""
    done: dict = {}
    guided: dict = {}
    if not path or not Path(path).exists():
        return done, guided
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if "key" not in r:
            continue
        name, labelled, config, epochs, factor = r["key"]
        seed, budget, crop, quick = config
        config = (seed, tuple(budget), crop, quick)
        key = (name, tuple(labelled), config, epochs, factor)
        done[key] = {
            "score": r["score"],
            "calibration": r["calibration"],
            "epochs": r["epochs"],
            "train s": r["train_s"],
        }
        if r["arm"] in ("guided", "start"):
            guided.setdefault((name, config), []).append(list(r["labelled"]))
    return done, guided


def steps_per_epoch(model: nbseg.Model, tset: nbseg.TrainingSet, params) -> int:
    """Optimizer steps per epoch of this training (what nbseg.train would plan)."""
    from nbseg.training.run import prepare

    plan = prepare(model, tset, params, feedback=False)
    try:
        return max(1, int(plan.module.steps_per_epoch))
    finally:
        shutil.rmtree(plan.record_dir, ignore_errors=True)


def replayed(recorded: list[list[int]], have: list[int], args: argparse.Namespace):
    """The guided picks that followed ``have`` in a recorded run (None when not recorded)."""
    for labelled in recorded:
        if len(labelled) == len(have) + args.per_round and labelled[: len(have)] == have:
            return labelled[len(have) :]
    return None


def slices_needed(scores: list[float], counts: list[int], target: float) -> str:
    for n, s in zip(counts, scores):
        if s >= target:
            return str(n)
    return f"> {counts[-1]}"


def as_number(needed: str, counts: list[int], step: int) -> int:
    return counts[-1] + step if needed.startswith(">") else int(needed)


def run_case(
    case: Case, args: argparse.Namespace, log, cache: tuple[dict, dict] = ({}, {})
) -> tuple[list[dict], list[dict], str]:
    n = case.pool.shape[0]
    counts = [args.start + r * args.per_round for r in range(args.rounds + 1)]
    if counts[-1] > n:
        raise SystemExit(f"{case.name}: {counts[-1]} slices asked, the pool has {n}")
    print(f"# {case.name}: {case.split}", flush=True)
    start = even_start(n, args.start)
    done, guided_picks = cache
    first = train_and_test(case, start, args, done)
    log(case, "start", start, first)
    runs = {arm: [first] for arm in ARMS}
    picked = {arm: list(start) for arm in ARMS}
    rng = np.random.default_rng(args.seed)
    for _ in range(args.rounds):
        for arm in ARMS:
            prev = runs[arm][-1]
            have = picked[arm]
            if arm == "guided":
                new = replayed(guided_picks.get((case.name, config_key(args)), []), have, args)
                if new is None:
                    if prev["model"] is None:  # reused: train it again for its suggestions
                        prev = train_and_test(case, have, args, need_model=True)
                    image = xr.DataArray(case.pool, dims=DIMS)
                    new = nbseg.suggest_slices(prev["model"], image, prev["labels"], args.per_round)
            elif arm == "even":
                new = even_next(n, have, args.per_round)
            else:
                free = [i for i in range(n) if i not in have]
                new = [int(i) for i in rng.choice(free, args.per_round, replace=False)]
            picked[arm] = have + [int(i) for i in new]
            runs[arm].append(train_and_test(case, picked[arm], args, done))
            log(case, arm, picked[arm], runs[arm][-1])
        for arm in ARMS:  # only the latest model of each arm is needed
            for r in runs[arm][:-1]:
                r["model"] = r["labels"] = None
    ref = train_and_test(case, list(range(n)), args, done)
    log(case, "reference", list(range(n)), ref)
    target = 0.95 * ref["score"]
    rows, cal_rows = [], []
    needed = {}
    for arm in ARMS:
        scores = [r["score"] for r in runs[arm]]
        needed[arm] = slices_needed(scores, counts, target)
        row = {"dataset": case.name, "arm": arm}
        row.update({f"{c} slices": round(s, 4) for c, s in zip(counts, scores)})
        row["to 95 % of ref"] = needed[arm]
        row["slices added"] = " ".join(map(str, picked[arm][args.start :]))
        rows.append(row)
    ref_row = {"dataset": case.name, "arm": f"all {n} slices (reference)"}
    ref_row.update({f"{c} slices": "" for c in counts})
    ref_row["to 95 % of ref"] = f"{ref['score']:.4f} → target {target:.4f}"
    ref_row["slices added"] = f"start {' '.join(map(str, start))}"
    rows.append(ref_row)
    for label, r in [
        (f"start ({counts[0]})", first),
        *[(f"{arm} ({counts[-1]})", runs[arm][-1]) for arm in ARMS],
        (f"reference ({n})", ref),
    ]:
        c = r["calibration"]
        cal_rows.append(
            {
                "dataset": case.name,
                "model": label,
                "score": round(r["score"], 4),
                "median u": round(c["median u"], 4),
                "acc above / below": f"{c['acc above']:.4f} / {c['acc below']:.4f}",
                "score above / below": f"{c['score above']:.4f} / {c['score below']:.4f}",
                "errors above median": f"{100 * c['errors above']:.1f} %",
            }
        )
    g, e = runs["guided"], runs["even"]
    deltas = [a["score"] - b["score"] for a, b in zip(g[1:], e[1:])]
    ng = as_number(needed["guided"], counts, args.per_round)
    ne = as_number(needed["even"], counts, args.per_round)
    ratio_ok = ng <= 0.6 * ne
    never_worse = all(d >= 0 for d in deltas)
    verdict = (
        f"{case.name}: guided needs {needed['guided']} slices, even {needed['even']}, random "
        f"{needed['random']} (target {target:.4f} = 95 % of {ref['score']:.4f}); guided − even "
        f"per round {', '.join(f'{d:+.4f}' for d in deltas)}; goal "
        f"{'met' if ratio_ok and never_worse else 'not met'} (≤ 60 % of the slices: "
        f"{'yes' if ratio_ok else 'no'}, never worse: {'yes' if never_worse else 'no'})"
    )
    return rows, cal_rows, verdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="isbi2012,sandstone,multiphase,lamina")
    ap.add_argument("--start", type=int, default=2, help="labelled slices to start with")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of added slices")
    ap.add_argument("--per-round", type=int, default=2, help="slices added per round")
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps of every training")
    ap.add_argument(
        "--max-minutes", type=float, default=0, help="wall-clock budget instead (0 = use steps)"
    )
    ap.add_argument(
        "--epochs", type=int, default=0, help="fixed epochs instead (with --max-minutes: a cap)"
    )
    ap.add_argument("--crop", type=int, default=256, help="pool slice / tile side (0 = whole)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and budgets: a smoke run")
    ap.add_argument("--json", help="append one line per training to this JSON-lines file")
    ap.add_argument(
        "--reuse",
        metavar="JSONL",
        help="take the trainings already recorded there (--json of an earlier run, same data, "
        "labels, seed and budget) instead of training again; guided picks are replayed",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 4)
        args.max_minutes = min(args.max_minutes, 0.05)
        args.rounds = min(args.rounds, 1)
        args.crop = 128 if args.crop else 0
    if args.max_minutes:
        budget = f"max_minutes {args.max_minutes}, epochs {args.epochs or 'unlimited'}"
    elif args.epochs:
        budget = f"{args.epochs} epochs"
    else:
        budget = f"{args.steps} optimizer steps (epochs = ceil({args.steps} / steps per epoch))"
    t_all = time.perf_counter()
    print(machine_line())
    print(
        f"# budget per training: {budget}, seed {args.seed}, validation 0.2, default 2D U-Net and "
        f"TrainingParams otherwise{' (quick: patch 64)' if args.quick else ''}; start "
        f"{args.start} slices, +{args.per_round} x {args.rounds} rounds",
        flush=True,
    )

    def log(case: Case, arm: str, labelled: list[int], r: dict) -> None:
        print(
            f"#   {arm:9} {len(labelled):3d} slices  score {r['score']:.4f}  epochs "
            f"{r['epochs']:4d}  train {r['train s']:6.1f} s  "
            f"[{time.perf_counter() - t_all:7.0f} s]{'  (reused)' if r.get('reused') else ''}",
            flush=True,
        )
        if args.json and not r.get("reused"):
            record = {
                "dataset": case.name,
                "arm": arm,
                "labelled": labelled,
                "score": r["score"],
                "epochs": r["epochs"],
                "train_s": r["train s"],
                "calibration": r["calibration"],
                "max_minutes": args.max_minutes,
                "seed": args.seed,
                "key": r["key"],
            }
            with open(args.json, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    cache = load_cache(args.reuse)
    rows, cal_rows, verdicts = [], [], []
    for name in args.datasets.split(","):
        case = load_case(name.strip(), args)
        if case is None:
            continue
        r, c, v = run_case(case, args, log, cache)
        rows += r
        cal_rows += c
        verdicts.append(v)
        print(f"# {v}", flush=True)
    print()
    print_table(rows)
    print()
    print_table(cal_rows)
    print()
    for v in verdicts:
        print(f"- {v}")
    print(f"\n# total {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
