"""Evaluate predicted label maps against references: per case, per class Dice / HD95 / NSD."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import GeometryError
from medseg.evaluation.metrics import NEITHER, ClassMetrics, class_metrics
from medseg.evaluation.pairs import CasePair, match_cases
from medseg.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseScores:
    """All evaluated classes of one case, in label order; ``spacing`` in mm."""

    case: str
    spacing: tuple[float, float, float]
    metrics: tuple[ClassMetrics, ...]


def check_same_grid(prediction: Volume, reference: Volume, case: str) -> None:
    """GeometryError unless prediction and reference share shape and affine (within 1e-3 mm)."""
    if not prediction.same_grid(reference):
        raise GeometryError(
            f"case {case}: the prediction grid (shape {prediction.spatial_shape}, spacing "
            f"{tuple(round(s, 4) for s in prediction.spacing)}) differs from the reference grid (shape "
            f"{reference.spatial_shape}, spacing {tuple(round(s, 4) for s in reference.spacing)}) or its affine; "
            "resample the prediction onto the reference grid (nearest neighbour) first"
        )


def evaluate_volumes(
    case: str, prediction: Volume, reference: Volume, classes: Sequence[int] | None = None, tolerance_mm: float = 1.0
) -> CaseScores:
    """Metrics of one case; ``classes`` default to the non-zero values found in either volume."""
    prediction, reference = prediction.require_3d(), reference.require_3d()
    check_same_grid(prediction, reference, case)
    if not reference.meta.spacing_known:
        log.warning(
            "case %s: the pixel size is unknown (e.g. a PNG): HD95 and the NSD tolerance are in pixels, not mm", case
        )
    pred, ref = np.asarray(prediction.array), np.asarray(reference.array)
    if classes is None:
        classes = sorted(int(v) for v in set(np.unique(pred)) | set(np.unique(ref)) if v != 0)
    metrics = class_metrics(pred, ref, list(classes), reference.spacing, tolerance_mm)
    return CaseScores(case, reference.spacing, tuple(metrics))


def evaluate_pair(pair: CasePair, classes: Sequence[int] | None = None, tolerance_mm: float = 1.0) -> CaseScores:
    """Read one prediction/reference pair as label volumes and evaluate it."""
    from medseg.io import read_volume

    prediction = read_volume(pair.prediction, kind="label")
    reference = read_volume(pair.reference, kind="label")
    return evaluate_volumes(pair.case, prediction, reference, classes, tolerance_mm)


def fill_absent_classes(results: Sequence[CaseScores]) -> list[CaseScores]:
    """Give every case every class seen anywhere: a class absent from both sides of a case scores
    Dice 1, HD95 0, NSD 1 (presence "neither")."""
    every = sorted({m.label for r in results for m in r.metrics})
    filled = []
    for result in results:
        have = {m.label: m for m in result.metrics}
        metrics = tuple(have.get(c) or ClassMetrics(c, 1.0, 0.0, 1.0, NEITHER, 0, 0) for c in every)
        filled.append(CaseScores(result.case, result.spacing, metrics))
    return filled


def evaluate(
    prediction: str | Path,
    reference: str | Path,
    classes: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
    on_case: Callable[[CaseScores], None] | None = None,
) -> list[CaseScores]:
    """Evaluate a prediction file/folder against a reference file/folder (matched by case name).

    ``classes`` None: every non-zero label value found in any case (a class absent from both
    sides of a case counts as "neither"). ``on_case`` is called after each case (progress).
    """
    results = []
    for pair in match_cases(Path(prediction), Path(reference)):
        results.append(evaluate_pair(pair, classes, tolerance_mm))
        if on_case is not None:
            on_case(results[-1])
    return results if classes is not None else fill_absent_classes(results)
