"""Vectorised batch augmentation (nbseg.data.augment)."""

from __future__ import annotations

import json

import pytest
import torch

from nbseg.data.augment import AugmentationParams, augment_batch
from nbseg.errors import InputError, ParamsError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def block_labels(batch: int, size: tuple[int, ...], classes: int = 3, seed: int = 0):
    """Labels made of coarse blocks (few boundaries), every class present, no -1."""
    g = gen(seed)
    coarse = tuple(max(1, s // 8) for s in size)
    small = torch.randint(0, classes, (batch, 1, *coarse), generator=g).float()
    full = torch.nn.functional.interpolate(small, size=size, mode="nearest")
    return full[:, 0].long()


def image_from(labels: torch.Tensor) -> torch.Tensor:
    """A two-channel image that encodes the labels: class id and its negative."""
    x = labels.float().unsqueeze(1)
    return torch.cat([x, -2 * x], 1)


GEOMETRY_ONLY = {"brightness": (1.0, 1.0), "contrast": (1.0, 1.0), "noise": 0.0}


def test_disabled_is_identity():
    labels = block_labels(4, (32, 32))
    images = image_from(labels)
    out_i, out_l = augment_batch(images, labels, AugmentationParams.disabled(), 2, gen())
    assert out_i is images and out_l is labels
    out_i, out_l = augment_batch(images, labels, AugmentationParams(probability=0.0), 2, gen())
    assert torch.equal(out_i, images) and torch.equal(out_l, labels)


def test_intensity_only_keeps_labels():
    labels = block_labels(4, (32, 32))
    images = torch.randn(4, 1, 32, 32)
    params = AugmentationParams.disabled()
    params.noise, params.brightness, params.contrast = 0.1, (0.8, 1.2), (0.5, 1.5)
    before = images.clone()
    out_i, out_l = augment_batch(images, labels, params, 2, gen())
    assert out_l is labels
    assert torch.equal(images, before), "inputs must not be modified"
    assert out_i.shape == images.shape and out_i.dtype == images.dtype
    assert not torch.allclose(out_i, images)
    # brightness / contrast are per sample
    shifts = (out_i - images).mean(dim=(1, 2, 3))
    assert shifts.std() > 0.01


@pytest.mark.parametrize("elastic", [False, True])
def test_label_values_and_alignment_2d(elastic):
    labels = block_labels(16, (64, 64), classes=4)
    images = image_from(labels)
    params = AugmentationParams(rotation=180, zoom=(0.8, 1.25), shear=5, elastic=elastic)
    params.brightness, params.contrast = (1.0, 1.0), (1.0, 1.0)
    out_i, out_l = augment_batch(images, labels, params, 2, gen(1))
    assert out_l.dtype == labels.dtype and out_l.shape == labels.shape
    assert out_i.shape == images.shape
    assert set(out_l.unique().tolist()) <= {-1, 0, 1, 2, 3}
    assert torch.isfinite(out_i).all()
    # the image still lines up with the labels: per-class means stay near the class id
    valid = out_l >= 0
    err = (out_i[:, 0] - out_l.float()).abs()[valid]
    assert (
        err < 0.5
    ).float().mean() > 0.92  # bilinear image vs nearest labels differ only on class borders
    for c in range(4):
        assert abs(out_i[:, 0][out_l == c].mean().item() - c) < 0.15
    assert torch.allclose(out_i[:, 1], -2 * out_i[:, 0], atol=1e-5)  # same grid for channels


def test_flips_and_rot90_are_exact_and_vary():
    labels = block_labels(32, (16, 16), classes=5)
    images = image_from(labels)
    params = AugmentationParams(zoom=(1.0, 1.0), shear=0.0, **GEOMETRY_ONLY)
    out_i, out_l = augment_batch(images, labels, params, 2, gen(2))
    assert torch.equal(out_i[:, 0], out_l.float())
    assert (out_l >= 0).all()
    changed = (out_l != labels).flatten(1).any(1)
    assert 0 < changed.sum() < 32  # some samples flipped/rotated, about 1/8 unchanged
    # each output is one of the 8 dihedral transforms of its input
    for b in range(4):
        x = labels[b]
        variants = [torch.rot90(v, k, (0, 1)) for v in (x, x.flip(0)) for k in range(4)]
        assert any(torch.equal(out_l[b], v) for v in variants)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_affine_path_matches_exact_path(spatial_dims):
    """The dihedral part folded into the affine grid equals flips/rotations by indexing."""
    size = (16, 16) if spatial_dims == 2 else (6, 16, 16)
    labels = block_labels(12, size, classes=3)
    images = image_from(labels) + 0.01 * torch.randn(12, 2, *size, generator=gen(5))
    exact = AugmentationParams(zoom=(1.0, 1.0), shear=0.0, **GEOMETRY_ONLY)
    folded = AugmentationParams(zoom=(1.0, 1.0 + 1e-7), shear=0.0, **GEOMETRY_ONLY)
    assert not exact.continuous and folded.continuous
    ei, el = augment_batch(images, labels, exact, spatial_dims, gen(3))
    fi, fl = augment_batch(images, labels, folded, spatial_dims, gen(3))
    assert torch.equal(el, fl)
    assert torch.allclose(ei, fi, atol=1e-4)


def test_outside_of_patch_becomes_unlabelled():
    labels = block_labels(16, (48, 48), classes=3)
    images = image_from(labels)
    assert (labels >= 0).all()
    params = AugmentationParams(
        flip=False, rotate90=False, rotation=180, zoom=(1.0, 1.0), shear=0, **GEOMETRY_ONLY
    )
    out_i, out_l = augment_batch(images, labels, params, 2, gen(4))
    assert (out_l == -1).float().mean() > 0.05
    assert (out_l[:, 0, 0] == -1).float().mean() > 0.5  # corners leave the patch
    assert torch.isfinite(out_i).all()
    # zooming out by 2: only the central quarter keeps labels
    params = AugmentationParams(flip=False, rotate90=False, zoom=(0.5, 0.5), shear=0)
    _, out_l = augment_batch(images, labels, params, 2, gen(4))
    assert abs((out_l == -1).float().mean().item() - 0.75) < 0.02


def test_existing_unlabelled_stays_unlabelled():
    labels = block_labels(8, (32, 32), classes=2)
    labels[:, :, :16] = -1
    images = image_from(labels.clamp(min=0))
    params = AugmentationParams(rotation=30, **GEOMETRY_ONLY)
    _, out_l = augment_batch(images, labels, params, 2, gen(0))
    assert set(out_l.unique().tolist()) <= {-1, 0, 1}
    assert 0.4 < (out_l == -1).float().mean() < 0.75


def test_reproducible_and_varies_across_samples():
    labels = block_labels(1, (32, 32)).repeat(8, 1, 1)
    images = image_from(labels)
    params = AugmentationParams(rotation=90, elastic=True, noise=0.1)
    a = augment_batch(images, labels, params, 2, gen(7))
    b = augment_batch(images, labels, params, 2, gen(7))
    c = augment_batch(images, labels, params, 2, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # identical inputs, different transforms per sample
    flat = a[1].flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 8


def test_non_square_rot90_stays_inside():
    labels = block_labels(16, (16, 32), classes=3)
    images = image_from(labels)
    params = AugmentationParams(flip=False, zoom=(1.0, 1.0), shear=0, **GEOMETRY_ONLY)
    out_i, out_l = augment_batch(images, labels, params, 2, gen(0))
    assert (out_l >= 0).all() and out_l.shape == labels.shape
    assert torch.equal(out_i[:, 0], out_l.float())


def test_probability_leaves_some_samples_untouched():
    labels = block_labels(32, (16, 16), classes=3)
    images = image_from(labels)
    params = AugmentationParams(rotation=45, probability=0.5, noise=0.2)
    out_i, out_l = augment_batch(images, labels, params, 2, gen(0))
    same = (out_l == labels).flatten(1).all(1) & (out_i == images).flatten(1).all(1)
    assert 4 <= same.sum() <= 28


@pytest.mark.parametrize("elastic", [False, True])
def test_3d(elastic):
    size = (8, 24, 24)
    labels = block_labels(4, size, classes=3)
    images = image_from(labels)
    params = AugmentationParams(rotation=40, elastic=elastic, **GEOMETRY_ONLY)
    out_i, out_l = augment_batch(images, labels, params, 3, gen(0))
    assert out_i.shape == images.shape and out_l.shape == labels.shape
    assert set(out_l.unique().tolist()) <= {-1, 0, 1, 2}
    valid = out_l >= 0
    err = (out_i[:, 0] - out_l.float()).abs()[valid]
    assert (err < 0.5).float().mean() > 0.95
    assert valid.float().mean() > 0.5


def test_3d_flips_z():
    labels = torch.zeros(16, 4, 8, 8, dtype=torch.long)
    labels[:, 0] = 1  # class 1 on the first slice only
    images = image_from(labels)
    params = AugmentationParams(rotate90=False, zoom=(1.0, 1.0), shear=0, **GEOMETRY_ONLY)
    _, out_l = augment_batch(images, labels, params, 3, gen(0))
    first, last = (out_l[:, 0] == 1).all((1, 2)), (out_l[:, -1] == 1).all((1, 2))
    assert torch.all(first ^ last) and first.any() and last.any()


def test_input_checks():
    params = AugmentationParams()
    images, labels = torch.zeros(2, 1, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long)
    with pytest.raises(InputError, match="spatial_dims"):
        augment_batch(images, labels, params, 4)
    with pytest.raises(InputError, match="images must have shape"):
        augment_batch(images[0], labels, params, 2)
    with pytest.raises(InputError, match="labels must have shape"):
        augment_batch(images, labels[0], params, 2)
    with pytest.raises(InputError, match="do not match"):
        augment_batch(images, labels[:, :8], params, 2)
    with pytest.raises(InputError, match="float"):
        augment_batch(images.long(), labels, params, 2)
    with pytest.raises(InputError, match="integer"):
        augment_batch(images, labels.float(), params, 2)
    out = augment_batch(images[:0], labels[:0], params, 2)
    assert out[0].shape[0] == 0


@pytest.mark.parametrize(
    "change, match",
    [
        ({"factor": -1}, "factor"),
        ({"factor": 0}, "factor"),
        ({"factor": 2.5}, "factor"),
        ({"flip": "yes"}, "flip"),
        ({"rotation": -5}, "rotation"),
        ({"rotation": 270}, "rotation"),
        ({"zoom": (0.0, 1.1)}, "zoom.*> 0"),
        ({"zoom": (1.2, 0.9)}, "zoom.*larger than max"),
        ({"zoom": 1.1}, "zoom.*pair"),
        ({"shear": -1}, "shear"),
        ({"shear": 60}, "shear"),
        ({"elastic_alpha": -1}, "elastic_alpha"),
        ({"elastic_sigma": 0}, "elastic_sigma"),
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise.*finite"),
        ({"brightness": (1.1, 0.9)}, "brightness"),
        ({"contrast": (-1, 1)}, "contrast"),
        ({"contrast": ("a", 1)}, "contrast"),
        ({"probability": 1.5}, "probability"),
    ],
)
def test_validate_errors(change, match):
    with pytest.raises(ParamsError, match=match):
        AugmentationParams(**change).validate()


def test_dict_round_trip():
    params = AugmentationParams(rotation=180, zoom=(0.8, 1.2), elastic=True, noise=0.05)
    data = params.to_dict()
    assert json.loads(json.dumps(data)) == data
    again = AugmentationParams.from_dict(data)
    assert again == params and isinstance(again.zoom, tuple)
    assert AugmentationParams.validate(AugmentationParams()) is not None
    with pytest.raises(ParamsError, match=r"(?i)unknown augmentation parameter"):
        AugmentationParams.from_dict({"rotations": 3})
    with pytest.raises(ParamsError, match="rotation"):
        AugmentationParams.from_dict({"rotation": 500})


def test_disabled_summary():
    off = AugmentationParams.disabled()
    assert off.factor == 1 and not off.geometric and not off.intensity
    on = AugmentationParams()
    # the default is geometric only: grey values often are the classes (micro-CT phases)
    assert on.geometric and not on.intensity and on.factor == 4
    assert AugmentationParams(brightness=(0.9, 1.1)).intensity
