"""Segmentation losses (MONAI) and nnU-Net's deep-supervision weighting.

Every loss takes logits ``(B, C, *spatial)`` (or a deep-supervision list of them, full resolution
first) and integer labels ``(B, 1, *spatial)``. Defaults follow nnU-Net: soft Dice over the
foreground classes only, smooth 1e-5, batch Dice (intersections summed over the batch), plus
cross-entropy over all classes, 1:1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss, FocalLoss
from torch import nn

from medseg.errors import ConfigError

LOSSES = ("dice_ce", "dice", "ce", "focal", "dice_focal")
SMOOTH = 1e-5


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights: 1/2^i per output, the lowest resolution 0 (when several), normalised to sum 1."""
    weights = [0.5**i for i in range(levels)]
    if levels > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class CrossEntropy(nn.Module):
    """Cross-entropy on logits and ``(B, 1, *spatial)`` labels, optional per-class weights."""

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target[:, 0].long())


class SumOfLosses(nn.Module):
    """The sum of several losses on the same (logits, labels)."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(part(logits, target) for part in self.parts)


class NnUNetDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI's DeepSupervisionLoss with nnU-Net's weights; zero-weight outputs are skipped.

    Labels are downsampled nearest-neighbour to each output's size (MONAI ``nearest-exact``).
    """

    def get_weights(self, levels: int = 1) -> list[float]:
        return deep_supervision_weights(levels)

    def forward(
        self, input: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...] | None, target: torch.Tensor
    ) -> torch.Tensor:
        target = target.float()  # interpolation (label downsampling) needs a float tensor
        if input is None:  # allowed by MONAI's signature, refused as it does
            raise ValueError("input shouldn't be None.")
        if not isinstance(input, (list, tuple)):
            return self.loss(input.float(), target)
        total = input[0].new_zeros((), dtype=torch.float32)
        for weight, output in zip(self.get_weights(len(input)), input):
            if weight > 0:
                total = total + weight * self.get_loss(output.float(), target)
        return total


def class_weight_tensor(class_weights: Sequence[float], num_classes: int) -> torch.Tensor | None:
    """Per-class weights (background first) as a tensor, None when empty; ConfigError on a wrong count."""
    if not class_weights:
        return None
    if len(class_weights) != num_classes:
        raise ConfigError(
            f"[loss] class_weights has {len(class_weights)} values but the plan has {num_classes} "
            "classes (background first); give one weight per class or none"
        )
    return torch.tensor([float(w) for w in class_weights], dtype=torch.float32)


def base_loss(name: str, num_classes: int, class_weights: Sequence[float] = ()) -> nn.Module:
    """One loss by name: ``dice_ce`` | ``dice`` | ``ce`` | ``focal`` | ``dice_focal``."""
    weight = class_weight_tensor(class_weights, num_classes)
    dice_args: dict[str, Any] = dict(
        include_background=False, to_onehot_y=True, softmax=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH, batch=True
    )
    if name == "dice_ce":
        return DiceCELoss(**dice_args, weight=weight, lambda_dice=1.0, lambda_ce=1.0)
    if name == "dice":
        return DiceLoss(**dice_args, weight=None if weight is None else weight[1:])
    if name == "ce":
        return CrossEntropy(weight)
    # softmax focal loss over all classes (MONAI's DiceFocalLoss would use a sigmoid focal term)
    focal = FocalLoss(include_background=True, to_onehot_y=True, use_softmax=True, gamma=2.0, weight=weight)
    if name == "focal":
        return focal
    if name == "dice_focal":
        return SumOfLosses(DiceLoss(**dice_args, weight=None if weight is None else weight[1:]), focal)
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def build_loss(name: str, num_classes: int, class_weights: Sequence[float] = ()) -> nn.Module:
    """The training loss: ``base_loss`` wrapped for deep supervision (a plain tensor passes through).

    Needs ``num_classes`` including background. Promises a module ``loss(outputs, labels) -> scalar``
    accepting one logits tensor or a list (full resolution first) and labels ``(B, 1, *spatial)``.
    """
    # MONAI annotates ``loss`` as torch's _Loss but only calls it: any (input, target) -> Tensor module works
    return NnUNetDeepSupervisionLoss(base_loss(name, num_classes, class_weights))  # type: ignore[arg-type]
