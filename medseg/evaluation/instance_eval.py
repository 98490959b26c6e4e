"""``medseg evaluate --instances``: instance maps against reference instance maps, per image and overall.

Per image (:mod:`medseg.evaluation.instances`): object counts, matches at IoU > 0.5, AP@0.5 and the
DSB2018 score. Over all images: the mean DSB score and mean AP@0.5 (the competition's averaging:
every image weighs the same), summed counts, and COCO box mAP / AP50 / AP75
(:mod:`medseg.evaluation.boxes`). Predicted scores are read from ``<case>_objects.json`` beside a
prediction file when it exists (``medseg.inference.objects`` writes it); otherwise every predicted
object scores 1. Pairs, grids and file formats are those of ``medseg evaluate``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.evaluation.boxes import BoxAP, ImageBoxes, box_map
from medseg.evaluation.evaluate import check_same_grid
from medseg.evaluation.instances import InstanceScores, score_instances
from medseg.evaluation.objects import OBJECTS_JSON_SUFFIX, instance_boxes, read_object_scores
from medseg.evaluation.pairs import CasePair, case_name, match_cases
from medseg.io.atomic import atomic_write_text
from medseg.volume import Volume


@dataclass(frozen=True)
class InstanceEvaluation:
    """Per-image scores and the box AP over all images."""

    images: tuple[InstanceScores, ...]
    boxes: BoxAP

    def summary(self) -> dict[str, float | int]:
        """Means over images (DSB score, AP@0.5), summed counts, box mAP/AP50/AP75."""
        images = self.images
        mean = lambda values: float(np.mean(values)) if values else math.nan  # noqa: E731
        return {
            "images": len(images),
            "dsb_score": mean([s.dsb_score for s in images]),
            "ap50": mean([s.ap50 for s in images]),
            "box_map": self.boxes.map,
            "box_ap50": self.boxes.ap50,
            "box_ap75": self.boxes.ap75,
            "true": sum(s.n_true for s in images),
            "predicted": sum(s.n_pred for s in images),
            "matched50": sum(s.matched50 for s in images),
        }


def image_boxes(prediction: np.ndarray, reference: np.ndarray, scores: dict[int, float] | None) -> ImageBoxes:
    """The boxes of both maps (2D boxes for one-slice maps) and the prediction scores (default 1)."""
    squeeze = prediction.ndim == 3 and prediction.shape[2] == 1
    pred = prediction[:, :, 0] if squeeze else prediction
    ref = reference[:, :, 0] if squeeze else reference
    pred_ids, pred_boxes = instance_boxes(pred)
    _, true_boxes = instance_boxes(ref)
    values = np.array([(scores or {}).get(int(i), 1.0) for i in pred_ids], dtype=np.float64)
    return ImageBoxes(true_boxes, pred_boxes, values)


def evaluate_instance_volumes(
    case: str, prediction: Volume, reference: Volume, scores: dict[int, float] | None = None
) -> tuple[InstanceScores, ImageBoxes]:
    """Score one predicted instance map against its reference (same grid, checked)."""
    prediction, reference = prediction.require_3d(), reference.require_3d()
    check_same_grid(prediction, reference, case)
    pred, ref = np.asarray(prediction.array), np.asarray(reference.array)
    return score_instances(case, pred, ref), image_boxes(pred, ref, scores)


def scores_beside(prediction: Path) -> dict[int, float] | None:
    """Scores from ``<case>_objects.json`` beside a prediction file, or None."""
    if not prediction.is_file():
        return None
    return read_object_scores(prediction.with_name(case_name(prediction) + OBJECTS_JSON_SUFFIX))


def evaluate_instance_pair(pair: CasePair) -> tuple[InstanceScores, ImageBoxes]:
    """Read one prediction/reference pair as instance maps and score it."""
    from medseg.io import read_volume

    prediction = read_volume(pair.prediction, kind="label")
    reference = read_volume(pair.reference, kind="label")
    return evaluate_instance_volumes(pair.case, prediction, reference, scores_beside(pair.prediction))


def evaluate_instances(
    prediction: str | Path, reference: str | Path, on_case: Callable[[InstanceScores], None] | None = None
) -> InstanceEvaluation:
    """Evaluate a prediction file/folder against a reference file/folder of instance maps."""
    scores, boxes = [], []
    for pair in match_cases(Path(prediction), Path(reference)):
        image_scores, image_box = evaluate_instance_pair(pair)
        scores.append(image_scores)
        boxes.append(image_box)
        if on_case is not None:
            on_case(image_scores)
    return InstanceEvaluation(tuple(scores), box_map(boxes))


# ------------------------------------------------------------------------------ reports
INSTANCE_COLUMNS = ("case", "true", "predicted", "matched50", "ap50", "dsb_score")


def instance_csv(images: Sequence[InstanceScores]) -> str:
    """One row per image: counts, AP@0.5, DSB score and the precision at every threshold."""
    thresholds = images[0].thresholds if images else ()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*INSTANCE_COLUMNS, *(f"precision_{t:.2f}" for t in thresholds)])
    for s in images:
        writer.writerow(
            [
                s.case,
                s.n_true,
                s.n_pred,
                s.matched50,
                f"{s.ap50:.6g}",
                f"{s.dsb_score:.6g}",
                *(f"{s.precision(t):.6g}" for t in s.thresholds),
            ]
        )
    return buffer.getvalue()


def write_instance_reports(evaluation: InstanceEvaluation, csv_path: Path) -> Path:
    """Write the per-image CSV and the summary JSON beside it (``metrics.csv`` -> ``metrics_summary.json``)."""
    atomic_write_text(csv_path, instance_csv(evaluation.images))
    summary_path = csv_path.with_name(csv_path.stem + "_summary.json")
    payload = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in evaluation.summary().items()}
    atomic_write_text(summary_path, json.dumps(payload, indent=2) + "\n")
    return summary_path


def format_instance_summary(evaluation: InstanceEvaluation) -> str:
    """The printed summary: image count, DSB score, AP@0.5, box mAP/AP50/AP75 and counts."""
    s = evaluation.summary()
    return "\n".join(
        [
            f"{s['images']} image(s); objects: {s['true']} true, {s['predicted']} predicted, {s['matched50']} matched at IoU > 0.5",
            f"DSB score (mean IoU 0.50-0.95): {s['dsb_score']:.4f}",
            f"AP@0.5 (TP/(TP+FP+FN)):          {s['ap50']:.4f}",
            f"box mAP (COCO 0.50:0.95):        {s['box_map']:.4f}   AP50 {s['box_ap50']:.4f}   AP75 {s['box_ap75']:.4f}",
        ]
    )
