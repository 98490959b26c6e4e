"""Losses: nnU-Net's Dice+CE definition checked against a hand computation, the other losses,
class weights, and the deep-supervision weighting with downsampled labels."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from medseg.errors import ConfigError
from medseg.training.losses import LOSSES, build_loss, deep_supervision_weights


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 6, 7, 5), generator=gen)
    logits = torch.randn(2, 3, 6, 7, 5, generator=gen)
    return logits, labels


def soft_batch_dice_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """nnU-Net's soft Dice by hand: foreground classes only, sums over batch and space."""
    probs = logits.softmax(1)
    onehot = F.one_hot(labels[:, 0], logits.shape[1]).movedim(-1, 1).float()
    dims = [0, *range(2, logits.ndim)]
    inter = (probs * onehot).sum(dims)[1:]
    denom = probs.sum(dims)[1:] + onehot.sum(dims)[1:]
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def test_deep_supervision_weights_follow_nnunet() -> None:
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])


def test_dice_is_soft_batch_dice_without_background(batch) -> None:
    logits, labels = batch
    assert float(build_loss("dice", 3)(logits, labels)) == pytest.approx(
        float(soft_batch_dice_loss(logits, labels)), abs=1e-6
    )


def test_dice_ce_is_dice_plus_cross_entropy_one_to_one(batch) -> None:
    logits, labels = batch
    expected = soft_batch_dice_loss(logits, labels) + F.cross_entropy(logits, labels[:, 0])
    assert float(build_loss("dice_ce", 3)(logits, labels)) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_near_zero_when_right_and_larger_when_wrong(name: str, batch) -> None:
    _, labels = batch
    right = F.one_hot(labels[:, 0], 3).movedim(-1, 1).float() * 30 - 15
    wrong = right.roll(1, dims=1)
    loss = build_loss(name, 3)
    assert float(loss(right, labels)) < 1e-3
    assert float(loss(wrong, labels)) > 0.5


def test_class_weights_change_cross_entropy_as_torch_does(batch) -> None:
    logits, labels = batch
    weights = (0.5, 1.0, 4.0)
    expected = F.cross_entropy(logits, labels[:, 0], weight=torch.tensor(weights))
    assert float(build_loss("ce", 3, weights)(logits, labels)) == pytest.approx(float(expected), abs=1e-6)


def test_wrong_number_of_class_weights_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="one weight per class"):
        build_loss("dice_ce", 3, (1.0, 2.0))


def test_deep_supervision_list_uses_downsampled_labels_and_skips_the_lowest(batch) -> None:
    logits, labels = batch
    gen = torch.Generator().manual_seed(1)
    half = torch.randn(2, 3, 3, 4, 3, generator=gen)
    loss = build_loss("dice_ce", 3)
    labels_half = F.interpolate(labels.float(), size=(3, 4, 3), mode="nearest-exact")
    expected = 2 / 3 * loss(logits, labels) + 1 / 3 * loss(half, labels_half)
    lowest_a, lowest_b = torch.zeros(2, 3, 2, 2, 2), torch.randn(2, 3, 2, 2, 2, generator=gen)
    got_a = loss([logits, half, lowest_a], labels)
    got_b = loss([logits, half, lowest_b], labels)
    assert float(got_a) == pytest.approx(float(expected), abs=1e-6)
    assert float(got_a) == float(got_b)


def test_gradients_flow_through_the_deep_supervision_loss(batch) -> None:
    logits, labels = batch
    full = logits.clone().requires_grad_(True)
    half = torch.randn(2, 3, 3, 4, 3, requires_grad=True)
    build_loss("dice_ce", 3)([full, half, torch.randn(2, 3, 2, 2, 2)], labels).backward()
    assert full.grad is not None and half.grad is not None and torch.any(half.grad != 0)
