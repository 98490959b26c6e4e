"""Find every series in a DICOM export, reading headers only.

A scanner export is a folder tree (with or without DICOMDIR, with non-DICOM files mixed in).
Every file is sniffed; DICOM files are read with ``stop_before_pixels=True`` (``force=True``
for files without preamble/file meta); everything else is skipped silently. Files are grouped
by SeriesInstanceUID, and a series that mixes orientations, matrix sizes, or multi-frame
stacks at different positions is split into parts with UIDs suffixed ``.1``, ``.2``...
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from medseg.errors import DicomError, GeometryError, InputError
from medseg.io.dicom.checks import directions, orientation_groups, position_groups
from medseg.io.dicom.headers import frames_of, read_header
from medseg.io.dicom.series import FileHeader, Frame, SeriesInfo

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)

#: modalities of DICOM objects that are not images (listed, never loaded as volumes)
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "KO", "PR", "REG", "RWV", "DOC",
     "PLAN", "FID", "AU", "ECG", "HD"}
)
#: SOP class prefixes of non-image objects: segmentations, radiotherapy, structured reports
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66.",  # segmentation, registration, fiducials
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
)


def discover_series(root: str | Path) -> list[SeriesInfo]:
    """Every series under ``root`` (a folder, searched recursively, or one DICOM file).

    Promises headers-only reading, a stable 1-based ``index`` (study UID, series number, series
    UID) and non-image objects listed with ``is_image=False``. Raises :class:`InputError` for a
    missing path and :class:`DicomError` for an empty folder or one without DICOM files.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root} does not exist; check the path")
    paths = [root] if root.is_file() else list(_walk(root))
    if not paths:
        raise DicomError(f"{root} is an empty folder; point medseg at a folder holding a DICOM export")
    headers, broken = _read_headers(paths, single=root.is_file())
    if not headers:
        hint = f"; {len(broken)} looked like DICOM but could not be read, e.g. {broken[0]}" if broken else ""
        raise DicomError(
            f"no DICOM files found in {root} ({len(paths)} file(s) checked{hint}); "
            "point medseg at a DICOM export folder or file"
        )
    return _index(_series_of(headers))


def series_of_datasets(datasets: Sequence["Dataset"]) -> list[SeriesInfo]:
    """Series of header datasets held in memory (DICOMweb metadata, C-FIND answers, one per instance).

    Same grouping, splitting, indexing and non-image detection as :func:`discover_series`, so
    selection rules and case names come out identical to those of the files. The ``files`` of the
    returned series are placeholders named ``<SOPInstanceUID>.dcm``: use the result to choose and
    name series, never to load them. Datasets without Rows/Columns give series with no geometry.
    """
    headers = [FileHeader(path=Path(f"{ds.get('SOPInstanceUID', f'instance-{n}')}.dcm"), dataset=ds)
               for n, ds in enumerate(datasets)]
    return _index(_series_of(headers)) if headers else []


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root`` in sorted order, skipping hidden files and folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _read_headers(paths: Sequence[Path], single: bool) -> tuple[list[FileHeader], list[Path]]:
    headers, broken = [], []
    for path in paths:
        try:
            header = read_header(path)
        except DicomError as exc:
            if single:
                raise
            log.warning("skipping %s", exc)
            broken.append(path)
            continue
        if header is not None:
            headers.append(header)
    return headers, broken


def _series_of(headers: Sequence[FileHeader]) -> list[SeriesInfo]:
    """Group headers by SeriesInstanceUID and split each series into loadable parts."""
    by_uid: dict[str, list[FileHeader]] = defaultdict(list)
    for header in headers:
        uid = str(header.dataset.get("SeriesInstanceUID", "") or f"no-uid:{header.path.parent}")
        by_uid[uid].append(header)
    infos = []
    for uid, group in by_uid.items():
        frames = [frame for header in group for frame in frames_of(header)]
        if not _is_image(group[0], frames):
            infos.append(_info(uid, uid, group, frames, is_image=False, notes=()))
            continue
        parts, reason = _split(frames)
        for number, part in enumerate(parts, start=1):
            part_uid = uid if len(parts) == 1 else f"{uid}.{number}"
            notes = (f"part {number} of {len(parts)}: split for {reason}",) if len(parts) > 1 else ()
            part_headers = _unique_headers(part)
            infos.append(_info(part_uid, uid, part_headers, part, is_image=True, notes=notes))
    return infos


def _is_image(header: FileHeader, frames: Sequence[Frame]) -> bool:
    ds = header.dataset
    modality = str(ds.get("Modality", "") or "").upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    return bool(frames) and modality not in NON_IMAGE_MODALITIES and not sop_class.startswith(NON_IMAGE_SOP_PREFIXES)


def _split(frames: list[Frame]) -> tuple[list[list[Frame]], str]:
    """Split a series' frames by matrix, orientation, then multi-frame stack; and say why."""
    by_matrix: dict[tuple[int, int], list[Frame]] = defaultdict(list)
    for frame in frames:
        by_matrix[(frame.rows, frame.cols)].append(frame)
    oriented = [group for matrix_frames in by_matrix.values() for group in orientation_groups(matrix_frames)]
    parts = [stack for group in oriented for stack in _split_stacks(group)]
    reasons = []
    if len(by_matrix) > 1:
        reasons.append("mixed matrix sizes")
    if len(oriented) > len(by_matrix):
        reasons.append("mixed orientations")
    if len(parts) > len(oriented):
        reasons.append("multi-frame stacks at different positions")
    return parts, " and ".join(reasons)


def _split_stacks(frames: list[Frame]) -> list[list[Frame]]:
    """Multi-frame stacks whose positions differ become separate parts; others stay together."""
    if not any(f.multiframe for f in frames) or any(f.position is None for f in frames):
        return [frames]
    counts = [len(g) for g in position_groups(_distances(frames))]
    if min(counts) == max(counts):
        return [frames]
    stacks: dict[tuple[str, str], list[Frame]] = defaultdict(list)
    for frame in frames:
        stacks[(str(frame.header.path), frame.stack)].append(frame)
    return list(stacks.values()) if len(stacks) > 1 else [frames]


def _distances(frames: Sequence[Frame]) -> np.ndarray:
    _, _, normal = directions(frames[0].orientation)
    return np.array([f.position for f in frames], dtype=np.float64) @ normal


def _unique_headers(frames: Sequence[Frame]) -> list[FileHeader]:
    seen: dict[int, FileHeader] = {}
    for frame in frames:
        seen.setdefault(id(frame.header), frame.header)
    return list(seen.values())


def _info(
    uid: str, series_uid: str, headers: Sequence[FileHeader], frames: Sequence[Frame], is_image: bool,
    notes: tuple[str, ...],
) -> SeriesInfo:
    ds = headers[0].dataset
    n_slices, n_frames, spacing, orientation, extra = _geometry_summary(frames) if is_image else (
        len(headers), 1, (0.0, 0.0, 0.0), "", ())
    try:
        series_number: int | None = int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        series_number = None
    return SeriesInfo(
        index=0,
        uid=uid,
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        description=str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or "").strip(),
        series_number=series_number,
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        n_slices=n_slices,
        matrix=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
        spacing=spacing,
        orientation=orientation,
        files=tuple(sorted({h.path for h in headers})),
        is_image=is_image,
        multiframe=any(f.multiframe for f in frames),
        n_frames=n_frames,
        notes=notes + extra,
        series_instance_uid=series_uid,
        frames=tuple(frames),
    )


def _geometry_summary(frames: Sequence[Frame]) -> tuple[int, int, tuple[float, float, float], str, tuple[str, ...]]:
    """(slices, frames per slice, spacing (i, j, k), axis codes, notes) without raising."""
    no_geometry = (len(frames), 1, (0.0, 0.0, 0.0), "", ("no slice geometry (2D image)",))
    if any(f.position is None or f.orientation is None or f.pixel_spacing is None for f in frames):
        return no_geometry
    try:
        row, col, normal = directions(frames[0].orientation)
    except GeometryError:
        return no_geometry
    distances = _distances(frames)
    groups = position_groups(distances)
    counts = [len(g) for g in groups]
    slice_d = np.array([distances[g[0]] for g in groups])
    gap = float(np.median(np.diff(slice_d))) if len(groups) > 1 else 0.0
    row_spacing, col_spacing = frames[0].pixel_spacing or (0.0, 0.0)
    notes: tuple[str, ...] = ()
    n_frames = 1
    if max(counts) > 1:
        if any(f.multiframe for f in frames) and min(counts) == max(counts):
            n_frames = counts[0]
        else:
            notes = (f"{len(frames) - len(groups)} image(s) share a slice position",)
    return len(groups), n_frames, (col_spacing, row_spacing, gap), axis_codes(row, col, normal), notes


def axis_codes(row: np.ndarray, col: np.ndarray, normal: np.ndarray) -> str:
    """RAS axis codes (nibabel's ``aff2axcodes``) of a volume with these LPS axis directions."""
    import nibabel as nib

    from medseg.volume import LPS_TO_RAS

    affine = np.eye(4)
    affine[:3, :3] = np.column_stack([row, col, normal])
    return "".join(nib.aff2axcodes(LPS_TO_RAS @ affine))


def _index(infos: list[SeriesInfo]) -> list[SeriesInfo]:
    """Sort by (study UID, series number, series UID, part) and number from 1."""
    from dataclasses import replace

    def key(info: SeriesInfo) -> tuple:
        number = info.series_number if info.series_number is not None else 1 << 62
        return (info.study_uid, number, info.series_instance_uid, info.uid)

    return [replace(info, index=i) for i, info in enumerate(sorted(infos, key=key), start=1)]


def format_series_table(infos: Sequence[SeriesInfo], details: bool = False) -> str:
    """A plain-text table of series: index, UID, modality, description, slices, matrix, spacing,
    orientation and notes (non-image objects are marked "not an image"). ``details`` adds the
    series number, patient ID, file count and the folder of the first file."""
    header = ["#", "UID", "modality", "description", "slices", "matrix", "spacing (mm)", "orient", "note"]
    if details:
        header += ["series no", "patient", "files", "folder"]
    rows = [header] + [_row(info, details) for info in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _row(info: SeriesInfo, details: bool) -> list[str]:
    if info.is_image:
        slices = f"{info.n_slices}x{info.n_frames}" if info.n_frames > 1 else str(info.n_slices)
        spacing = " x ".join(f"{s:.4g}" for s in info.spacing) if info.orientation else "-"
        note = [f"4D: {info.n_frames} frames per slice"] if info.n_frames > 1 else []
    else:
        slices, spacing = str(info.n_slices), "-"
        note = [f"not an image ({info.modality or _sop_name(info.sop_class_uid)})"]
    row = [
        str(info.index), info.uid, info.modality or "-", info.description or "-", slices,
        f"{info.matrix[0]}x{info.matrix[1]}" if info.matrix[0] else "-", spacing,
        info.orientation or "-", "; ".join(note + list(info.notes)) or "-",
    ]
    if details:
        folder = str(info.files[0].parent) if info.files else "-"
        number = str(info.series_number) if info.series_number is not None else "-"
        row += [number, info.patient_id or "-", str(len(info.files)), folder]
    return row


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return name if name and name != uid else "unknown object"
