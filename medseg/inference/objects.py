"""Detection output of one image or volume: its instance map, the object table and a QC picture.

Written flat into the output folder, keyed by the case id, every file atomically::

    <case>.png               2D: uint16 instance map, exactly the input's H x W (.tif above 65535 ids)
    <case>.nii.gz            3D: the instance map on the source grid
    <case>_objects.csv       one row per object (columns: medseg.evaluation.objects)
    <case>_objects.json      the same rows with the image geometry (read back by `evaluate --instances`)
    <case>_objects_qc.png    outlines and ids over the image (3D: the three middle slices)

:func:`write_detection_outputs` is the one call ``predict`` / ``batch`` need per case.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.evaluation.objects import OBJECTS_JSON_SUFFIX, ObjectTable, measure_objects
from medseg.inference.outputs import write_csv, write_json
from medseg.io import write_volume

if TYPE_CHECKING:
    from medseg.volume import Volume

OBJECTS_CSV_SUFFIX = "_objects.csv"
OBJECTS_QC_SUFFIX = "_objects_qc.png"


def instance_map_path(out_dir: Path, case_id: str, instances: Volume) -> Path:
    """``<case>.png`` for a one-slice map (``.tif`` beyond 65535 ids), ``<case>.nii.gz`` for 3D."""
    if instances.spatial_shape[2] != 1:
        return Path(out_dir) / f"{case_id}.nii.gz"
    top = int(np.asarray(instances.array).max(initial=0))
    return Path(out_dir) / f"{case_id}{'.png' if top <= 65535 else '.tif'}"


def write_object_table(table: ObjectTable, csv_path: Path, json_path: Path) -> None:
    """The table as CSV (unknown values empty) and JSON (unknown values ``null``), atomically."""
    write_csv(table.rows(), csv_path, table.columns())
    write_json(table.to_json(), json_path)


def write_detection_outputs(
    out_dir: Path,
    case_id: str,
    image: Volume,
    instances: Volume,
    classes: Mapping[int, int] | None = None,
    scores: Mapping[int, float] | None = None,
    qc: bool = True,
) -> dict[str, Path]:
    """Write the instance map, object table (CSV + JSON) and, when ``qc``, the QC picture of one case.

    Needs ``instances`` (integer ids, 0 = background) on ``image``'s grid; ``classes`` / ``scores``
    per instance id are optional. Returns the written paths by kind
    (``instances``, ``objects_csv``, ``objects_json``, ``objects_qc``).
    """
    from medseg.inference.objects_qc import render_objects_qc

    out_dir = Path(out_dir)
    labels = instances if instances.kind == "label" else instances.as_label()
    table = measure_objects(labels, image, classes, scores, case=case_id)
    paths = {
        "instances": instance_map_path(out_dir, case_id, labels),
        "objects_csv": out_dir / f"{case_id}{OBJECTS_CSV_SUFFIX}",
        "objects_json": out_dir / f"{case_id}{OBJECTS_JSON_SUFFIX}",
    }
    write_volume(labels.with_meta(label_names=None), paths["instances"])
    write_object_table(table, paths["objects_csv"], paths["objects_json"])
    if qc:
        paths["objects_qc"] = render_objects_qc(image, labels, out_dir / f"{case_id}{OBJECTS_QC_SUFFIX}", title=case_id)
    return paths
