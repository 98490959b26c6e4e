"""Turn one case's prediction into its files: post-processing, labels and their colour tables,
statistics, optional probabilities, DICOM SEG / RTSTRUCT, Slicer segmentation, instances, the QC
picture and the viewer page."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from medseg.inference.options import OutputOptions
from medseg.inference.outputs import (
    case_paths,
    intensity_stats,
    label_stats,
    write_dicom_seg,
    write_instances,
    write_labels,
    write_probabilities,
    write_stats,
)
from medseg.inference.postprocess import (
    PostprocessOptions,
    instance_map,
    largest_component_classes,
    postprocess,
    remap_names,
)
from medseg.io.files import sidecar_path
from medseg.volume import Volume

if TYPE_CHECKING:
    from medseg.inference.predictor import Prediction, Predictor
    from medseg.io.dicom import DicomSeries

log = logging.getLogger(__name__)
_warned: set[str] = set()

T = TypeVar("T")


def seg_skip_reason(labels: Volume, dicom: DicomSeries) -> str | None:
    """Why a DICOM SEG cannot reference this series (None when it can)."""
    if not np.asarray(labels.array).any():
        return "the segmentation is empty"
    if getattr(dicom, "resampled", False):
        return "the series was resampled onto a regular grid (gantry tilt or uneven slices)"
    return None


def _image2d_outputs(
    case_id: str,
    labels: Volume,
    names: Mapping[int, str],
    source: Path | None,
    paths: Mapping[str, Path],
    options: OutputOptions,
    stats: dict[str, Any],
    model_name: str | None,
    codes: Mapping[int, Any] | None,
) -> dict[str, Path]:
    """The DICOM outputs of an input that is not a DICOM series: a SEG of a single-frame 2D DICOM
    image (``source``, its file), nothing for other inputs; RTSTRUCT is skipped with the reason."""
    if options.rtstruct:
        why = "the input is not a DICOM series" if source is None else "a 2D DICOM image has no slices to contour"
        stats["rtstruct_skipped"] = why
        _warn_once("rtstruct-input", f"no RTSTRUCT written: {why} (an RTSTRUCT references DICOM slices)")
    if source is None or not options.dicom_seg:
        return {}
    if not np.asarray(labels.array).any():
        log.warning("%s: no DICOM SEG written: the segmentation is empty", case_id)
        stats["seg_skipped"] = "the segmentation is empty"
        return {}
    from medseg.io.seg import write_seg_image2d

    return {"seg": write_seg_image2d(labels, source, paths["seg"], names, model_name, codes)}


def dicom_image2d_source(image: Volume) -> Path | None:
    """The file a single-frame 2D DICOM image was read from (:mod:`medseg.io.dicom.image2d`), or
    None for any other input (a series, PNG/TIFF, NIfTI, arrays)."""
    if image.meta.extra.get("format") != "dicom" or image.spatial_shape[2] != 1 or not image.meta.source:
        return None
    path = Path(image.meta.source)
    return path if path.is_file() else None


def reading_notes(image: Volume) -> dict[str, Any]:
    """What the reader reported about an input image, for its statistics: how many files of its DICOM
    series could not be read (loaded with ``allow_missing_slices``; the log names them)."""
    missing = image.meta.extra.get("unreadable_files") or ()
    return {"unreadable_files": len(missing)} if missing else {}


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


def remapped_metadata(metadata: Mapping[int, T], remap: Mapping[int, int]) -> dict[int, T]:
    """Per-label metadata after ``--remap``, as :func:`remap_names` treats names: a label that stays
    keeps its own, a target that was no label takes its source's."""
    out = {k: v for k, v in metadata.items() if remap.get(k, k) == k}
    for src, dst in remap.items():
        if dst != 0 and dst not in out and src in metadata:
            out[dst] = metadata[src]
    return out


def write_case_outputs(
    predictor: Predictor,
    case_id: str,
    image: Volume,
    prediction: Prediction,
    dicom: DicomSeries | None,
    out_dir: Path,
    options: OutputOptions,
) -> tuple[dict[str, Path], dict[str, Any], dict[str, float]]:
    """Post-process ``prediction.labels`` and write every asked-for output of one case.

    Needs the predictor (labels, validated post-processing), the first input image (for the
    QC picture, the intensity statistics and the viewer) and the loaded ``DicomSeries`` when the
    input was DICOM (else None). Returns (outputs by kind, statistics, seconds for postprocess and write).
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
    stats = {**label_stats(labels, names, image), **reading_notes(image)}
    stats["warnings"] = [finding.to_dict() for finding in prediction.warnings]
    table = {int(row["label"]): str(row["name"]) for row in stats["labels"]}
    outputs.update(_colour_outputs(labels, table, paths, options))
    stats["postprocessing"] = {
        "largest_component_classes": classes,
        "min_size_mm3": post.min_size_mm3,
        "fill_holes": post.fill_holes,
        "remap": {str(k): v for k, v in post.remap.items()},
    }
    if options.probabilities and prediction.probabilities is not None:
        outputs["probabilities"] = write_probabilities(prediction.probabilities, labels, paths["probabilities"])
    codes = remapped_metadata(predictor.label_metadata, post.remap)
    outputs.update(
        write_dicom_outputs(case_id, labels, names, dicom, paths, options, stats, predictor.model_name, codes, image)
    )
    if post.instances:
        outputs.update(_instance_outputs(array, labels, image, post.instances, names, paths, stats))
    write_stats(stats, paths["stats_json"], paths["stats_csv"])
    outputs["stats_json"], outputs["stats_csv"] = paths["stats_json"], paths["stats_csv"]
    if options.qc:
        from medseg.inference.qc import render_qc

        outputs["qc"] = render_qc(image, labels, names, paths["qc"], title=case_id)
    if options.viewer:
        outputs.update(_viewer_output(case_id, image, labels, table, paths["viewer"], options, stats))
    timings["write"] = time.perf_counter() - start
    return outputs, stats, timings


def _colour_outputs(
    labels: Volume, table: Mapping[int, str], paths: Mapping[str, Path], options: OutputOptions
) -> dict[str, Path]:
    """The Slicer and ITK-SNAP colour tables beside the labels, and the ``.seg.nrrd`` when asked."""
    from medseg.io.colour_tables import write_colour_tables

    outputs = write_colour_tables(table, paths["labels"])
    if options.seg_nrrd:
        from medseg.io.segnrrd import write_labels_seg_nrrd

        outputs["seg_nrrd"] = write_labels_seg_nrrd(labels, paths["seg_nrrd"], table)
    return outputs


def write_dicom_outputs(
    case_id: str,
    labels: Volume,
    names: Mapping[int, str],
    dicom: DicomSeries | None,
    paths: Mapping[str, Path],
    options: OutputOptions,
    stats: dict[str, Any],
    model_name: str | None = None,
    codes: Mapping[int, Any] | None = None,
    image: Volume | None = None,
) -> dict[str, Path]:
    """DICOM SEG (segments named ``names``, coded ``codes``, made by ``model_name``) and RTSTRUCT for
    DICOM input: a series (``dicom``), or a single-frame 2D DICOM image (``image`` read from one,
    see :func:`dicom_image2d_source`; SEG only). A skipped one is logged and noted in ``stats``."""
    outputs: dict[str, Path] = {}
    if dicom is None:
        source = dicom_image2d_source(image) if image is not None else None
        return _image2d_outputs(case_id, labels, names, source, paths, options, stats, model_name, codes)
    if options.dicom_seg:
        reason = seg_skip_reason(labels, dicom)
        if reason:
            log.warning("%s: no DICOM SEG written: %s", case_id, reason)
            stats["seg_skipped"] = reason
        else:
            outputs["seg"] = write_dicom_seg(labels, dicom, paths["seg"], names, model_name, codes)
    if options.rtstruct:
        from medseg.io.rtstruct_writer import rtstruct_skip_reason, write_rtstruct

        reason = rtstruct_skip_reason(labels, dicom)
        if reason:
            log.warning("%s: no RTSTRUCT written: %s", case_id, reason)
            stats["rtstruct_skipped"] = reason
        else:
            outputs["rtstruct"] = write_rtstruct(labels, dicom, paths["rtstruct"], names)
    return outputs


def _instance_outputs(
    array: np.ndarray,
    labels: Volume,
    image: Volume,
    classes: tuple[int, ...],
    names: Mapping[int, str],
    paths: Mapping[str, Path],
    stats: dict[str, Any],
) -> dict[str, Path]:
    """The instance map and table, with the image's intensity statistics per instance."""
    instances, table = instance_map(array, labels.affine, classes, names)
    rows = [inst.row() for inst in table]
    if image.same_grid(labels):
        intensities = intensity_stats(image, instances, [row["instance"] for row in rows])
        rows = [{**row, **intensities[row["instance"]]} for row in rows]
    write_instances(instances, rows, labels, paths["instances"], paths["instances_csv"])
    stats["instances"] = rows
    return {"instances": paths["instances"], "instances_csv": paths["instances_csv"]}


def _viewer_output(
    case_id: str,
    image: Volume,
    labels: Volume,
    table: Mapping[int, str],
    path: Path,
    options: OutputOptions,
    stats: dict[str, Any],
) -> dict[str, Path]:
    """The case's NiiVue viewer page, or nothing (noted in ``stats``) when the bundle is not installed."""
    from medseg.viewer import ViewerUnavailable, write_case_viewer

    if not image.same_grid(labels):
        stats["viewer_skipped"] = "the image and the labels are not on one grid"
        return {}
    try:
        assets = Path(options.viewer_assets) if options.viewer_assets else None
        return {"viewer": write_case_viewer(case_id, image, labels, table, path, assets)}
    except ViewerUnavailable as exc:
        stats["viewer_skipped"] = str(exc)
        _warn_once("viewer", f"no viewer pages written: {exc}")
        return {}


def _warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message)
