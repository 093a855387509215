"""Patch geometry, enumeration, the validation split and patch extraction.

A patch is a box ``(z0, y0, x0, dz, dy, dx)`` in a prepared training volume. 2D and 2.5D
models use boxes one slice thick (2.5D reads ``slices`` neighbouring slices around it as
channels); 3D models use ``(pz, py, px)`` boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..models.spec import ModelSpec
from .multiroi import UNLABELLED
from .trainingset import Normalisation, TrainingSet, volume_of


def patch_shape(spec: ModelSpec, patch_size: int | Sequence[int]) -> tuple[int, int, int]:
    """Patch extent as ``(z, y, x)`` for a model: ``(1, P, P)`` in 2D/2.5D, ``(P, P, P)`` in 3D."""
    size: tuple[int, ...]
    if isinstance(patch_size, int):
        size = (patch_size, patch_size, patch_size)
    else:
        size = tuple(int(s) for s in patch_size)
    if spec.input_dimension == "3D":
        if len(size) == 2:
            raise InputError(f"A 3D model needs a 3D patch size (z, y, x), got {patch_size}.")
        return size[-3], size[-2], size[-1]
    return 1, size[-2], size[-1]


@dataclass
class PreparedSet:
    """A training set as normalised float32 ``(C, z, y, x)`` + int16 labels ``(z, y, x)``."""

    image: np.ndarray
    labels: np.ndarray
    name: str

    @classmethod
    def from_training_set(cls, ts: TrainingSet, norm: Normalisation) -> PreparedSet:
        image = np.stack([norm.apply(volume_of(da), i) for i, da in enumerate(ts.input_list)])
        return cls(image=image, labels=ts.labels_volume(), name=ts.name)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.labels.shape


def _starts(length: int, size: int, step: int, flush: bool = True) -> np.ndarray:
    if length <= size:
        return np.array([0])
    s = list(range(0, length - size + 1, step))
    if flush and s[-1] != length - size:
        s.append(length - size)
    return np.array(s)


def check_patch_fits(ps: PreparedSet, pshape: tuple[int, int, int]) -> None:
    for axis, (n, p) in enumerate(zip(ps.shape, pshape)):
        if p > n:
            raise InputError(
                f"{ps.name}: patch size {pshape[1:] if pshape[0] == 1 else pshape} (z, y, x) is "
                f"larger than the volume {ps.shape} along {'zyx'[axis]}; choose patch_size <= "
                f"{min(ps.shape[1:]) if axis else ps.shape[0]}."
            )


def grid_boxes(
    ps: PreparedSet,
    pshape: tuple[int, int, int],
    stride_ratio: float,
    full_labels_only: bool = False,
    flush: bool = True,
) -> np.ndarray:
    """Boxes ``(z0, y0, x0)`` on a grid (step = patch × stride ratio) holding labelled voxels.

    With ``flush`` a last box is added flush with each border (it may overlap its neighbour).
    """
    check_patch_fits(ps, pshape)
    pz, py, px = pshape
    labelled = ps.labels != UNLABELLED
    steps = [max(1, round(p * stride_ratio)) for p in pshape]
    zs = _starts(ps.shape[0], pz, steps[0], flush)
    if pz == 1:
        zs = np.flatnonzero(labelled.any(axis=(1, 2)))
    ys = _starts(ps.shape[1], py, steps[1], flush)
    xs = _starts(ps.shape[2], px, steps[2], flush)
    # integral image of the labelled indicator, to count labelled voxels per box at once
    cs = np.zeros(tuple(s + 1 for s in labelled.shape), dtype=np.int64)
    cs[1:, 1:, 1:] = labelled.cumsum(0).cumsum(1).cumsum(2)
    z0, y0, x0 = np.meshgrid(zs, ys, xs, indexing="ij")
    z0, y0, x0 = z0.ravel(), y0.ravel(), x0.ravel()
    z1, y1, x1 = z0 + pz, y0 + py, x0 + px
    count = (
        cs[z1, y1, x1]
        - cs[z0, y1, x1]
        - cs[z1, y0, x1]
        - cs[z1, y1, x0]
        + cs[z0, y0, x1]
        + cs[z0, y1, x0]
        + cs[z1, y0, x0]
        - cs[z0, y0, x0]
    )
    keep = count == pz * py * px if full_labels_only else count > 0
    return np.stack([z0[keep], y0[keep], x0[keep]], axis=1).astype(np.int64)


def overlaps(boxes: np.ndarray, others: np.ndarray, pshape: tuple[int, int, int]) -> np.ndarray:
    """For each box, whether it intersects any of ``others`` (same patch shape)."""
    if len(others) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes), dtype=bool)
    p = np.asarray(pshape)
    d = np.abs(boxes[:, None, :] - others[None, :, :])
    return np.any(np.all(d < p, axis=2), axis=1)


@dataclass
class PatchPlan:
    """Train and validation boxes per training set (index into the prepared sets)."""

    train: list[np.ndarray]
    val: list[np.ndarray]
    val_sets: list[PreparedSet] | None = None  # separate ground-truth sets

    @property
    def train_count(self) -> int:
        return int(sum(len(b) for b in self.train))

    @property
    def val_count(self) -> int:
        return int(sum(len(b) for b in self.val))


def plan_patches(
    sets: Sequence[PreparedSet],
    pshape: tuple[int, int, int],
    stride_ratio: float,
    validation: float | Sequence[PreparedSet],
    *,
    full_labels_only: bool = False,
    seed: int = 0,
    max_validation_patches: int = 512,
) -> PatchPlan:
    """Enumerate patches and split them into training and validation without overlap.

    With a fraction, whole grid patches are drawn for validation and every training patch
    that would intersect one of them is dropped, so no voxel is both trained and validated on.
    """
    rng = np.random.default_rng(seed)
    all_boxes = [grid_boxes(ps, pshape, stride_ratio, full_labels_only) for ps in sets]
    for ps, b in zip(sets, all_boxes):
        if len(b) == 0:
            extra = " fully" if full_labels_only else ""
            raise InputError(
                f"{ps.name}: no patch of size {pshape} (z, y, x) holds{extra} labelled voxels "
                "inside the mask; label more voxels, enlarge the mask or reduce the patch size"
                + (" (or turn off full_labels_only)." if full_labels_only else ".")
            )
    if not isinstance(validation, (int, float)):
        val_sets = list(validation)
        val = []
        for ps in val_sets:
            b = grid_boxes(ps, pshape, 1.0)
            if len(b) == 0:
                raise InputError(f"Validation set {ps.name}: no labelled patch of size {pshape}.")
            if len(b) > max_validation_patches:
                b = b[np.sort(rng.choice(len(b), max_validation_patches, replace=False))]
            val.append(b)
        return PatchPlan(train=all_boxes, val=val, val_sets=val_sets)
    fraction = float(validation)
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation fraction must be in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return PatchPlan(train=all_boxes, val=[np.zeros((0, 3), np.int64) for _ in sets])
    total = sum(len(b) for b in all_boxes)
    if total < 2:
        raise InputError(
            f"Only {total} labelled patch of size {pshape} (z, y, x): too few to split "
            f"{fraction:.0%} off for validation. Reduce the patch size, label more, pass "
            "validation=0 or a separate validation training set."
        )
    # validation patches come from a non-overlapping grid, kept spatially together (whole
    # slices first in 2D, a contiguous run in 3D) so that few training patches are lost
    tiles = [grid_boxes(ps, pshape, 1.0, full_labels_only, flush=False) for ps in sets]
    tiles = [t if len(t) else b[:1] for t, b in zip(tiles, all_boxes)]
    n_tiles = sum(len(t) for t in tiles)
    if n_tiles < 2:
        raise InputError(
            f"The labelled region holds only one non-overlapping patch of size {pshape} "
            f"(z, y, x): too small to split {fraction:.0%} off for validation. Reduce the patch "
            "size, label more slices, pass validation=0 or a separate validation training set."
        )
    n_val = min(max(1, round(n_tiles * fraction)), max(1, n_tiles - 1), max_validation_patches)
    flat: list[tuple[int, np.ndarray]] = []
    for i in rng.permutation(len(sets)):
        t = tiles[i]
        if pshape[0] == 1:
            slices = rng.permutation(np.unique(t[:, 0]))
            order = np.concatenate([np.flatnonzero(t[:, 0] == z) for z in slices])
        else:
            order = np.roll(np.arange(len(t)), -int(rng.integers(len(t))))
        flat.extend((int(i), t[j]) for j in order)
    chosen: list[list[np.ndarray]] = [[] for _ in sets]
    for i, box in flat[:n_val]:
        chosen[i].append(box)
    train, val = [], []
    for i, b in enumerate(all_boxes):
        v = np.array(chosen[i], np.int64).reshape(-1, 3)
        t = b[~overlaps(b, v, pshape)]
        train.append(t)
        val.append(v)
    if sum(len(t) for t in train) == 0:
        raise InputError(
            "No training patch is left after splitting off validation patches (they overlap "
            "everything); label more slices, reduce the patch size or the stride ratio, or "
            "pass validation=0 or a separate validation set."
        )
    return PatchPlan(train=train, val=val)


def extract(
    ps: PreparedSet,
    box: Sequence[int] | np.ndarray,
    pshape: tuple[int, int, int],
    spec: ModelSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """Network input and target for one box.

    Returns ``(C, py, px)`` / ``(C*slices, py, px)`` / ``(C, pz, py, px)`` float32 and the
    labels ``(py, px)`` or ``(pz, py, px)`` as int64.
    """
    z0, y0, x0 = (int(v) for v in box)
    pz, py, px = pshape
    ys, xs = slice(y0, y0 + py), slice(x0, x0 + px)
    if spec.input_dimension == "3D":
        zs = slice(z0, z0 + pz)
        return ps.image[:, zs, ys, xs], ps.labels[zs, ys, xs].astype(np.int64)
    if spec.input_dimension == "2.5D":
        n = ps.shape[0]
        idx = np.clip(np.asarray(spec.slice_offsets) + z0, 0, n - 1)
        x = ps.image[:, idx, ys, xs].reshape(-1, py, px)
        return x, ps.labels[z0, ys, xs].astype(np.int64)
    return ps.image[:, z0, ys, xs], ps.labels[z0, ys, xs].astype(np.int64)


#: at most this many voxel positions are kept per class and set for class-centred sampling
_MAX_CLASS_POSITIONS = 200_000


def class_positions(
    ps: PreparedSet, rng: np.random.Generator | None = None
) -> dict[int, np.ndarray]:
    """Per labelled class: ``(n, 3)`` positions ``(z, y, x)`` of its voxels in ``ps`` (a
    random subset of at most :data:`_MAX_CLASS_POSITIONS` for common classes)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    labels = ps.labels
    out: dict[int, np.ndarray] = {}
    for c in np.unique(labels):
        if c < 0:
            continue
        flat = np.flatnonzero(labels == c)
        if len(flat) > _MAX_CLASS_POSITIONS:
            flat = np.sort(rng.choice(flat, _MAX_CLASS_POSITIONS, replace=False))
        out[int(c)] = np.stack(np.unravel_index(flat, labels.shape), axis=1).astype(np.int64)
    return out


def random_train_boxes(
    sets: Sequence[PreparedSet],
    plan: PatchPlan,
    pshape: tuple[int, int, int],
    count: int,
    rng: np.random.Generator,
    class_balance: float = 0.0,
    positions: Sequence[dict[int, np.ndarray]] | None = None,
) -> list[tuple[int, np.ndarray]]:
    """``count`` random crops near the training grid patches, never touching validation boxes.

    Each crop is a grid patch shifted by up to half a patch in y and x (and z in 3D); shifts
    that would leave the volume, hold no labels or meet a validation patch fall back to the
    grid patch itself.

    ``class_balance`` (0 … 1): that share of the crops is instead centred (± a quarter patch)
    on a labelled voxel of a class drawn uniformly among the labelled classes (``positions``
    from :func:`class_positions`), so a class with 0.5 % of the labels fills about
    ``class_balance / K`` of the patches; a crop that would meet a validation patch falls
    back to the grid crop.
    """
    owners = np.concatenate([np.full(len(t), i) for i, t in enumerate(plan.train)])
    base = np.concatenate(plan.train)
    pick = rng.integers(0, len(base), count)
    shift = np.stack(
        [
            rng.integers(-(p // 2), p // 2 + 1, count) if p > 1 else np.zeros(count, int)
            for p in pshape
        ],
        axis=1,
    )
    out = []
    for k in range(count):
        i = int(owners[pick[k]])
        ps = sets[i]
        b = base[pick[k]]
        cand = np.clip(b + shift[k], 0, np.asarray(ps.shape) - np.asarray(pshape))
        if pshape[0] == 1:
            cand[0] = b[0]
        ok = not overlaps(cand[None], _val_boxes(plan, i), pshape)[0]
        if ok:
            z0, y0, x0 = cand
            pz, py, px = pshape
            ok = bool((ps.labels[z0 : z0 + pz, y0 : y0 + py, x0 : x0 + px] != UNLABELLED).any())
        out.append((i, cand if ok else b))
    if class_balance > 0 and positions is not None:
        _centre_on_classes(out, sets, plan, pshape, rng, float(class_balance), positions)
    return out


def _val_boxes(plan: PatchPlan, i: int) -> np.ndarray:
    """The validation boxes inside training set ``i`` (none when validation is done on
    separate ground-truth sets: ``plan.val`` then holds their boxes, in other volumes)."""
    if plan.val_sets is not None:
        return np.zeros((0, 3), np.int64)
    return plan.val[i]


def _centre_on_classes(
    out: list[tuple[int, np.ndarray]],
    sets: Sequence[PreparedSet],
    plan: PatchPlan,
    pshape: tuple[int, int, int],
    rng: np.random.Generator,
    share: float,
    positions: Sequence[dict[int, np.ndarray]],
) -> None:
    """Replace ``share`` of the crops in ``out`` by class-centred ones (in place)."""
    classes = sorted({c for per_set in positions for c in per_set})
    if not classes:
        return
    size = np.asarray(pshape)
    replace = np.flatnonzero(rng.random(len(out)) < share)
    for k in replace:
        c = classes[int(rng.integers(len(classes)))]
        owners = [i for i, per_set in enumerate(positions) if c in per_set]
        weights = np.array([len(positions[i][c]) for i in owners], np.float64)
        i = owners[int(rng.choice(len(owners), p=weights / weights.sum()))]
        pts = positions[i][c]
        centre = pts[int(rng.integers(len(pts)))]
        jitter = np.array([int(rng.integers(-(p // 4), p // 4 + 1)) if p > 1 else 0 for p in size])
        cand = np.clip(centre - size // 2 + jitter, 0, np.asarray(sets[i].shape) - size)
        if size[0] == 1:
            cand[0] = centre[0]
        if not overlaps(cand[None], _val_boxes(plan, i), pshape)[0]:
            out[int(k)] = (i, cand)
