"""The Mask R-CNN training step: torchvision detection models take lists of images and targets.

Batches come from the same loader as every other model (:func:`medseg.training.data.make_train_loader`:
cached, preprocessed, cropped and augmented patches) with their **instance ids**; each patch's
targets are made here, after augmentation: per object (``>= min_pixels`` voxels inside the patch;
objects cut by the patch border keep the part inside) its box, class 1 and binary mask. Boxes
follow :mod:`medseg.inference.detection`: torchvision's ``(x0, y0, x1, y1)`` spans the patch's last
axis then its first, stop exclusive.

The step runs in fp32 (torchvision's RoI ops and losses; a CPU without native bf16 gains nothing
from autocast) with the shared optimiser, learning-rate schedule and gradient clipping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from medseg.training.optim import clip_gradients

#: objects with fewer voxels inside a patch are not targets (slivers at the patch border)
MIN_PIXELS = 4


def detection_target(ids: torch.Tensor, min_pixels: int = MIN_PIXELS) -> dict[str, torch.Tensor]:
    """Boxes (N, 4) float32, labels (N,) int64 (all 1) and masks (N, X, Y) uint8 of a (X, Y) id patch."""
    values, counts = torch.unique(ids, return_counts=True)
    values = values[(values > 0) & (counts >= min_pixels)]
    masks = ids[None] == values[:, None, None]
    rows, cols = masks.any(2), masks.any(1)  # (N, X), (N, Y)
    boxes = torch.stack([_first(cols), _first(rows), _last(cols) + 1, _last(rows) + 1], dim=1).float()
    return {
        "boxes": boxes.reshape(-1, 4),
        "labels": torch.ones(len(values), dtype=torch.int64),
        "masks": masks.to(torch.uint8),
    }


def _first(hits: torch.Tensor) -> torch.Tensor:
    return hits.float().argmax(dim=1)


def _last(hits: torch.Tensor) -> torch.Tensor:
    return hits.shape[1] - 1 - hits.flip(1).float().argmax(dim=1)


@dataclass
class DetectionStep:
    """One optimisation step of a Mask R-CNN on ``{"image": (B, C, X, Y), "label": (B, 1, X, Y) ids}``.

    Same call as :class:`medseg.training.loop.TrainStep`: returns the detached total loss (the sum of
    torchvision's RPN and RoI losses), so :func:`medseg.training.loop.run_epoch` runs it unchanged.
    """

    network: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    grad_clip: float = 12.0
    scaler: None = None

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        images = list(batch["image"].to(self.device))
        targets = [{k: v.to(self.device) for k, v in detection_target(label[0]).items()} for label in batch["label"]]
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.network(images, targets)
        loss = sum(losses.values())
        loss.backward()
        clip_gradients(self.network.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach()
