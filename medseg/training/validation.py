"""Validation: sliding-window prediction of whole preprocessed volumes, Dice per class, and the
keep-largest-component post-processing decision (nnU-Net's rule, per class), made with the
same ``keep_largest_component`` (full connectivity) that ``medseg predict`` applies.

Prediction is MONAI ``sliding_window_inference`` with Gaussian weighting (sigma 1/8 of the tile)
and 0.5 overlap. A 2D model predicts slice by slice across ``slice_axis`` and the slices are
restacked into the volume. Dice is MONAI's ``compute_dice`` with ``ignore_empty=False``: a
class absent from both reference and prediction scores 1.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

SLICE_CHUNK = 64  # 2D: slices per sliding-window call


@dataclass(frozen=True)
class Predictor:
    """How to run a network over a whole volume: dims, tile, device, autocast context, slice axis."""

    network: nn.Module
    spatial_dims: int
    patch_size: tuple[int, ...]
    device: torch.device
    autocast: Callable[[], AbstractContextManager] = nullcontext
    slice_axis: int = 2
    sw_batch_size: int = 2

    def _windows(self, batch: torch.Tensor) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        with torch.inference_mode(), self.autocast():
            out = sliding_window_inference(batch, self.patch_size, self.sw_batch_size, self.network, overlap=0.5,
                                           mode="gaussian", sigma_scale=0.125)
        return out.float()

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Logits ``(K, X, Y, Z)`` (float32, on the device) for an image ``(C, X, Y, Z)``."""
        self.network.eval()
        volume = torch.from_numpy(np.array(image, dtype=np.float32)).to(self.device)  # copy: memmaps are read-only
        if self.spatial_dims == 3:
            return self._windows(volume[None])[0]
        slices = volume.movedim(1 + self.slice_axis, 0)  # (S, C, H, W)
        parts = [self._windows(slices[i:i + SLICE_CHUNK]) for i in range(0, slices.shape[0], SLICE_CHUNK)]
        return torch.cat(parts).movedim(0, 1 + self.slice_axis)

    def labels(self, image: np.ndarray) -> np.ndarray:
        """Label map ``(X, Y, Z)`` uint8 (argmax of the logits)."""
        return self.logits(image).argmax(0).to(torch.uint8).cpu().numpy()


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of every foreground class 1..num_classes-1 (both empty -> 1) with MONAI's compute_dice."""
    from monai.metrics import compute_dice

    def onehot(labels: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        return nn.functional.one_hot(t, num_classes).movedim(-1, 0)[None]

    dice = compute_dice(onehot(prediction), onehot(reference), include_background=False, ignore_empty=False)
    return dice[0].double().numpy()


@dataclass(frozen=True)
class ValidationResult:
    """Dice per case and foreground class (rows follow ``case_ids``), without and with
    keep-largest-component applied to every class."""

    case_ids: tuple[str, ...]
    dice: np.ndarray
    dice_lcc: np.ndarray | None = None

    @property
    def mean_per_class(self) -> np.ndarray:
        return self.dice.mean(0)

    @property
    def mean(self) -> float:
        """Mean over classes of the per-class mean Dice: the run's validation score."""
        return float(self.mean_per_class.mean())


def validate(predictor: Predictor, cases: Iterable[tuple[str, np.ndarray, np.ndarray]], num_classes: int,
             with_postprocessing: bool = False) -> ValidationResult:
    """Predict every ``(case_id, image (C,X,Y,Z), label (X,Y,Z))`` and score it."""
    from medseg.inference.postprocess import keep_largest_component  # the very function inference applies

    ids, rows, rows_lcc = [], [], []
    foreground = list(range(1, num_classes))
    for case_id, image, label in cases:
        prediction = predictor.labels(image)
        ids.append(case_id)
        rows.append(dice_per_class(prediction, label, num_classes))
        if with_postprocessing:
            kept = keep_largest_component(prediction, foreground)
            rows_lcc.append(dice_per_class(kept, label, num_classes))
    if not ids:
        raise ValueError("validation needs at least one case")
    return ValidationResult(tuple(ids), np.stack(rows), np.stack(rows_lcc) if with_postprocessing else None)


def decide_postprocessing(result: ValidationResult, labels: dict[int, str]) -> dict:
    """nnU-Net's rule, per class: keep the largest component where it raises the mean validation Dice.

    Returns ``{"keep_largest_component": [classes], "dice_without": {name: d}, "dice_with": {name: d}}``.
    """
    if result.dice_lcc is None:
        return {"keep_largest_component": []}
    without, with_ = result.dice.mean(0), result.dice_lcc.mean(0)
    classes = list(range(1, len(without) + 1))
    chosen = [c for c in classes if with_[c - 1] > without[c - 1]]
    names = [labels.get(c, str(c)) for c in classes]
    return {"keep_largest_component": chosen,
            "dice_without": {n: round(float(d), 6) for n, d in zip(names, without)},
            "dice_with": {n: round(float(d), 6) for n, d in zip(names, with_)}}
