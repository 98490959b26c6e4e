"""Validation through the shipped predictor: the scores a run reports are the product's scores.

Every prediction here is made by :class:`medseg.inference.predictor.Predictor`, the object
``medseg predict`` uses, built around the network being trained
(:func:`validation_predictor`: PyTorch backend on the trainer's runtime, ``medseg predict``'s
defaults otherwise: TTA off, overlap 0.5, Gaussian blending, default tiles per call).

* **Periodic validation** (:func:`validate_preprocessed`, every ``validation.every`` epochs: log
  columns and the best checkpoint) runs ``Predictor.predict_preprocessed`` on the cached
  preprocessed arrays (no decoding, no inverse), argmax, and scores with
  :func:`medseg.evaluation.class_dice`.
* **Final validation** (:func:`validate_source`, the figures written to ``model.json``) reads
  every validation case's source image(s) and label, runs ``Predictor.predict`` (labels on the
  exact source grid) and scores with :func:`medseg.evaluation.evaluate_volumes`, the function
  ``medseg evaluate`` runs (a class absent from both sides scores Dice 1). Each case is scored
  as predicted and after ``medseg predict --largest-component on`` (the very ``postprocess``
  call); :func:`decide_postprocessing` keeps the largest component for a class where that
  raises its mean Dice (nnU-Net's rule), and :meth:`ValidationResult.with_postprocessing` gives
  the scores of ``--largest-component auto`` with that decision: what ``medseg predict`` (default
  options, PyTorch backend) followed by ``medseg evaluate`` reports on these cases.
  (Keeping a class's largest component only sets voxels of that class to background, so each
  class's Dice depends only on whether its own class is post-processed.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import InputError
from medseg.evaluation import class_dice, evaluate_volumes
from medseg.inference.options import PredictOptions
from medseg.inference.postprocess import (
    MODEL_LARGEST_COMPONENT_KEY,
    PostprocessOptions,
    largest_component_classes,
    postprocess,
)
from medseg.inference.predictor import Predictor

if TYPE_CHECKING:
    from torch import nn

    from medseg.model.folder import ModelSpec
    from medseg.model.plan import Plan
    from medseg.model.runtime import Runtime
    from medseg.training.dataset import DatasetSpec
    from medseg.volume import Volume

#: how validation runs the predictor: ``medseg predict``'s defaults with the PyTorch backend
VALIDATION_OPTIONS = PredictOptions(backend="torch")


@dataclass(frozen=True)
class ValidationResult:
    """Dice per case (rows, in ``case_ids`` order) and foreground class (columns, ``classes``),
    as predicted (``dice``) and, when scored, after keeping the largest component of every
    class (``dice_lcc``)."""

    case_ids: tuple[str, ...]
    classes: tuple[int, ...]
    dice: np.ndarray
    dice_lcc: np.ndarray | None = None

    @property
    def mean_per_class(self) -> np.ndarray:
        """Mean Dice of each class over the cases."""
        return self.dice.mean(0)

    @property
    def mean(self) -> float:
        """Mean over classes of the per-class mean Dice: the run's validation score."""
        return float(self.mean_per_class.mean())

    def with_postprocessing(self, keep_largest: Sequence[int]) -> ValidationResult:
        """The scores with the largest component kept for the classes ``keep_largest`` only.

        Needs ``dice_lcc`` (ValueError without it). Promises, per class, the ``dice_lcc`` column
        for the listed classes and the ``dice`` column for the others.
        """
        if self.dice_lcc is None:
            raise ValueError("this validation did not score keep-largest-component")
        chosen = np.array([c in set(keep_largest) for c in self.classes])
        return ValidationResult(self.case_ids, self.classes, np.where(chosen, self.dice_lcc, self.dice))


def validation_predictor(network: nn.Module, plan: Plan, spec: ModelSpec, runtime: Runtime) -> Predictor:
    """The predictor validation runs: ``network`` as it trains (no copy), on ``runtime``, with
    :data:`VALIDATION_OPTIONS`."""
    return Predictor.from_network(network, plan, spec, VALIDATION_OPTIONS, runtime=runtime)


def validation_settings(predictor: Predictor) -> dict[str, Any]:
    """How the final validation predicted and post-processed, for ``model.json``'s metrics."""
    return {
        "predictor": "medseg.inference.Predictor",
        "grid": "source",
        "backend": predictor.models[0].backend.name,
        "precision": predictor.runtime.precision,
        "tta": predictor.options.tta,
        "overlap": predictor.options.overlap,
        "largest_component": PostprocessOptions().largest_component,
    }


def validate_preprocessed(
    predictor: Predictor, cases: Iterable[tuple[str, np.ndarray, np.ndarray]], classes: Sequence[int]
) -> ValidationResult:
    """Dice of ``classes`` for every ``(case_id, image (C,X,Y,Z), label (X,Y,Z))`` already
    preprocessed with the predictor's plan (the periodic validation; no post-processing)."""
    ids, rows = [], []
    for case_id, image, label in cases:
        labels = predictor.predict_preprocessed(image).argmax(0)
        ids.append(case_id)
        rows.append(class_dice(labels, np.asarray(label), classes))
    if not ids:
        raise ValueError("validation needs at least one case")
    return ValidationResult(tuple(ids), tuple(classes), np.array(rows, dtype=np.float64))


def largest_component_labels(labels: Volume, names: dict[int, str]) -> Volume:
    """``labels`` post-processed as ``medseg predict --largest-component on`` does."""
    options = PostprocessOptions(largest_component="on")
    classes = largest_component_classes(options.largest_component, {}, names)
    return labels.with_array(postprocess(np.asarray(labels.array), labels.spacing, options, classes))


def score_case(
    case_id: str, prediction: Volume, reference: Volume, classes: Sequence[int], names: dict[int, str]
) -> tuple[list[float], list[float]]:
    """Dice of ``classes`` as predicted and after keeping every class's largest component, both
    from :func:`medseg.evaluation.evaluate_volumes` (prediction and reference on one grid)."""
    plain = evaluate_volumes(case_id, prediction, reference, classes)
    kept = evaluate_volumes(case_id, largest_component_labels(prediction, names), reference, classes)
    return [m.dice for m in plain.metrics], [m.dice for m in kept.metrics]


def validate_source(predictor: Predictor, dataset: DatasetSpec, case_ids: Sequence[str]) -> ValidationResult:
    """The final validation: each case's source images and label read as Volumes
    (``training.dataset.read_case``), labels predicted on the source grid, scored with and
    without keep-largest-component for every foreground class of the predictor.

    Needs labelled cases of ``dataset`` (InputError naming a case without a label).
    """
    from medseg.training.dataset import read_case

    names = predictor.labels
    classes = sorted(c for c in names if c != 0)
    rows, rows_lcc = [], []
    for case_id in case_ids:
        images, reference = read_case(dataset.case(case_id), dataset)
        if reference is None:
            raise InputError(f"validation case {case_id} has no label; every validation case needs one")
        plain, kept = score_case(case_id, predictor.predict(images).labels, reference, classes, names)
        rows.append(plain)
        rows_lcc.append(kept)
    if not rows:
        raise ValueError("validation needs at least one case")
    return ValidationResult(
        tuple(case_ids), tuple(classes), np.array(rows, dtype=np.float64), np.array(rows_lcc, dtype=np.float64)
    )


def decide_postprocessing(result: ValidationResult, labels: dict[int, str]) -> dict[str, Any]:
    """nnU-Net's rule, per class: keep the largest component where it raises the mean validation Dice.

    Returns ``{"keep_largest_component": [classes], "dice_without": {name: d}, "dice_with": {name: d}}``
    (only the first key when ``result`` has no keep-largest-component scores).
    """
    if result.dice_lcc is None:
        return {MODEL_LARGEST_COMPONENT_KEY: []}
    without, with_ = result.dice.mean(0), result.dice_lcc.mean(0)
    chosen = [c for c, a, b in zip(result.classes, without, with_) if b > a]
    names = [labels.get(c, str(c)) for c in result.classes]
    return {
        MODEL_LARGEST_COMPONENT_KEY: chosen,
        "dice_without": {n: round(float(d), 6) for n, d in zip(names, without)},
        "dice_with": {n: round(float(d), 6) for n, d in zip(names, with_)},
    }
