import math

import pytest
import torch

from nbseg.training.losses import (
    confusion_matrix,
    cross_entropy,
    dice_loss,
    focal_loss,
    metrics_from_confusion,
    tversky_loss,
)


def _perfect(k=3):
    target = torch.randint(0, k, (2, 8, 8))
    logits = torch.nn.functional.one_hot(target, k).permute(0, 3, 1, 2).float() * 20
    return logits, target


@pytest.mark.parametrize("fn", [cross_entropy, dice_loss, focal_loss, tversky_loss])
def test_losses_small_for_perfect_and_ignore_unlabelled(fn):
    logits, target = _perfect()
    assert float(fn(logits, target)) < 1e-3
    bad = target.clone()
    bad[:, :4] = -1  # unlabelled half: arbitrary logits there must not matter
    noisy = logits.clone()
    noisy[:, :, :4] = torch.randn_like(noisy[:, :, :4]) * 50
    assert float(fn(noisy, bad)) < 1e-3


@pytest.mark.parametrize("fn", [cross_entropy, dice_loss, focal_loss, tversky_loss])
def test_losses_zero_with_no_labels_and_gradients_flow(fn):
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = fn(logits, torch.full((1, 4, 4), -1))
    loss.backward()
    assert float(loss.detach()) == 0.0
    target = torch.randint(0, 2, (1, 4, 4))
    logits.grad = None
    fn(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_class_weights_change_cross_entropy():
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    a = cross_entropy(logits, target)
    b = cross_entropy(logits, target, torch.tensor([1.0, 5.0]))
    assert not math.isclose(float(a), float(b))


def test_metrics_from_confusion():
    pred = torch.tensor([[0, 0, 1, 1, 2]])
    target = torch.tensor([[0, 1, 1, 1, -1]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.sum() == 4
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["dice_a"] == pytest.approx(2 / 3)
    assert m["dice_b"] == pytest.approx(0.8)
    assert math.isnan(m["dice_c"])  # absent everywhere: left out of the mean
    assert m["dice"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["accuracy"] == pytest.approx(0.75)
