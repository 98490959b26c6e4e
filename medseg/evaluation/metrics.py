"""Per-class metrics of one predicted label map against its reference, with MONAI.

Dice (``compute_dice``), the 95th-percentile symmetric Hausdorff distance (HD95,
``compute_hausdorff_distance(percentile=95)``) and the normalised surface Dice (NSD,
``compute_surface_dice``) at a tolerance in mm, all in world units from the voxel spacing.

Empty masks are decided here, explicitly, before MONAI is asked:

============================  =====  ======  ===
class present in               Dice   HD95    NSD
============================  =====  ======  ===
both reference and prediction  MONAI  MONAI   MONAI
neither                        1      0       1
only one of them               0      inf     0
============================  =====  ======  ===
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

BOTH, NEITHER, REF_ONLY, PRED_ONLY = "both", "neither", "reference_only", "prediction_only"


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class in one case; ``presence`` says which side holds the class."""

    label: int
    dice: float
    hd95: float
    nsd: float
    presence: str
    ref_voxels: int
    pred_voxels: int


def presence(pred_voxels: int, ref_voxels: int) -> str:
    """Which of prediction / reference contain the class."""
    if pred_voxels and ref_voxels:
        return BOTH
    if not pred_voxels and not ref_voxels:
        return NEITHER
    return REF_ONLY if ref_voxels else PRED_ONLY


#: Dice, HD95, NSD of a class missing from at least one side (see the module table)
EMPTY_SCORES = {NEITHER: (1.0, 0.0, 1.0), REF_ONLY: (0.0, math.inf, 0.0), PRED_ONLY: (0.0, math.inf, 0.0)}


def _onehot(labels: np.ndarray, classes: Sequence[int]) -> torch.Tensor:
    stack = np.stack([labels == c for c in classes])
    return torch.from_numpy(stack)[None]


def _voxel_counts(prediction: np.ndarray, reference: np.ndarray, classes: Sequence[int]) -> list[tuple[int, int]]:
    """(prediction voxels, reference voxels) of every class; ValueError when the shapes differ."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} != reference shape {reference.shape}")
    return [(int(np.count_nonzero(prediction == c)), int(np.count_nonzero(reference == c))) for c in classes]


def _monai_metrics(pred: torch.Tensor, ref: torch.Tensor, spacing: Sequence[float], tolerance_mm: float):
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    n = pred.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI-internal deprecation notices
        dice = compute_dice(pred, ref, include_background=True, ignore_empty=False)[0]
        hd95 = compute_hausdorff_distance(pred, ref, include_background=True, percentile=95, spacing=list(spacing))[0]
        nsd = compute_surface_dice(
            pred, ref, class_thresholds=[tolerance_mm] * n, include_background=True, spacing=list(spacing)
        )[0]
    return dice, hd95, nsd


def class_dice(prediction: np.ndarray, reference: np.ndarray, classes: Sequence[int]) -> list[float]:
    """Dice of each label value in ``classes``, with the empty-mask rules of :func:`class_metrics`
    (both empty: 1, one empty: 0) and MONAI's ``compute_dice`` otherwise; no distances computed.

    Needs integer label arrays of the same shape. Promises exactly the ``dice`` that
    :func:`class_metrics` reports for the same arrays.
    """
    from monai.metrics import compute_dice

    counts = _voxel_counts(prediction, reference, classes)
    both = [c for c, (p, r) in zip(classes, counts) if p and r]
    computed: dict[int, float] = {}
    if both:
        dice = compute_dice(
            _onehot(prediction, both), _onehot(reference, both), include_background=True, ignore_empty=False
        )[0]
        computed = {c: float(d) for c, d in zip(both, dice)}
    return [computed[c] if c in computed else EMPTY_SCORES[presence(p, r)][0] for c, (p, r) in zip(classes, counts)]


def class_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float],
    tolerance_mm: float = 1.0,
) -> list[ClassMetrics]:
    """Dice, HD95 (mm) and NSD at ``tolerance_mm`` for each label value in ``classes``.

    Needs integer label arrays of the same shape and the voxel spacing in mm along their axes.
    """
    counts = _voxel_counts(prediction, reference, classes)
    both = [i for i, (p, r) in enumerate(counts) if p and r]
    computed = {}
    if both:
        picked = [classes[i] for i in both]
        dice, hd95, nsd = _monai_metrics(_onehot(prediction, picked), _onehot(reference, picked), spacing, tolerance_mm)
        computed = {i: (float(dice[j]), float(hd95[j]), float(nsd[j])) for j, i in enumerate(both)}
    results = []
    for i, (c, (p, r)) in enumerate(zip(classes, counts)):
        where = presence(p, r)
        d, h, s = computed[i] if where == BOTH else EMPTY_SCORES[where]
        results.append(ClassMetrics(int(c), d, h, s, where, r, p))
    return results
