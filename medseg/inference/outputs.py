"""Per-case outputs (labels, DICOM SEG, probabilities, statistics, instances) and the run manifest.

Every file is written atomically (a temp file beside the target, renamed on success). Names are
flat inside the output folder, keyed by the case id::

    <case>.nii.gz               labels on the exact source grid (+ <case>.json label names)
    <case>_seg.dcm              DICOM SEG (DICOM input only)
    <case>_probabilities.nii.gz 4D class probabilities (uint16, scl_slope 1/65535)
    <case>.ctbl, <case>_itksnap.txt  label colours and names for 3D Slicer / ITK-SNAP
    <case>.seg.nrrd             Slicer segmentation (``--seg-nrrd``)
    <case>_rtstruct.dcm         DICOM RTSTRUCT (``--rtstruct``, DICOM input only)
    <case>_stats.json / .csv    voxels, mL and source-image intensity statistics per label
    <case>_qc.png               three orthogonal slices with the overlay
    <case>_viewer.html          interactive NiiVue viewer of image + labels (assets in viewer/)
    <case>_instances.nii.gz/.csv  instance map and table (``--instances``)
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io import write_volume
from medseg.io.atomic import atomic_path, atomic_write_text
from medseg.io.nifti import save_nifti
from medseg.model.runtime import package_versions
from medseg.volume import Volume

OUTPUT_SUFFIXES = {
    "labels": ".nii.gz",
    "seg": "_seg.dcm",
    "rtstruct": "_rtstruct.dcm",
    "seg_nrrd": ".seg.nrrd",
    "slicer_ctbl": ".ctbl",
    "itksnap_labels": "_itksnap.txt",
    "viewer": "_viewer.html",
    "probabilities": "_probabilities.nii.gz",
    "stats_json": "_stats.json",
    "stats_csv": "_stats.csv",
    "qc": "_qc.png",
    "instances": "_instances.nii.gz",
    "instances_csv": "_instances.csv",
}
PROBABILITY_SCALE = 65535
#: Intensity statistics of the source image per label (and per instance), in this order.
INTENSITY_KEYS = ("intensity_mean", "intensity_std", "intensity_median", "intensity_p5", "intensity_p95")
STATS_COLUMNS = ("label", "name", "voxels", "volume_ml", *INTENSITY_KEYS)


def case_paths(out_dir: Path, case_id: str) -> dict[str, Path]:
    """The output path of every kind of output for ``case_id`` (not all are written)."""
    return {kind: Path(out_dir) / f"{case_id}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}


def planned_outputs(out_dir: Path, case_id: str) -> list[Path]:
    """Every file a case may write into ``out_dir``: :func:`case_paths`, the label-name sidecar and
    the outputs of instance models (:mod:`medseg.inference.objects`: ``<case>.png`` / ``.tif``
    instance maps of 2D images, object tables and QC picture)."""
    from medseg.evaluation.objects import OBJECTS_JSON_SUFFIX
    from medseg.inference.objects import OBJECTS_CSV_SUFFIX, OBJECTS_QC_SUFFIX
    from medseg.io.files import sidecar_path

    paths = case_paths(out_dir, case_id)
    objects = [
        Path(out_dir) / f"{case_id}{suffix}"
        for suffix in (".png", ".tif", OBJECTS_CSV_SUFFIX, OBJECTS_JSON_SUFFIX, OBJECTS_QC_SUFFIX)
    ]
    return [*paths.values(), sidecar_path(paths["labels"]), *objects]


def value_counts(array: np.ndarray) -> np.ndarray:
    """Occurrences of each value 0..max of a non-negative integer array (``np.bincount``); uint8
    arrays are counted by torch without an int64 copy (a 512x512x300 map: 0.06 s instead of 1.2 s)."""
    if array.size == 0:
        return np.zeros(1, np.int64)
    if array.dtype == np.uint8:
        import torch

        flat = array.ravel(order="K")  # a view when contiguous in either order
        with warnings.catch_warnings():  # read-only memory: torch warns, but bincount only reads it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.bincount(torch.from_numpy(flat)).numpy()
    return np.bincount(array.ravel().astype(np.int64, copy=False))


def label_stats(labels: Volume, names: Mapping[int, str], image: Volume | None = None) -> dict[str, Any]:
    """Voxel counts, volumes (mL) and, given the source ``image`` on the same grid, its intensity
    statistics (:data:`INTENSITY_KEYS`) per label: every named foreground label, found or not,
    plus any other value present. Needs an integer label volume; a 4D image gives the statistics
    of its first channel. Intensities are None for a label with no voxels.

    When the voxel size is unknown (``labels.meta.spacing_known`` False: a PNG, a TIFF without
    resolution tags) only counts are given: ``spacing_known`` False, no spacing, mm³ or mL.
    """
    array = np.asarray(labels.array)
    counts = value_counts(array)
    known = labels.meta.spacing_known
    voxel_mm3 = abs(float(np.linalg.det(labels.affine[:3, :3])))
    values = sorted({int(k) for k in names if int(k) != 0} | {int(v) for v in np.nonzero(counts)[0] if v != 0})
    intensities = intensity_stats(image, array, values) if image is not None and image.same_grid(labels) else {}
    rows = []
    for v in values:
        n = int(counts[v]) if v < len(counts) else 0
        row: dict[str, Any] = {"label": v, "name": names.get(v, f"label_{v}"), "voxels": n}
        if known:
            row["volume_ml"] = round(n * voxel_mm3 / 1000.0, 4)
        rows.append({**row, **intensities.get(v, {})})
    if not known:
        return {"shape": list(labels.spatial_shape), "spacing_known": False, "labels": rows}
    return {
        "shape": list(labels.spatial_shape),
        "spacing_mm": [round(s, 6) for s in labels.spacing],
        "voxel_volume_mm3": round(voxel_mm3, 6),
        "labels": rows,
    }


def intensity_stats(image: Volume, labels: np.ndarray, values: Sequence[int]) -> dict[int, dict[str, float | None]]:
    """Mean, standard deviation, median and 5th/95th percentiles of ``image`` inside each label value.

    Needs ``labels`` (non-negative integers) with ``image``'s spatial shape. Reads each label's
    bounding box only (``scipy.ndimage.find_objects``), so many labels cost about one pass.
    """
    import scipy.ndimage as ndi

    data = np.asarray(image.array)
    data = data[..., 0] if data.ndim == 4 else data
    top = max(values, default=0)
    boxes = (
        ndi.find_objects(labels if labels.dtype.kind in "iu" else labels.astype(np.int64), max_label=top) if top else []
    )
    result: dict[int, dict[str, float | None]] = {}
    for v in values:
        box = boxes[v - 1] if 0 < v <= len(boxes) else None
        inside = data[box][labels[box] == v].astype(np.float64) if box is not None else np.empty(0)
        result[v] = _summary(inside)
    return result


def _summary(values: np.ndarray) -> dict[str, float | None]:
    """The :data:`INTENSITY_KEYS` of a 1D array (all None when it is empty)."""
    if not values.size:
        return dict.fromkeys(INTENSITY_KEYS)
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    stats = (values.mean(), values.std(), median, p5, p95)
    return {key: round(float(x), 4) for key, x in zip(INTENSITY_KEYS, stats)}


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV atomically (columns default to the first row's keys)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    atomic_write_text(path, _csv_text(rows, columns))
    return Path(path)


def write_json(payload: Any, path: Path) -> Path:
    """Write indented JSON atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
    return Path(path)


def write_stats(stats: Mapping[str, Any], json_path: Path, csv_path: Path) -> None:
    """The statistics as JSON (everything) and CSV (one row per label; no volume column when the
    voxel size is unknown)."""
    write_json(stats, json_path)
    known = stats.get("spacing_known", True)
    write_csv(stats["labels"], csv_path, [c for c in STATS_COLUMNS if known or c != "volume_ml"])


def write_probabilities(probabilities: np.ndarray, reference: Volume, path: Path) -> Path:
    """Write (K, I, J, K) probabilities as a 4D NIfTI (I, J, K, class) on ``reference``'s grid.

    NIfTI has no float16, so values in [0, 1] are stored as uint16 with scl_slope 1/65535
    (as small as float16, 1.5e-5 resolution); readers that apply the slope get probabilities.
    """
    import nibabel as nib

    if probabilities.shape[1:] != reference.spatial_shape:
        raise ValueError(f"probabilities {probabilities.shape} do not match the grid {reference.spatial_shape}")
    data = np.empty((*reference.spatial_shape, probabilities.shape[0]), dtype=np.uint16)
    for c in range(probabilities.shape[0]):
        channel = np.clip(probabilities[c].astype(np.float32), 0.0, 1.0)
        data[..., c] = np.rint(channel * PROBABILITY_SCALE).astype(np.uint16)
    image = nib.Nifti1Image(data, reference.affine)
    image.set_qform(reference.affine, code=1)
    image.set_sform(reference.affine, code=1)
    image.header.set_slope_inter(1.0 / PROBABILITY_SCALE, 0.0)
    image.header.set_intent("estimate")
    with atomic_path(path) as tmp:
        save_nifti(image, tmp)
    return Path(path)


def write_labels(labels: Volume, path: Path) -> Path:
    """Write the label volume (and its label-name sidecar when names are set)."""
    return write_volume(labels, path)


def write_dicom_seg(
    labels: Volume,
    source_series: Any,
    path: Path,
    names: Mapping[int, str],
    model_name: str | None = None,
    codes: Mapping[int, Any] | None = None,
) -> Path:
    """Write a DICOM SEG referencing ``source_series`` (a ``DicomSeries``) via medseg.io.seg: segments
    named ``names`` and coded ``codes`` (SegmentCoding per label), made by model ``model_name``."""
    from medseg.io.seg import write_seg

    write_seg(labels, source_series, path, dict(names), model_name, codes)
    return Path(path)


def write_instances(
    instances: np.ndarray, rows: Iterable[Mapping[str, Any]], reference: Volume, map_path: Path, csv_path: Path
) -> None:
    """Write an instance map on ``reference``'s grid and its table."""
    write_volume(reference.with_array(instances, kind="label", label_names=None), map_path)
    columns = [
        "instance",
        "class",
        "name",
        "voxels",
        "volume_ml",
        "centroid_x_mm",
        "centroid_y_mm",
        "centroid_z_mm",
        "bbox_i",
        "bbox_j",
        "bbox_k",
        *INTENSITY_KEYS,
    ]
    write_csv(list(rows), csv_path, columns)


MANIFEST_NAME = "medseg_run.json"


def build_manifest(
    predictor: Any,
    output_options: Any,
    results: Sequence[Any],
    failures: Sequence[Mapping[str, str]],
    timings: Mapping[str, float],
    inputs: Sequence[str],
    command: Sequence[str] = (),
) -> dict[str, Any]:
    """A reproducibility record of one run: versions, device/backend, models, options, and per
    case its source, outputs, seconds per stage and suitability ``warnings`` (``results`` are
    CaseResult objects)."""
    import datetime as _dt
    from dataclasses import asdict

    return {
        "medseg_run": 1,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(command),
        "inputs": list(inputs),
        "versions": package_versions(),
        "predictor": predictor.describe(),
        "output_options": asdict(output_options),
        "timings": {k: round(float(v), 4) for k, v in timings.items()},
        "cases": [
            {
                "case_id": r.case_id,
                "source": r.source,
                "outputs": {k: str(v) for k, v in r.outputs.items()},
                "timings": r.timings,
                "labels": r.stats.get("labels", []),
                "warnings": r.stats.get("warnings", []),
            }
            for r in results
        ],
        "failures": list(failures),
    }
