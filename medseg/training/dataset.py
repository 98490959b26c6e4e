"""Training datasets: the MSD / nnU-Net raw folder layout and CSV manifests, read into checked Volumes.

Two layouts are understood (docs/training-data.md has examples):

* an **MSD or nnU-Net raw folder**: ``dataset.json`` (``labels``; ``modality`` or
  ``channel_names``) with ``imagesTr/`` and ``labelsTr/``. Channels are ``_0000``, ``_0001``...
  suffixed files or one 4D image per case (channels along the 4th axis).
* a **CSV manifest**: columns ``case`` (optional), ``image`` or ``image_0000``, ``image_0001``...,
  and ``label``; paths relative to the CSV; images may be NIfTI/NRRD/MHA files or DICOM series
  folders, labels may be volume files, DICOM SEG or RTSTRUCT. Label names and channel names come
  from an optional sidecar ``<manifest>.json`` (same keys as ``dataset.json``).

:func:`read_case` applies the checks training relies on and names the case when one fails.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import GeometryError, InputError, MedsegError
from medseg.io.atomic import full_suffix
from medseg.volume import Volume

log = logging.getLogger(__name__)

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_IMAGE_COLUMN = re.compile(r"^image(?:_(?P<channel>\d{4}))?$")


@dataclass(frozen=True)
class Case:
    """One training case: its image file(s) (one per channel, or one 4D file) and optional label."""

    id: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its cases, label names (0 = background included) and one modality per channel.

    ``instances``: the label files are instance maps (one id per object, any number of objects;
    ``labels`` then names the object classes), see :mod:`medseg.training.instances`.
    """

    name: str
    cases: tuple[Case, ...]
    labels: dict[int, str]
    channels: tuple[str, ...]
    instances: bool = False

    def __post_init__(self) -> None:
        ids = [c.id for c in self.cases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InputError(
                f"dataset {self.name!r} lists case id(s) {', '.join(duplicates)} more than once; make ids unique"
            )
        if not self.cases:
            raise InputError(f"dataset {self.name!r} has no cases")
        if 0 not in self.labels or len(self.labels) < 2:
            raise InputError(
                f"dataset {self.name!r} must declare label 0 (background) and at least one class, got {self.labels}"
            )

    @property
    def case_ids(self) -> tuple[str, ...]:
        """Case ids in dataset order."""
        return tuple(c.id for c in self.cases)

    def case(self, case_id: str) -> Case:
        """The case with this id (InputError when unknown)."""
        for case in self.cases:
            if case.id == case_id:
                return case
        raise InputError(f"dataset {self.name!r} has no case {case_id!r}")


def load_dataset(path: str | Path) -> DatasetSpec:
    """Read an MSD/nnU-Net raw folder (with ``dataset.json``) or a CSV manifest into a DatasetSpec.

    Only the listing is read here (no image is decoded, except that a CSV manifest without a
    sidecar has its label files scanned for the class values). Every listed file must exist.
    """
    path = Path(path).expanduser()
    from medseg.training.instances import is_instance_folder, load_instance_folder

    if is_instance_folder(path):
        return load_instance_folder(path)
    if path.is_dir():
        if not (path / "dataset.json").is_file():
            raise InputError(
                f"{path} has no dataset.json; give an MSD/nnU-Net raw folder (dataset.json, imagesTr/, "
                "labelsTr/) or a CSV manifest (case,image,label)"
            )
        return _load_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _load_manifest(path)
    if not path.exists():
        raise InputError(f"dataset {path} does not exist; check the path")
    raise InputError(f"{path} is neither a dataset folder with dataset.json nor a .csv manifest")


# ------------------------------------------------------------------------- dataset.json folders
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data


def parse_labels(raw: Any, where: str) -> dict[int, str]:
    """Labels from ``{"0": "background", "1": "liver"}`` (MSD) or ``{"background": 0, ...}`` (nnU-Net v2)."""
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(f'{where} needs a non-empty "labels" object like {{"0": "background", "1": "organ"}}')
    labels: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, (list, tuple)):
            raise InputError(f"{where}: label {key!r} is a region (a list of labels); region training is not supported")
        number, name = (key, value) if str(key).lstrip("-").isdigit() else (value, key)
        try:
            labels[int(number)] = str(name)
        except (TypeError, ValueError):
            raise InputError(f"{where}: label entry {key!r}: {value!r} has no integer value") from None
    if any(v < 0 or v > 255 for v in labels):
        raise InputError(f"{where}: label values must lie in 0..255, got {sorted(labels)}")
    return dict(sorted(labels.items()))


def parse_channels(data: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Channel modalities from ``channel_names`` (nnU-Net v2) or ``modality`` (MSD), in index order."""
    raw = data.get("channel_names", data.get("modality"))
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(f'{where} needs "modality" or "channel_names", e.g. {{"0": "MRI"}}')
    try:
        order = sorted((int(k), str(v)) for k, v in raw.items())
    except ValueError:
        raise InputError(f"{where}: channel keys must be 0, 1, ..., got {list(raw)}") from None
    if [k for k, _ in order] != list(range(len(order))):
        raise InputError(f"{where}: channel keys must be 0, 1, ..., got {[k for k, _ in order]}")
    return tuple(v for _, v in order)


def _load_folder(root: Path) -> DatasetSpec:
    meta = _read_json(root / "dataset.json")
    where = str(root / "dataset.json")
    labels = parse_labels(meta.get("labels"), where)
    channels = parse_channels(meta, where)
    ending = str(meta.get("file_ending", ".nii.gz"))
    if isinstance(meta.get("training"), list) and meta["training"]:
        cases = [_listed_case(root, entry, len(channels), where) for entry in meta["training"]]
    else:
        cases = _scanned_cases(root, ending, len(channels))
    return DatasetSpec(str(meta.get("name") or root.name), tuple(cases), labels, channels, bool(meta.get("instances")))


def _case_id(path: Path) -> str:
    return path.name[: -len(full_suffix(path))] if full_suffix(path) else path.name


def _listed_case(root: Path, entry: Any, n_channels: int, where: str) -> Case:
    if not isinstance(entry, Mapping) or "image" not in entry:
        raise InputError(f'{where}: every "training" entry needs "image" and "label", got {entry!r}')
    image = (root / str(entry["image"])).resolve()
    case_id = _case_id(image)
    if image.exists():
        images: tuple[Path, ...] = (image,)
    else:  # nnU-Net v1 lists the case name; the files carry _0000 channel suffixes
        suffix = full_suffix(image)
        images = tuple(image.with_name(f"{case_id}_{c:04d}{suffix}") for c in range(n_channels))
        missing = [p for p in images if not p.exists()]
        if missing:
            raise InputError(f"case {case_id}: image {image} (or {missing[0].name}) does not exist; check {where}")
    label = entry.get("label")
    label_path = (root / str(label)).resolve() if label else None
    if label_path is not None and not label_path.exists():
        raise InputError(f"case {case_id}: label {label_path} does not exist; check {where}")
    return Case(case_id, images, label_path)


def _scanned_cases(root: Path, ending: str, n_channels: int) -> list[Case]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise InputError(f'{root} has no imagesTr/ folder and dataset.json lists no "training" cases')
    groups: dict[str, dict[int, Path]] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(ending):
            continue
        stem = path.name[: -len(ending)]
        match = _CHANNEL_SUFFIX.match(stem)
        case_id, channel = (match["case"], int(match["channel"])) if match else (stem, 0)
        groups.setdefault(case_id, {})[channel] = path
    cases = []
    for case_id, files in groups.items():
        if sorted(files) != list(range(len(files))) or (len(files) > 1 and len(files) != n_channels):
            raise InputError(
                f"case {case_id}: channel files {sorted(files)} in {images_dir} do not match the "
                f"{n_channels} channel(s) of dataset.json; expect {case_id}_0000{ending} ..."
            )
        label = labels_dir / f"{case_id}{ending}"
        cases.append(Case(case_id, tuple(files[c] for c in sorted(files)), label if label.exists() else None))
    if not cases:
        raise InputError(f"{images_dir} holds no *{ending} images")
    return cases


# ------------------------------------------------------------------------- CSV manifests
def _load_manifest(path: Path) -> DatasetSpec:
    rows, image_columns = _manifest_rows(path)
    base = path.resolve().parent
    cases = []
    for number, row in enumerate(rows, start=2):
        images = tuple(_manifest_path(base, row[c], path, number, c) for c in image_columns)
        label_cell = (row.get("label") or "").strip()
        label = _manifest_path(base, label_cell, path, number, "label") if label_cell else None
        case_id = (row.get("case") or "").strip() or _case_id(images[0])
        cases.append(Case(case_id, images, label))
    sidecar = path.with_suffix(".json")
    meta = _read_json(sidecar) if sidecar.is_file() else {}
    if "labels" in meta:
        labels = parse_labels(meta["labels"], str(sidecar))
    else:
        labels = _labels_from_files(cases, path)
    if "channel_names" in meta or "modality" in meta:
        channels = parse_channels(meta, str(sidecar))
    else:
        channels = _channels_from_first_case(cases[0] if cases else None, len(image_columns))
    return DatasetSpec(str(meta.get("name") or path.stem), tuple(cases), labels, channels)


def _manifest_rows(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} cannot be read as CSV ({exc})") from None
    matches = {c: _IMAGE_COLUMN.match(c) for c in columns}
    channels = {c: m for c, m in matches.items() if m is not None}
    image_columns = sorted(channels, key=lambda c: int(channels[c]["channel"] or 0))
    unknown = [c for c in columns if c not in ("case", "label") and c not in channels]
    if not image_columns or unknown or ("image" in image_columns and len(image_columns) > 1):
        raise InputError(
            f"{path}: columns must be case, image (or image_0000, image_0001, ...), label; got {', '.join(columns)}"
        )
    if not rows:
        raise InputError(f"{path} lists no cases")
    return rows, image_columns


def _manifest_path(base: Path, cell: str, manifest: Path, row: int, column: str) -> Path:
    if not cell.strip():
        raise InputError(f"{manifest} row {row}: column {column!r} is empty")
    path = Path(cell.strip()).expanduser()
    path = path if path.is_absolute() else (base / path).resolve()
    if not path.exists():
        raise InputError(f"{manifest} row {row}: {column} {path} does not exist")
    return path


def _labels_from_files(cases: list[Case], manifest: Path) -> dict[int, str]:
    """Class values found in the label files (read once), named ``label_N``; 0 is background."""
    log.info(
        '%s has no sidecar %s with "labels"; scanning %d label files for class values',
        manifest.name,
        manifest.with_suffix(".json").name,
        sum(c.label is not None for c in cases),
    )
    values: set[int] = {0}
    for case in cases:
        if case.label is not None:
            images = [_read_image(p, case) for p in case.images[:1]]
            values.update(label_values(_read_label(case.label, images[0], case).array))
    return {v: ("background" if v == 0 else f"label_{v}") for v in sorted(values)}


def _channels_from_first_case(case: Case | None, n_columns: int) -> tuple[str, ...]:
    if case is None:
        return ("unknown",) * n_columns
    modality = _read_image(case.images[0], case).meta.modality or "unknown"
    log.info('channel modality taken from the first image (%s); set "channel_names" in the sidecar to choose', modality)
    return (modality,) * n_columns


# ------------------------------------------------------------------------- reading and checks
def read_case(case: Case, spec: DatasetSpec) -> tuple[list[Volume], Volume | None]:
    """Read a case's channel images (3D each) and its label, checked for training.

    Promises: ``len(images) == len(spec.channels)``, all images on one grid, the label (kind
    "label", named with ``spec.labels``) on that grid holding only declared class values.
    Raises InputError / GeometryError naming the case and what to fix.
    """
    images: list[Volume] = []
    for path in case.images:
        images.extend(_split_channels(_read_image(path, case), case))
    if len(images) != len(spec.channels):
        raise InputError(
            f"case {case.id} has {len(images)} channel(s) but the dataset declares {len(spec.channels)} "
            f"({', '.join(spec.channels)}); give one image per channel"
        )
    for image in images[1:]:
        if not image.same_grid(images[0]):
            raise GeometryError(
                f"case {case.id}: channel images lie on different grids ({images[0].spatial_shape} vs "
                f"{image.spatial_shape}); resample all channels onto the first one"
            )
    if case.label is None:
        return images, None
    label = _read_label(case.label, images[0], case)
    check_label(label, images[0], spec, case.id)
    return images, label if spec.instances else label.with_meta(label_names=dict(spec.labels))


def check_label(label: Volume, image: Volume, spec: DatasetSpec, case_id: str) -> None:
    """Raise when the label is off its image's grid or holds values the dataset does not declare
    (instance maps: any ids, their values are objects, not classes)."""
    if not label.same_grid(image):
        raise GeometryError(
            f"case {case_id}: the label grid (shape {label.spatial_shape}, origin "
            f"{tuple(round(v, 3) for v in label.origin)}) differs from its image's (shape {image.spatial_shape}, "
            f"origin {tuple(round(v, 3) for v in image.origin)}); resample the label onto the image grid (nearest)"
        )
    extra = [] if spec.instances else sorted(set(label_values(label.array)) - set(spec.labels))
    if extra:
        raise InputError(
            f"case {case_id}: label values {extra} are not declared classes {sorted(spec.labels)}; "
            "fix the label or declare them in the dataset's labels"
        )


def label_values(array: np.ndarray) -> list[int]:
    """The distinct integer values of a label array (bincount for small non-negative ints: fast)."""
    flat = np.asarray(array).ravel()
    if flat.size == 0:
        return []
    low, high = int(flat.min()), int(flat.max())
    if low >= 0 and high < 65536:
        return [int(v) for v in np.flatnonzero(np.bincount(flat.astype(np.intp, copy=False), minlength=high + 1))]
    return [int(v) for v in np.unique(flat)]


def _read_image(path: Path, case: Case) -> Volume:
    from medseg.io import read_volume

    try:
        return read_volume(path)
    except MedsegError as exc:
        raise type(exc)(f"case {case.id}: {exc}") from None


def _split_channels(volume: Volume, case: Case) -> list[Volume]:
    if volume.array.ndim == 3:
        return [volume]
    return [volume.with_array(volume.array[..., c]) for c in range(volume.array.shape[3])]


def _read_label(path: Path, reference: Volume, case: Case) -> Volume:
    """A label volume from a volume file, DICOM SEG or RTSTRUCT (the last two onto ``reference``)."""
    try:
        modality = _dicom_modality(path)
        if modality == "SEG":
            from medseg.io.seg import read_seg

            label = read_seg(path, reference)
        elif modality == "RTSTRUCT":
            from medseg.io.rtstruct import read_rtstruct

            label = read_rtstruct(path, reference)
        else:
            from medseg.io import read_volume

            label = read_volume(path, kind="label")
        return label.require_3d()
    except MedsegError as exc:
        raise type(exc)(f"case {case.id}: label {path.name}: {exc}") from None


def _dicom_modality(path: Path) -> str | None:
    """The DICOM Modality of a single file (None for folders, volume files and non-DICOM files)."""
    from medseg.io.files import is_volume_file

    if not path.is_file() or is_volume_file(path):
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # not DICOM: read_volume gives the clear error
        return None
    return str(getattr(ds, "Modality", "") or "") or None
