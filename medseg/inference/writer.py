"""Turn one case's prediction into its files: post-processing, labels, statistics, optional
probabilities, DICOM SEG, instances and the QC picture."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.inference.options import OutputOptions
from medseg.inference.outputs import (case_paths, label_stats, write_dicom_seg, write_instances, write_labels,
                                      write_probabilities, write_stats)
from medseg.inference.postprocess import (PostprocessOptions, instance_map, largest_component_classes, postprocess,
                                          remap_names)
from medseg.io.files import sidecar_path
from medseg.volume import Volume

if TYPE_CHECKING:
    from medseg.inference.predictor import Prediction, Predictor
    from medseg.io.dicom import DicomSeries

log = logging.getLogger(__name__)


def seg_skip_reason(labels: Volume, dicom: DicomSeries) -> str | None:
    """Why a DICOM SEG cannot reference this series (None when it can)."""
    if not np.asarray(labels.array).any():
        return "the segmentation is empty"
    if getattr(dicom, "resampled", False):
        return "the series was resampled onto a regular grid (gantry tilt or uneven slices)"
    return None


@dataclass(frozen=True)
class FinishedLabels:
    """Post-processed labels (label names in their meta, remapped when asked), the names, and the
    classes whose largest component was kept."""

    labels: Volume
    names: dict[int, str]
    largest_component_classes: list[int]


def finish_labels(predictor: Predictor, labels: Volume, post: PostprocessOptions) -> FinishedLabels:
    """Apply the post-processing of ``post`` to predicted ``labels`` exactly as ``medseg predict`` does
    (``largest_component="auto"`` uses the classes the model's validation chose)."""
    classes = largest_component_classes(post.largest_component, predictor.postprocessing, predictor.labels)
    array = postprocess(labels.array, labels.spacing, post, classes)
    names = remap_names(predictor.labels, post.remap)
    return FinishedLabels(labels.with_array(array, label_names=names), names, classes)


def write_case_outputs(predictor: Predictor, case_id: str, image: Volume, prediction: Prediction,
                       dicom: DicomSeries | None, out_dir: Path,
                       options: OutputOptions) -> tuple[dict[str, Path], dict[str, Any], dict[str, float]]:
    """Post-process ``prediction.labels`` and write every asked-for output of one case.

    Needs the predictor (labels, validated post-processing), the first input image (for the
    QC picture) and the loaded ``DicomSeries`` when the input was DICOM (else None).
    Returns (outputs by kind, statistics, seconds for postprocess and write).
    """
    start = time.perf_counter()
    post = options.postprocess
    finished = finish_labels(predictor, prediction.labels, post)
    labels, names, classes = finished.labels, finished.names, finished.largest_component_classes
    array = labels.array
    timings = {"postprocess": time.perf_counter() - start}

    start = time.perf_counter()
    paths = case_paths(out_dir, case_id)
    outputs: dict[str, Path] = {"labels": write_labels(labels, paths["labels"])}
    if sidecar_path(paths["labels"]).is_file():
        outputs["label_names"] = sidecar_path(paths["labels"])
    stats = label_stats(labels, names)
    stats["warnings"] = [finding.to_dict() for finding in prediction.warnings]
    stats["postprocessing"] = {"largest_component_classes": classes, "min_size_mm3": post.min_size_mm3,
                               "fill_holes": post.fill_holes, "remap": {str(k): v for k, v in post.remap.items()}}
    if options.probabilities and prediction.probabilities is not None:
        outputs["probabilities"] = write_probabilities(prediction.probabilities, labels, paths["probabilities"])
    if dicom is not None and options.dicom_seg:
        reason = seg_skip_reason(labels, dicom)
        if reason:
            log.warning("%s: no DICOM SEG written: %s", case_id, reason)
            stats["seg_skipped"] = reason
        else:
            outputs["seg"] = write_dicom_seg(labels, dicom, paths["seg"], names)
    if post.instances:
        instances, table = instance_map(array, labels.affine, post.instances, names)
        rows = [inst.row() for inst in table]
        write_instances(instances, rows, labels, paths["instances"], paths["instances_csv"])
        outputs["instances"], outputs["instances_csv"] = paths["instances"], paths["instances_csv"]
        stats["instances"] = rows
    write_stats(stats, paths["stats_json"], paths["stats_csv"])
    outputs["stats_json"], outputs["stats_csv"] = paths["stats_json"], paths["stats_csv"]
    if options.qc:
        from medseg.inference.qc import render_qc

        outputs["qc"] = render_qc(image, labels, names, paths["qc"], title=case_id)
    timings["write"] = time.perf_counter() - start
    return outputs, stats, timings
