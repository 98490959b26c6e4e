"""Find every series in a DICOM export, reading headers only.

A scanner export is a folder tree (with or without DICOMDIR, with non-DICOM files mixed in).
Every file is sniffed; DICOM files are read with ``stop_before_pixels=True`` (``force=True``
for files without preamble/file meta); everything else is skipped silently. Files are grouped
by SeriesInstanceUID, and a series that mixes orientations, matrix sizes, or multi-frame
stacks at different positions is split into parts with UIDs suffixed ``.1``, ``.2``...
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import DicomError, GeometryError, InputError, printable
from medseg.io.dicom.checks import directions, orientation_groups, position_groups
from medseg.io.dicom.frames import frames_of, mosaic_kind
from medseg.io.dicom.headers import os_reason, read_frames, series_uid
from medseg.io.dicom.series import FileHeader, FileProblem, Frame, SeriesInfo, UnusableFile
from medseg.io.dicom.values import MalformedValue, int_or_none, pixel_format, quiet_pydicom, text
from medseg.io.walk import walk_files

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger(__name__)

#: modalities of DICOM objects that are not images (listed, never loaded as volumes)
NON_IMAGE_MODALITIES = frozenset(
    {
        "SEG",
        "RTSTRUCT",
        "RTPLAN",
        "RTDOSE",
        "RTRECORD",
        "SR",
        "KO",
        "PR",
        "REG",
        "RWV",
        "DOC",
        "PLAN",
        "FID",
        "AU",
        "ECG",
        "HD",
    }
)
#: SOP class prefixes of non-image objects: segmentations, radiotherapy, structured reports
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66.",  # segmentation, registration, fiducials
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
)
#: said of an unreadable file without a readable SeriesInstanceUID that lies beside a series' files
NEARBY = "in this series' folder, so possibly one of its slices"

#: one file's header and frames, as discovery keeps them
Found = tuple[FileHeader, list[Frame]]


def discover_series(root: str | Path) -> list[SeriesInfo]:
    """Every series under ``root`` (a folder, searched recursively, or one DICOM file).

    Promises headers-only reading, a stable 1-based ``index`` (study UID, series number, series
    UID), non-image objects listed with ``is_image=False``, and every file that looks like (or
    is named like) DICOM but cannot be used skipped with a logged warning naming it and why, and
    recorded in ``unreadable`` of the series it belongs to (or may belong to). Folder trees of
    any depth are walked without recursion. Raises :class:`InputError` for a missing path and
    :class:`DicomError` for an empty folder or one without usable DICOM files.
    """
    root = Path(root)
    if not _exists(root):
        raise InputError(f"{printable(root)} does not exist; check the path")
    single = root.is_file()
    paths, folder_problems = ([root], []) if single else _walk(root)
    if not paths and not folder_problems:
        raise DicomError(f"{printable(root)} is an empty folder; point medseg at a folder holding a DICOM export")
    with quiet_pydicom():
        found, problems = _read_files(paths, single)
        infos = _series_of(found, problems)
    if not infos:
        raise _nothing_found(root, len(paths), folder_problems + problems)
    return _index(infos)


def series_of_datasets(datasets: Sequence[Dataset]) -> list[SeriesInfo]:
    """Series of header datasets held in memory (DICOMweb metadata, C-FIND answers, one per instance).

    Same grouping, splitting, indexing and non-image detection as :func:`discover_series`, so
    selection rules and case names come out identical to those of the files. The ``files`` of the
    returned series are placeholders named ``<SOPInstanceUID>.dcm``: use the result to choose and
    name series, never to load them. An instance with a malformed value is left out, as an
    unusable file is; one without Rows/Columns has no frames.
    """
    found: list[Found] = []
    with quiet_pydicom():
        for number, ds in enumerate(datasets):
            header = FileHeader(
                path=Path(f"{printable(ds.get('SOPInstanceUID', '')) or f'instance-{number}'}.dcm"), dataset=ds
            )
            try:
                if "Rows" in ds and "Columns" in ds:
                    header = replace(header, pixels=pixel_format(ds))
                found.append((header, frames_of(header)))
            except MalformedValue as exc:
                log.warning("instance %s left out: %s", header.path.stem, exc)
        infos = _series_of(found, [])
    return _index(infos) if infos else []


def _exists(root: Path) -> bool:
    try:
        return root.exists()
    except OSError as exc:  # e.g. a path longer than the system allows
        raise InputError(f"{printable(root)} cannot be used ({os_reason(exc)}); check the path") from None


def _walk(root: Path) -> tuple[list[Path], list[FileProblem]]:
    """Regular files under ``root`` (:func:`medseg.io.walk.walk_files`: any depth, hidden entries and
    symbolic links to folders skipped), and the folders that could not be listed, each logged."""
    found = walk_files(root)
    problems = [FileProblem(folder, f"folder cannot be listed: {reason}") for folder, reason in found.unlisted]
    for problem in problems:
        log.warning("skipping %s", problem.describe())
    return found.files, problems


def _read_files(paths: Sequence[Path], single: bool) -> tuple[list[Found], list[FileProblem]]:
    """Headers and frames of the DICOM files among ``paths``, and the files that cannot be used."""
    found: list[Found] = []
    problems: list[FileProblem] = []
    for path in paths:
        try:
            result = read_frames(path)
        except UnusableFile as exc:
            if single and exc.problem.series_uid is None:
                raise DicomError(f"{exc}; {_fix(exc.problem)}") from None
            log.warning("skipping %s", exc)
            problems.append(exc.problem)
            continue
        if result is not None:
            found.append(result)
    return found, problems


def _fix(problem: FileProblem) -> str:
    return "check its permissions" if "permission" in problem.reason else "re-export or replace the file"


def _nothing_found(root: Path, checked: int, problems: Sequence[FileProblem]) -> DicomError:
    hint = f"; {len(problems)} could not be used, e.g. {problems[0].describe()}" if problems else ""
    return DicomError(
        f"no DICOM files found in {printable(root)} ({checked} file(s) checked{hint}); "
        "point medseg at a DICOM export folder or file"
    )


def _series_of(found: Sequence[Found], problems: Sequence[FileProblem]) -> list[SeriesInfo]:
    """Group files by SeriesInstanceUID, split each series into loadable parts, attach unreadable files."""
    by_uid: dict[str, list[Found]] = defaultdict(list)
    for header, frames in found:
        by_uid[series_uid(header.dataset) or f"no-uid:{printable(header.path.parent)}"].append((header, frames))
    infos = []
    for uid, group in by_uid.items():
        infos.extend(_parts(uid, group))
    lost = {p.series_uid for p in problems if p.series_uid is not None and p.series_uid not in by_uid}
    infos.extend(_unreadable_info(uid, [p for p in problems if p.series_uid == uid]) for uid in sorted(lost))
    return [_with_problems(info, problems) for info in infos]


def _parts(uid: str, group: Sequence[Found]) -> list[SeriesInfo]:
    """One SeriesInfo per loadable part of the files of one SeriesInstanceUID."""
    headers = [header for header, _ in group]
    frames = [frame for _, file_frames in group for frame in file_frames]
    if not _is_image(headers[0], frames):
        return [_info(uid, uid, headers, frames, is_image=False, notes=())]
    parts, reason = _split(frames)
    infos = []
    for number, part in enumerate(parts, start=1):
        part_uid = uid if len(parts) == 1 else f"{uid}.{number}"
        notes = (f"part {number} of {len(parts)}: split for {reason}",) if len(parts) > 1 else ()
        infos.append(_info(part_uid, uid, _unique_headers(part), part, is_image=True, notes=notes))
    return infos


def _unreadable_info(uid: str, problems: Sequence[FileProblem]) -> SeriesInfo:
    """A series none of whose files can be used: listed (so it is never silently missing), not loadable.

    Its slices and geometry come from the headers where they are complete (e.g. files truncated
    inside their pixel data); otherwise ``n_slices`` counts its files.
    """
    headers = [p.header for p in problems if p.header is not None]
    frames = _frames_of_complete(headers)
    info = (
        _info(uid, uid, headers, frames, is_image=True, notes=())
        if headers
        else SeriesInfo(
            index=0,
            uid=uid,
            study_uid="",
            patient_id="",
            modality="",
            description="",
            series_number=None,
            sop_class_uid="",
            n_slices=0,
            matrix=(0, 0),
            spacing=(0.0, 0.0, 0.0),
            orientation="",
            files=(),
            is_image=True,
            multiframe=False,
            series_instance_uid=uid,
        )
    )
    paths = tuple(sorted(p.path for p in problems))
    return replace(info, files=paths, frames=(), n_slices=info.n_slices if frames else len(problems))


def _frames_of_complete(headers: Sequence[FileHeader]) -> list[Frame]:
    """The frames of ``headers`` when every one has a complete, well-formed header, else []."""
    try:
        frames = [frame for header in headers for frame in frames_of(header)]
    except MalformedValue:
        return []
    return frames if all(header.pixels is not None for header in headers) else []


def _with_problems(info: SeriesInfo, problems: Sequence[FileProblem]) -> SeriesInfo:
    """``info`` with the unreadable files that belong to it (same UID: added to ``files`` too) or
    may (an image series in the same folder as a file whose UID is unknown)."""
    folders = {path.parent for path in info.files} if info.is_image else set()
    own = [p for p in problems if p.series_uid is not None and p.series_uid == info.series_instance_uid]
    nearby = [
        replace(p, reason=f"{p.reason}; {NEARBY}")
        for p in problems
        if p.series_uid is None and p.path.parent in folders
    ]
    unreadable = tuple(own + nearby)
    if not unreadable:
        return info
    files = tuple(sorted({*info.files, *(p.path for p in own)}))
    readable = len(files) - len(own)
    note = f"{len(unreadable)} file(s) unreadable" if readable else f"none of its {len(unreadable)} file(s) can be read"
    return replace(info, files=files, unreadable=unreadable, notes=(*info.notes, note))


def _is_image(header: FileHeader, frames: Sequence[Frame]) -> bool:
    ds = header.dataset
    modality = text(ds, "Modality").upper()
    sop_class = text(ds, "SOPClassUID")
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
    uid: str,
    series_uid: str,
    headers: Sequence[FileHeader],
    frames: Sequence[Frame],
    is_image: bool,
    notes: tuple[str, ...],
) -> SeriesInfo:
    """The SeriesInfo of some files; every text field cleaned for terminals (:func:`printable`)."""
    ds = headers[0].dataset
    n_slices, n_frames, spacing, orientation, extra = (
        _geometry_summary(frames) if is_image and frames else (len(headers), 1, (0.0, 0.0, 0.0), "", ())
    )
    mosaic = mosaic_kind(ds) if is_image else None
    if mosaic:
        extra = (*extra, mosaic.split(" ", 1)[1])  # "Siemens mosaic (36 slices tiled in each image)"
    pixels = headers[0].pixels
    return SeriesInfo(
        index=0,
        uid=uid,
        study_uid=text(ds, "StudyInstanceUID"),
        patient_id=text(ds, "PatientID"),
        modality=text(ds, "Modality"),
        description=text(ds, "SeriesDescription") or text(ds, "ProtocolName"),
        series_number=int_or_none(ds, "SeriesNumber"),
        sop_class_uid=text(ds, "SOPClassUID"),
        n_slices=n_slices,
        matrix=(pixels.rows, pixels.cols) if pixels is not None else (0, 0),
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
        str(info.index),
        info.uid,
        info.modality or "-",
        info.description or "-",
        slices,
        f"{info.matrix[0]}x{info.matrix[1]}" if info.matrix[0] else "-",
        spacing,
        info.orientation or "-",
        "; ".join(note + list(info.notes)) or "-",
    ]
    if details:
        folder = printable(info.files[0].parent) if info.files else "-"
        number = str(info.series_number) if info.series_number is not None else "-"
        row += [number, info.patient_id or "-", str(len(info.files)), folder]
    return row


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return name if name and name != uid else "unknown object"
