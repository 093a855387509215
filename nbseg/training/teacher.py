"""A feature teacher: a pixel classifier that labels the voxels the user did not paint.

With sparse labels (strokes, a few painted slices) a network sees few labelled voxels per
step, while a per-pixel classifier on a bank of filter responses (ilastik's recipe: Gaussian
smoothing, gradient magnitude, Laplacian of Gaussian, Hessian and structure-tensor
eigenvalues, differences of Gaussians, at σ 0.7 / 1.6 / 3.5 / 5) learns from the same strokes
in seconds. Here that classifier is a small MLP (two hidden layers of 128) trained on a
class-balanced sample of the labelled voxels; it then predicts the unlabelled voxels inside
the training patches (the slices and regions the user labelled in), and where its
probability reaches ``teacher_threshold`` its class becomes a *teacher label* for the
network (:class:`~nbseg.training.module.SegmentationDataModule`), weighted by
``unlabelled_weight``. The user's labels always win, validation is scored on the user's
labels only. With ``teacher_blend`` > 0 the trained model keeps the teacher (its tensors
are saved in the model file beside the network's) and predicts with both, a geometric mean
of the two probability maps (:func:`blend`, in :class:`~nbseg.inference.predictor.VolumePredictor`).

Features are 2D, slice by slice along z, for every input channel; memory is one slice's
feature stack (32 features per channel) plus the sampled training voxels (at most
``max_samples``), whatever the volume size. Torch only: no scikit-learn, nothing downloaded.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.patches import PreparedSet
from ..models.spec import ModelSpec

#: Gaussian scales of the filter bank (pixels), as ilastik's defaults
SIGMAS = (0.7, 1.6, 3.5, 5.0)
#: features per input channel: raw + 7 per scale + the differences of Gaussians
FEATURES_PER_CHANNEL = 1 + 7 * len(SIGMAS) + len(SIGMAS) - 1


def _kernel(sigma: float, order: int = 0) -> torch.Tensor:
    r = math.ceil(4 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma * sigma))
    g = g / g.sum()
    if order == 1:
        g = -x / sigma**2 * g
    elif order == 2:
        g = (x**2 / sigma**4 - 1 / sigma**2) * g
    return g


def _separable(img: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
    """``img`` (N, 1, H, W) filtered by ``ky`` along y and ``kx`` along x, reflect-padded."""
    ry, rx = ky.numel() // 2, kx.numel() // 2
    h, w = img.shape[-2:]
    mode = "reflect" if ry < h and rx < w else "replicate"
    out = F.conv2d(F.pad(img, (0, 0, ry, ry), mode=mode), ky.view(1, 1, -1, 1))
    return F.conv2d(F.pad(out, (rx, rx, 0, 0), mode=mode), kx.view(1, 1, 1, -1))


def _eigen2(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> list[torch.Tensor]:
    """Eigenvalues (larger first) of the symmetric 2×2 field [[a, c], [c, b]]."""
    half = (a + b) / 2
    disc = torch.sqrt(torch.clamp(((a - b) / 2) ** 2 + c * c, min=0))
    return [half + disc, half - disc]


def slice_features(image: torch.Tensor) -> torch.Tensor:
    """Filter-bank features ``(C * FEATURES_PER_CHANNEL, H, W)`` of one ``(C, H, W)`` slice."""
    x = image.float()[:, None]  # (C, 1, H, W): channels as a batch
    out = [x]
    for s in SIGMAS:
        g0, g1, g2 = _kernel(s), _kernel(s, 1), _kernel(s, 2)
        out.append(_separable(x, g0, g0))
        dy, dx = _separable(x, g1, g0), _separable(x, g0, g1)
        out.append(torch.sqrt(dy * dy + dx * dx))
        dyy, dxx, dxy = _separable(x, g2, g0), _separable(x, g0, g2), _separable(x, g1, g1)
        out.append(dyy + dxx)  # Laplacian of Gaussian
        out += _eigen2(dyy, dxx, dxy)  # Hessian
        gt = _kernel(min(2 * s, 8.0))
        out += _eigen2(  # structure tensor, integrated at twice the scale
            _separable(dy * dy, gt, gt), _separable(dx * dx, gt, gt), _separable(dy * dx, gt, gt)
        )
    for a, b in itertools.pairwise(SIGMAS):
        out.append(out[1 + 7 * SIGMAS.index(a)] - out[1 + 7 * SIGMAS.index(b)])  # DoG
    return torch.cat(out, 1).reshape(-1, *image.shape[1:])


@dataclass
class FeatureTeacher:
    """The trained pixel classifier: standardisation and the MLP."""

    net: torch.nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    class_count: int

    hidden: int = 128

    #: prefix of the teacher's tensors in a model file
    PREFIX = "teacher."

    def tensors(self) -> dict[str, torch.Tensor]:
        """The teacher as named tensors (saved beside the network's in a model file)."""
        out = {f"{self.PREFIX}net.{k}": v.detach().cpu() for k, v in self.net.state_dict().items()}
        out[f"{self.PREFIX}mean"] = self.mean.detach().cpu()
        out[f"{self.PREFIX}std"] = self.std.detach().cpu()
        return out

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], class_count: int, hidden: int
    ) -> FeatureTeacher:
        """The teacher saved by :meth:`tensors` (raises KeyError/RuntimeError when they do
        not fit)."""
        mean = tensors[f"{cls.PREFIX}mean"].float()
        net = _mlp(mean.numel(), hidden, class_count)
        p = f"{cls.PREFIX}net."
        net.load_state_dict({k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)})
        net.eval()
        return cls(net, mean, tensors[f"{cls.PREFIX}std"].float(), class_count, hidden)

    def to(self, device: torch.device) -> FeatureTeacher:
        """This teacher on ``device`` (itself when already there)."""
        if self.mean.device == device:
            return self
        return FeatureTeacher(
            copy.deepcopy(self.net).to(device),
            self.mean.to(device),
            self.std.to(device),
            self.class_count,
            self.hidden,
        )

    @torch.no_grad()
    def batch_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, H, W)`` of a batch of ``(B, C, H, W)`` slices."""
        return torch.stack([self.probabilities(t) for t in x])

    @torch.no_grad()
    def on_network_input(self, x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
        """The teacher's probabilities on a batch of network inputs, in the network
        output's shape: the tile's own slice (2D), its centre slice (2.5D, inputs outermost
        in the channels) or each of its slices (3D)."""
        x = x.float().contiguous()
        if spec.input_dimension == "3D":  # (B, C, Z, Y, X): slice by slice
            return torch.stack([self.batch_probabilities(x[:, :, z]) for z in range(x.shape[2])], 2)
        if spec.input_dimension == "2.5D":  # (B, C * S, Y, X)
            offsets = list(spec.slice_offsets)
            centre = offsets.index(0) if 0 in offsets else len(offsets) // 2
            b, _, h, w = x.shape
            x = x.reshape(b, -1, len(offsets), h, w)[:, :, centre]
        return self.batch_probabilities(x)

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(K, H, W)`` of one ``(C, H, W)`` slice."""
        f = slice_features(image)
        h, w = f.shape[1:]
        flat = (f.reshape(f.shape[0], -1).T - self.mean) / self.std
        probs = torch.cat([self.net(part).softmax(1) for part in flat.split(262_144)])
        return probs.T.reshape(self.class_count, h, w)


def _mlp(features: int, hidden: int, class_count: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(features, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, class_count),
    )


def blend(p_net: torch.Tensor, p_teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """Geometric mean of two probability maps (class dim 1), ``weight`` on the teacher's,
    renormalised: a voxel both call class c stays c, and a sure answer outweighs an unsure
    one (0.949 against 0.947 for the arithmetic mean on the sandstone with strokes)."""
    logp = (1 - weight) * p_net.clamp_min(1e-6).log() + weight * p_teacher.clamp_min(1e-6).log()
    return logp.softmax(dim=1)


@torch.no_grad()
def blend_wins(
    network: torch.nn.Module,
    teacher: FeatureTeacher,
    patches: Any,
    spec: ModelSpec,
    weight: float,
    batch: int = 8,
    margin: float = 0.0,
) -> tuple[bool, float, float]:
    """Whether predicting with the network *and* the teacher (:func:`blend`, ``weight``)
    scores a macro Dice more than ``margin`` above the network alone on ``patches`` (the
    validation patches: the user's labels, which the teacher never trained on). Returns
    (wins, Dice of the network alone, Dice of the blend); no labelled voxel: (False, 0, 0).
    ``patches``: a sized, indexable dataset of (input, target) tensor pairs."""
    k = spec.class_count
    stats = np.zeros((2, 3, k))  # (alone, blend) x (intersection, predicted, true) x class
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    teacher = teacher.to(device)
    try:
        for i in range(0, len(patches), batch):
            xs, ys = zip(*(patches[j] for j in range(i, min(i + batch, len(patches)))), strict=True)
            x = torch.stack(list(xs)).to(device)
            y = torch.stack(list(ys)).to(device).long()
            p = network(x).float().softmax(1)
            both = blend(p, teacher.on_network_input(x, spec), weight)
            ok = (y >= 0) & (y < k)
            for row, prob in enumerate((p, both)):
                pred = prob.argmax(1)
                for c in range(k):
                    pc, tc = (pred == c) & ok, (y == c) & ok
                    stats[row, :, c] += [float((pc & tc).sum()), float(pc.sum()), float(tc.sum())]
    finally:
        network.train(was_training)
    present = stats[0, 2] > 0
    if not present.any():
        return False, 0.0, 0.0
    dice = 2 * stats[:, 0] / np.maximum(stats[:, 1] + stats[:, 2], 1)
    alone, both_dice = (float(d[present].mean()) for d in dice)
    return both_dice > alone + margin, alone, both_dice


def fit_teacher(
    sets: Sequence[PreparedSet],
    class_count: int,
    *,
    seed: int = 0,
    exclude: Sequence[np.ndarray | None] | None = None,
    max_samples: int = 200_000,
    steps: int = 4000,
    hidden: int = 128,
) -> FeatureTeacher:
    """Train the teacher on a class-balanced sample of the labelled voxels of ``sets``
    (AdamW, one-cycle schedule, batches of 4096 drawn class-balanced; at most ``steps``,
    about 80 passes over the sample).

    ``exclude``: per set, a bool ``(z, y, x)`` array of voxels kept out (the validation
    patches), or None.
    """
    rng = np.random.default_rng([seed, 7])
    per_class = max_samples // max(1, class_count)

    # which labelled voxels to sample: up to max_samples / K of each class over all sets,
    # each slice drawing its share of a class's quota; one slice at a time, so memory stays
    # that of a slice however large the labelled volume is
    def slice_labels(i: int, z: int) -> np.ndarray:
        lab = np.asarray(sets[i].labels[z])
        out_i = exclude[i] if exclude is not None else None
        return lab if out_i is None else np.where(out_i[z], -1, lab)

    per_slice: list[np.ndarray] = []  # per set, (Z, K) labelled voxels per slice and class
    for i, ps in enumerate(sets):
        cz = np.zeros((ps.labels.shape[0], class_count), np.int64)
        for z in range(ps.labels.shape[0]):
            lab = slice_labels(i, z)
            cz[z] = np.bincount(lab[lab >= 0].ravel(), minlength=class_count)[:class_count]
        per_slice.append(cz)
    totals = np.sum([cz.sum(0) for cz in per_slice], axis=0)
    picks = []
    for i, ps in enumerate(sets):
        plane = int(np.prod(ps.labels.shape[1:]))
        for zi in np.flatnonzero(per_slice[i].any(1)):
            z = int(zi)
            lab = slice_labels(i, z).reshape(-1)
            for c in np.flatnonzero(per_slice[i][z]):
                n = int(per_slice[i][z, c])
                if totals[c] > per_class:  # this slice's share, randomly rounded
                    share = per_class * n / totals[c]
                    n = min(n, int(share) + int(rng.random() < share - int(share)))
                if n == 0:
                    continue
                where = np.flatnonzero(lab == c)
                pos = where if n == len(where) else rng.choice(where, n, replace=False)
                rows = np.stack([np.full(n, i), z * plane + pos, np.full(n, c)], 1)
                picks.append(rows.astype(np.int64))
    if not picks:
        picks.append(np.zeros((0, 3), np.int64))
    chosen = np.concatenate(picks)
    feats, targets = [], []
    for i, ps in enumerate(sets):
        mine = chosen[chosen[:, 0] == i]
        if not len(mine):
            continue
        ny, nx = ps.shape[1:]
        z = mine[:, 1] // (ny * nx)
        for zz in np.unique(z):
            sel = mine[z == zz]
            f = slice_features(torch.from_numpy(ps.image[:, zz]))
            flat = f.reshape(f.shape[0], -1)
            feats.append(flat[:, torch.from_numpy(sel[:, 1] % (ny * nx))].T)
            targets.append(torch.from_numpy(sel[:, 2]))
    X = torch.cat(feats)
    y = torch.cat(targets).long()
    mean, std = X.mean(0), X.std(0) + 1e-6
    Xn = (X - mean) / std
    gen = torch.Generator().manual_seed(int(seed))
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    net = _mlp(X.shape[1], hidden, class_count)
    torch.random.set_rng_state(torch_state)  # the network's own initialisation stays seeded
    lr = 3e-3
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    counts = torch.bincount(y, minlength=class_count).float()
    weight = (1.0 / counts.clamp(min=1.0))[y]  # each class drawn equally often
    batch = min(4096, len(y))
    steps = max(300, min(steps, math.ceil(80 * len(y) / batch)))  # ~80 passes over the sample
    for _ in range(steps):
        pick = torch.multinomial(weight, batch, replacement=True, generator=gen)
        loss = F.cross_entropy(net(Xn[pick]), y[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return FeatureTeacher(net, mean, std, class_count, hidden)


def teacher_labels(
    sets: Sequence[PreparedSet],
    class_count: int,
    threshold: float,
    *,
    seed: int = 0,
    exclude: Sequence[np.ndarray | None] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    log: Callable[[str], None] | None = None,
    max_voxels: int = 32 * 2**20,
) -> tuple[list[np.ndarray], dict[str, float], FeatureTeacher]:
    """Per set, int16 teacher labels ``(z, y, x)``: the class where the teacher's probability
    reaches ``threshold`` on a voxel the user left unlabelled (inside the mask), else -1.
    When the training volumes hold more than ``max_voxels`` voxels, only every n-th slice
    is labelled (n = voxels / max_voxels, rounded up): about 3 s per 1024² slice on 2 CPU
    cores, so at most about 1.5 minutes.

    Returns the label arrays, a summary: ``teacher_seconds``, ``teacher_share`` (share of
    the unlabelled voxels that got a teacher label), and the teacher itself.
    """
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        teacher = fit_teacher(sets, class_count, seed=seed, exclude=exclude)
    # big volumes: every step-th slice only, so the teacher's time stays bounded
    total = sum(int(np.prod(ps.shape)) for ps in sets)
    step = max(1, math.ceil(total / max_voxels))
    out, given, open_ = [], 0, 0
    for i, ps in enumerate(sets):
        lab = np.full(ps.shape, -1, np.int16)
        unl = ps.labels < 0
        mask_i = masks[i] if masks is not None else None
        if mask_i is not None:
            unl &= mask_i
        for z in range(ps.shape[0]):
            if z % step or not unl[z].any():
                continue
            conf, cls = teacher.probabilities(torch.from_numpy(ps.image[:, z])).max(0)
            keep = unl[z] & (conf.numpy() >= threshold)
            lab[z][keep] = cls.numpy()[keep]
        given += int((lab >= 0).sum())
        open_ += int(unl.sum())
        out.append(lab)
    info = {
        "teacher_seconds": time.perf_counter() - t0,
        "teacher_share": given / open_ if open_ else 0.0,
    }
    if log is not None:
        log(
            f"feature teacher: {info['teacher_share']:.0%} of {open_:,} unlabelled voxels "
            f"labelled in {info['teacher_seconds']:.0f} s"
        )
    return out, info, teacher
