"""Instance maps scored against reference instance maps, per image: the 2018 Data Science Bowl score.

For one image (2D) or volume (3D), with ``n_true`` reference and ``n_pred`` predicted objects
(the distinct non-zero ids of each map):

* IoU of every overlapping (reference, prediction) pair from the contingency table
  (``skimage.metrics.contingency_table``);
* at a threshold ``t``, a pair is a match when its IoU > t (strictly). For ``t >= 0.5`` an object
  can overlap at most one other object by more than half of their union, so matches are one-to-one
  without an assignment step; ``TP(t)`` = matches, ``FP = n_pred - TP``, ``FN = n_true - TP``;
* ``precision(t) = TP / (TP + FP + FN)`` (the DSB "precision", really a critical success index);
* the **DSB score** is the mean of ``precision(t)`` over t = 0.50, 0.55, ..., 0.95; **AP@0.5**
  is ``precision(0.5)`` alone (as the DSB literature names it).

An image with no reference and no predicted object scores 1 at every threshold (nothing to find,
nothing claimed); with objects on one side only it scores 0. Ids need not be consecutive.
Objects are class-agnostic (a per-class score would match within each class).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the DSB2018 IoU thresholds 0.50, 0.55, ..., 0.95
DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class InstanceScores:
    """Counts and matches of one image; ``matched[n]`` is TP at ``thresholds[n]``."""

    case: str
    n_true: int
    n_pred: int
    thresholds: tuple[float, ...]
    matched: tuple[int, ...]

    def precision(self, threshold: float) -> float:
        """TP / (TP + FP + FN) at one of :attr:`thresholds` (1.0 when both maps are empty)."""
        tp = self.matched[self.thresholds.index(round(threshold, 2))]
        denominator = self.n_true + self.n_pred - tp
        return 1.0 if denominator == 0 else tp / denominator

    @property
    def dsb_score(self) -> float:
        """The mean of :meth:`precision` over the thresholds."""
        return float(np.mean([self.precision(t) for t in self.thresholds]))

    @property
    def ap50(self) -> float:
        """``precision(0.5)``: AP@0.5 as the DSB literature calls it."""
        return self.precision(0.5)

    @property
    def matched50(self) -> int:
        """Matches at IoU > 0.5."""
        return self.matched[self.thresholds.index(0.5)]


def pair_ious(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, int, int]:
    """IoU of every overlapping (reference, prediction) object pair, and the object counts.

    Needs two non-negative integer arrays of one shape. Returns ``(ious, n_true, n_pred)`` with
    ``ious`` a 1D array holding one value per pair of objects that share at least one voxel.
    """
    from skimage.metrics import contingency_table

    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} != reference shape {reference.shape}")
    pred = _compact(prediction)
    ref = _compact(reference)
    table = contingency_table(ref, pred).tocoo()
    keep = (table.row > 0) & (table.col > 0)
    rows, cols, inter = table.row[keep], table.col[keep], table.data[keep]
    area_ref = np.bincount(ref.ravel(), minlength=1)
    area_pred = np.bincount(pred.ravel(), minlength=1)
    union = area_ref[rows] + area_pred[cols] - inter
    return inter / union, len(area_ref) - 1, len(area_pred) - 1


def _compact(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..n in increasing order (0 stays background), as intp."""
    ids, inverse = np.unique(np.asarray(labels), return_inverse=True)
    if ids.size and ids[0] < 0:
        raise ValueError("instance ids must be non-negative")
    offset = 0 if ids.size and ids[0] == 0 else 1
    return (inverse.reshape(labels.shape) + offset).astype(np.intp)


def score_instances(
    case: str, prediction: np.ndarray, reference: np.ndarray, thresholds: tuple[float, ...] = DSB_THRESHOLDS
) -> InstanceScores:
    """Match ``prediction`` to ``reference`` at each threshold (each must be >= 0.5, see the module)."""
    if min(thresholds) < 0.5:
        raise ValueError(f"thresholds below 0.5 need an assignment step; got {min(thresholds)}")
    ious, n_true, n_pred = pair_ious(prediction, reference)
    matched = tuple(int(np.count_nonzero(ious > t)) for t in thresholds)
    return InstanceScores(case, n_true, n_pred, tuple(thresholds), matched)
