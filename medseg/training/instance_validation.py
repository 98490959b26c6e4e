"""Validation of instance models through the shipped predictor: the DSB2018 score, AP@0.5, box mAP.

Every instance map scored here is made by :class:`medseg.inference.predictor.Predictor` (the object
``medseg predict`` runs), built around the network being trained, with ``medseg predict``'s
defaults; scores come from :func:`medseg.evaluation.instance_eval.evaluate_instance_volumes`, the
function ``medseg evaluate --instances`` runs.

* **Periodic** (:func:`validate_cached`): up to :data:`PERIODIC_CASES` cached, preprocessed
  validation cases (the first ones of the split, always the same), instances made on the
  preprocessed grid (:func:`medseg.inference.instance_predict.instances_preprocessed`) and scored
  against the cached instance maps: log columns and ``checkpoint_best.pt``.
* **Final** (:func:`validate_sources`, the figures in ``model.json``): every validation case read
  from its source files, predicted onto its own grid by ``Predictor.predict`` and scored against
  its instance map, so ``model.json`` holds what ``medseg predict`` + ``medseg evaluate --instances``
  report on these cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import InputError
from medseg.evaluation.boxes import box_map
from medseg.evaluation.instance_eval import InstanceEvaluation, evaluate_instance_volumes, image_boxes
from medseg.evaluation.instances import score_instances

if TYPE_CHECKING:
    from medseg.inference.predictor import Predictor
    from medseg.training.dataset import DatasetSpec

#: cached validation cases scored by the periodic validation
PERIODIC_CASES = 25


@dataclass(frozen=True)
class InstanceValidation:
    """The instance evaluation of the validation cases; ``mean`` (the DSB score) ranks checkpoints."""

    evaluation: InstanceEvaluation

    @property
    def mean(self) -> float:
        """The mean DSB2018 score over the validation images."""
        return float(self.evaluation.summary()["dsb_score"])

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(s.case for s in self.evaluation.images)

    def columns(self) -> dict[str, float]:
        """Log columns: DSB score, AP@0.5, box mAP and object counts."""
        s = self.evaluation.summary()
        return {
            "val_dsb_score": s["dsb_score"],
            "val_ap50": s["ap50"],
            "val_box_map": s["box_map"],
            "val_objects_true": s["true"],
            "val_objects_predicted": s["predicted"],
        }

    def metrics(self) -> dict[str, Any]:
        """``model.json`` metrics (rounded to 6 decimals)."""
        return {k: round(float(v), 6) if isinstance(v, float) else v for k, v in self.evaluation.summary().items()}


def validate_cached(
    predictor: Predictor, cases: Iterable[tuple[str, np.ndarray, np.ndarray]], limit: int = PERIODIC_CASES
) -> InstanceValidation:
    """Score ``(case_id, image (C,X,Y,Z), instance map (X,Y,Z))`` cases already preprocessed with the
    predictor's plan (at most ``limit`` of them)."""
    from medseg.inference.instance_predict import instances_preprocessed

    scores, boxes = [], []
    for n, (case_id, image, reference) in enumerate(cases):
        if n >= limit:
            break
        ids, object_scores = instances_preprocessed(predictor, np.asarray(image))
        reference = np.asarray(reference)
        scores.append(score_instances(case_id, ids, reference))
        boxes.append(image_boxes(ids, reference, object_scores))
    if not scores:
        raise ValueError("validation needs at least one case")
    return InstanceValidation(InstanceEvaluation(tuple(scores), box_map(boxes)))


def validate_sources(predictor: Predictor, dataset: DatasetSpec, case_ids: Sequence[str]) -> InstanceValidation:
    """Each validation case read from its files (``training.dataset.read_case``), predicted on its own
    grid and scored against its instance map. InputError for a case without a label."""
    from medseg.training.dataset import read_case

    scores, boxes = [], []
    for case_id in case_ids:
        images, reference = read_case(dataset.case(case_id), dataset)
        if reference is None:
            raise InputError(f"validation case {case_id} has no instance map; every validation case needs one")
        prediction = predictor.predict(images)
        if prediction.instances is None:
            raise ValueError("instance validation needs an instance model's predictor")
        image_scores, image_box = evaluate_instance_volumes(case_id, prediction.instances, reference, prediction.scores)
        scores.append(image_scores)
        boxes.append(image_box)
    if not scores:
        raise ValueError("validation needs at least one case")
    return InstanceValidation(InstanceEvaluation(tuple(scores), box_map(boxes)))
