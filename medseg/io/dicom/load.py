"""One series -> one :class:`medseg.volume.Volume` (RAS), checked, optionally resampled.

Geometry convention (LPS inside DICOM, converted to RAS here and nowhere else):

* ``i`` runs along the row direction (ImageOrientationPatient[:3]) with the column spacing
  PixelSpacing[1]; ``j`` along the column direction (ImageOrientationPatient[3:]) with the row
  spacing PixelSpacing[0]; ``k`` along the slice normal (row x column), slices sorted by
  ImagePositionPatient . normal, ascending.
* The voxel -> LPS affine has columns (row * dcol, col * drow, normal * dk, IPP of slice 0), with
  dk the mean distance between slices along the normal; ``LPS_TO_RAS`` turns it into RAS.
* Multi-frame series whose frames repeat every position (time points, echoes, stacks) give a
  4D volume ``[i, j, k, t]``, frames ordered by temporal index, acquisition time, file, frame.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.choices import DICOM_VALUES
from medseg.errors import DicomError, GeometryError, check_choice
from medseg.io.dicom.checks import (
    Stack,
    build_stack,
    check_frames_complete,
    check_slice_count,
    regularity_error,
    regularity_problems,
)
from medseg.io.dicom.frames import mosaic_kind
from medseg.io.dicom.headers import read_frames
from medseg.io.dicom.pixels import check_greyscale, decode_file, rescale
from medseg.io.dicom.series import DicomSeries, FileHeader, FileProblem, Frame, SeriesInfo, UnusableFile
from medseg.io.dicom.values import float_or_none, quiet_pydicom, text
from medseg.volume import LPS_TO_RAS, Volume, VolumeMeta

log = logging.getLogger(__name__)

#: a volume needs at least this many slice positions unless the caller lowers it
MIN_SLICES = 3
#: what the volume's values are: the rescaled (modality) values, or the real-world values
VALUES = DICOM_VALUES  # "rescaled" | "real-world" (medseg.choices: the CLI's choices, import-light)
#: the fix named when files of a series cannot be read
MISSING_HINT = (
    "re-export the series, or pass --allow-missing-slices (allow_missing_slices=True) to load the readable files"
)
#: how many unreadable files a message names before "and N more"
NAMED_FILES = 3


@dataclass(frozen=True)
class LoadOptions:
    """How :func:`load_series` treats a series: see its docstring for each option."""

    resample: bool = False
    min_slices: int = MIN_SLICES
    allow_missing_slices: bool = False
    values: str = "rescaled"


def load_volume(
    path: str | Path,
    select: str | int | None = None,
    resample: bool = False,
    *,
    min_slices: int = MIN_SLICES,
    allow_missing_slices: bool = False,
    values: str = "rescaled",
) -> Volume:
    """The volume of one series under ``path`` (a DICOM folder or a single DICOM file).

    ``select`` names the series (index, UID or description pattern, see
    :func:`medseg.io.dicom.select_series`); it is required when ``path`` holds several image
    series. The other options are :func:`load_series`'s. Raises a
    :class:`medseg.errors.MedsegError` subclass with a one-line message for every problem.
    """
    from medseg.io.dicom.discover import discover_series
    from medseg.io.dicom.select import select_series

    info = select_series(discover_series(path), select)
    return load_series(
        info, resample, min_slices=min_slices, allow_missing_slices=allow_missing_slices, values=values
    ).volume


def load_series(
    info: SeriesInfo,
    resample: bool = False,
    *,
    min_slices: int = MIN_SLICES,
    allow_missing_slices: bool = False,
    values: str = "rescaled",
) -> DicomSeries:
    """Load one discovered image series: checked geometry, decoded pixels, mapped values.

    Reads every file's pixel data once. Refuses (:class:`GeometryError`) mixed orientations,
    too few slices (``min_slices``), duplicate positions with different pixels, and — unless
    ``resample`` — gantry tilt and non-uniform spacing. Duplicates with identical pixels are
    dropped with a warning. Refuses (:class:`DicomError`) mosaics, colour images, and a series
    whose files cannot all be read (truncated, unreadable, malformed), unless
    ``allow_missing_slices``: then the readable files are loaded, the missing ones are logged
    and listed in ``volume.meta.extra["unreadable_files"]``, and the geometry rules above decide
    (a gap is refused unless ``resample``). ``values``: ``"rescaled"`` (default: stored values
    through RescaleSlope/Intercept) or ``"real-world"`` (Philips precise values / the
    RealWorldValueMapping, as dcm2niix writes them; see docs/dicom.md). Promises a RAS
    :class:`Volume` indexed ``[i, j, k(, t)]`` and the header-only source datasets.
    """
    options = LoadOptions(resample, min_slices, allow_missing_slices, check_choice("values", values, VALUES))
    label = f"series {info.label}"
    if not info.is_image:
        raise DicomError(f"{label} is a {info.modality or 'non-image'} object, not an image series")
    with quiet_pydicom():
        return _load(info, label, options)


def _load(info: SeriesInfo, label: str, options: LoadOptions) -> DicomSeries:
    """:func:`load_series` after the option checks (pydicom warnings silenced)."""
    _refuse_unreadable(info, options.allow_missing_slices)
    frames = list(info.frames) or _frames_from_files(info.readable_files)
    if not frames:
        raise DicomError(f"{label} holds no image frames; is it an image series?")
    _refuse_unsupported(frames, label)
    stack = build_stack(frames, label)
    problems = _check(stack, options, label) if not _classic_duplicates(stack) else []
    stack, order, stored, dropped = _decode_stack(stack, f"series #{info.index}", options.allow_missing_slices)
    if _classic_duplicates(stack):
        stack, stored = _drop_duplicates(stack, stored, label)
        order = [s[0] for s in stack.slices]
        problems = _check(stack, options, label)
    elif dropped:
        problems = _check(stack, options, label)
    mappings = _value_mappings([stack.frames[i] for i in order], options.values, label)
    values = rescale(stored, *zip(*mappings))
    missing = tuple(problem.path for problem in info.unreadable) + dropped
    return _assemble(info, stack, order, values, bool(problems), _Provenance(options.values, mappings, missing))


def _classic_duplicates(stack: Stack) -> bool:
    """Classic (single-frame) images repeating a slice position."""
    return not any(f.multiframe for f in stack.frames) and int(stack.counts.max()) > 1


def _refuse_unreadable(info: SeriesInfo, allow_missing: bool) -> None:
    """Refuse a series with files discovery could not use, or (allowed) report them.

    The message names the series by index only (its files name it already), so no description
    or UID is added to what batch runs record about damaged files.
    """
    if not info.unreadable:
        return
    label = f"series #{info.index}"
    total = len(info.readable_files) + len(info.unreadable)
    if not info.readable_files:
        raise DicomError(
            f"{label}: none of its {total} file(s) can be read: {_named(info.unreadable)}; re-export the series"
        )
    if not allow_missing:
        raise unreadable_error(label, info.unreadable, total)
    log.warning(
        "%s: loading without %d unreadable file(s): %s; the volume may lack slices",
        label,
        len(info.unreadable),
        _named(info.unreadable),
    )


def unreadable_error(label: str, problems: Sequence[FileProblem], total: int) -> DicomError:
    """``series ...: 1 of its 23 files cannot be read: FILE (truncated at ...); re-export ...``."""
    return DicomError(
        f"{label}: {len(problems)} of its {total} files cannot be read: {_named(problems)}; {MISSING_HINT}"
    )


def _named(problems: Sequence[FileProblem]) -> str:
    named = "; ".join(problem.describe() for problem in problems[:NAMED_FILES])
    more = len(problems) - NAMED_FILES
    return named + (f"; and {more} more" if more > 0 else "")


def _frames_from_files(files: Sequence[Path]) -> list[Frame]:
    frames = []
    for path in files:
        try:
            found = read_frames(Path(path))
        except UnusableFile as exc:
            raise unreadable_error("the series", [exc.problem], len(files)) from None
        if found is None:
            raise DicomError(f"{path} is not a DICOM file; rediscover the series with discover_series")
        frames.extend(found[1])
    return frames


def _refuse_unsupported(frames: Sequence[Frame], label: str) -> None:
    """Refuse mosaics (several slices tiled in one image) and colour images, naming what to do."""
    headers = {id(f.header): f.header for f in frames}.values()
    for header in headers:
        kind = mosaic_kind(header.dataset)
        if kind:
            raise DicomError(
                f"{label} is {kind}, which medseg does not unpack into slices; convert the series with "
                "dcm2niix (e.g. dcm2niix -z y -o OUTDIR FOLDER) and give medseg the NIfTI file"
            )
        check_greyscale(header)


def _check(stack: Stack, options: LoadOptions, label: str) -> list[str]:
    """Run the geometry checks; return the problems resampling will repair (raise otherwise)."""
    if any(f.multiframe for f in stack.frames):
        check_frames_complete(stack, label)
    check_slice_count(stack, options.min_slices, label)
    tilt_value = float_or_none(stack.frames[0].header.dataset, "GantryDetectorTilt")
    problems = regularity_problems(stack, tilt_value)
    if problems and not options.resample:
        raise regularity_error(stack, problems, label)
    return problems


def _decode_stack(
    stack: Stack, label: str, allow_missing: bool
) -> tuple[Stack, list[int], np.ndarray, tuple[Path, ...]]:
    """Decode every file once: (stack, order, stored values in order, files dropped as unreadable).

    A file whose pixels cannot be read refuses the series, unless ``allow_missing``: then its
    frames are dropped (logged) and the stack is rebuilt from the rest.
    """
    order = [i for slice_frames in stack.slices for i in slice_frames]
    stored, failures = _decode_in_order(stack.frames, order)
    if not failures:
        assert stored is not None
        return stack, order, stored, ()
    n_files = len({id(f.header) for f in stack.frames})
    if not allow_missing or stored is None:
        raise unreadable_error(label, failures, n_files)
    log.warning(
        "%s: loading without %d unreadable file(s): %s; the volume may lack slices",
        label,
        len(failures),
        _named(failures),
    )
    bad = {problem.path for problem in failures}
    keep = [n for n, i in enumerate(order) if stack.frames[i].header.path not in bad]
    kept = build_stack([stack.frames[order[n]] for n in keep], label)
    kept_order = [i for slice_frames in kept.slices for i in slice_frames]
    return kept, kept_order, stored[np.asarray(keep)[kept_order]], tuple(sorted(bad))


def _decode_in_order(frames: Sequence[Frame], order: Sequence[int]) -> tuple[np.ndarray | None, list[FileProblem]]:
    """Stored values ``(len(order), rows, cols)``, frame ``order[n]`` at ``n``, and the files that failed.

    Each file is decoded once; rows of failed files are left unset (None when every file failed).
    """
    targets: dict[int, list[tuple[int, int]]] = defaultdict(list)
    headers: dict[int, FileHeader] = {}
    for dest, i in enumerate(order):
        header = frames[i].header
        headers[id(header)] = header
        targets[id(header)].append((dest, frames[i].index))
    out: np.ndarray | None = None
    failures: list[FileProblem] = []
    for key, pairs in targets.items():
        try:
            array = decode_file(headers[key])
        except UnusableFile as exc:
            failures.append(exc.problem)
            continue
        out = _place(out, array, pairs, headers[key], len(order))
    return out, failures


def _place(
    out: np.ndarray | None, array: np.ndarray, pairs: list[tuple[int, int]], header: FileHeader, n: int
) -> np.ndarray:
    """Copy frames ``pairs`` (destination row, frame index) of one file's ``array`` into ``out``."""
    dests, indices = (np.array(v) for v in zip(*pairs))
    if out is None:
        out = np.empty((n, *array.shape[1:]), dtype=array.dtype)
    elif array.shape[1:] != out.shape[1:]:
        raise GeometryError(f"{header.path} has a {array.shape[1:]} matrix, the series {out.shape[1:]}")
    elif not np.can_cast(array.dtype, out.dtype, casting="safe"):
        out = out.astype(np.result_type(out.dtype, array.dtype))
    out[dests] = array[indices]
    return out


def _value_mappings(frames: Sequence[Frame], values: str, label: str) -> list[tuple[float, float]]:
    """(slope, intercept) per frame for the chosen ``values`` convention."""
    if values == "rescaled":
        return [frame.rescale for frame in frames]
    real = [frame.real_world for frame in frames]
    if all(mapping is None for mapping in real):
        log.info(
            "%s: the headers give no real-world value mapping; its real-world values are the rescaled values", label
        )
        return [frame.rescale for frame in frames]
    if any(mapping is None for mapping in real):
        raise DicomError(
            f"{label}: only some of its frames give a real-world value mapping, so real-world values "
            "are not defined for all of them; load the rescaled values (--values rescaled)"
        )
    return [mapping for mapping in real if mapping is not None]


@dataclass(frozen=True)
class _Provenance:
    """What :func:`_meta` records about the values: the convention, mapping per frame, missing files."""

    values: str
    mappings: list[tuple[float, float]]
    missing: tuple[Path, ...]


def _drop_duplicates(stack: Stack, stored: np.ndarray, label: str) -> tuple[Stack, np.ndarray]:
    """Keep one image per slice position when duplicates hold identical pixels; refuse otherwise."""
    keep, start, dropped = [], 0, 0
    for slice_frames in stack.slices:
        for extra in range(1, len(slice_frames)):
            if not np.array_equal(stored[start], stored[start + extra]):
                shared = int((stack.counts > 1).sum())
                raise GeometryError(
                    f"{label}: {int(stack.counts[stack.counts > 1].sum())} images share {shared} slice "
                    "position(s) but hold different pixel data (duplicate slice positions, e.g. repeated "
                    "acquisitions of a bolus-tracking or time series): not a volume; export or select "
                    "one acquisition per series"
                )
        keep.append(start)
        dropped += len(slice_frames) - 1
        start += len(slice_frames)
    log.warning("%s: dropped %d duplicate image(s) with identical pixel data at repeated positions", label, dropped)
    kept = build_stack([stack.frames[s[0]] for s in stack.slices], label)
    return kept, stored[keep]


def _assemble(
    info: SeriesInfo, stack: Stack, order: list[int], values: np.ndarray, resample: bool, provenance: _Provenance
) -> DicomSeries:
    """Arrange ``values`` (frames in ``order``) into the [i, j, k(, t)] array with its RAS affine."""
    n_volumes = len(stack.slices[0])
    blocks = values.reshape((stack.n_slices, n_volumes) + values.shape[1:])  # (K, T, rows, cols)
    if resample:
        from medseg.io.dicom.resample import regular_grid, resample_stack

        grid = regular_grid(stack)
        blocks = np.stack([resample_stack(blocks[:, t], stack, grid) for t in range(n_volumes)], axis=1)
        affine_lps, positions = grid.affine_lps(), grid.positions()
        log.warning("%s: resampled onto a regular %s grid", f"series {info.label}", "x".join(map(str, grid.shape)))
    else:
        affine_lps, positions = _affine_lps(stack), stack.positions
    array = blocks[:, 0].transpose(2, 1, 0) if n_volumes == 1 else blocks.transpose(3, 2, 0, 1)
    datasets, source_frames = _sources(stack, order, n_volumes)
    volume = Volume(array, LPS_TO_RAS @ affine_lps, "image", _meta(info, stack, order, resample, n_volumes, provenance))
    return DicomSeries(
        info=info,
        volume=volume,
        datasets=datasets,
        frame_positions=np.array(positions, dtype=np.float64),
        source_frames=() if resample else source_frames,
        resampled=resample,
    )


def _affine_lps(stack: Stack) -> np.ndarray:
    """Voxel -> LPS affine of a regular stack (orthogonal; slice step along the normal)."""
    row_spacing, col_spacing = stack.pixel_spacing
    if stack.n_slices > 1:
        step = float(stack.distances[-1] - stack.distances[0]) / (stack.n_slices - 1)
    else:
        ds = stack.frames[0].header.dataset
        step = float_or_none(ds, "SpacingBetweenSlices") or float_or_none(ds, "SliceThickness") or 1.0
    affine = np.eye(4)
    affine[:3, 0] = stack.row_dir * col_spacing
    affine[:3, 1] = stack.col_dir * row_spacing
    affine[:3, 2] = stack.normal * step
    affine[:3, 3] = stack.positions[0]
    return affine


def _sources(stack: Stack, order: list[int], n_volumes: int) -> tuple[tuple, tuple]:
    """Header-only datasets (one per slice, or the multi-frame files) and (dataset, frame) per [k][t]."""
    frames = [stack.frames[i] for i in order]
    if not any(f.multiframe for f in frames):
        datasets = tuple(f.header.dataset for f in frames)
        return datasets, tuple(((k, 1),) for k in range(len(frames)))
    headers: dict[int, int] = {}
    for frame in frames:
        headers.setdefault(id(frame.header), len(headers))
    by_id = {id(f.header): f.header.dataset for f in frames}
    datasets = tuple(by_id[key] for key in headers)
    pairs = [(headers[id(f.header)], f.index + 1) for f in frames]
    return datasets, tuple(tuple(pairs[k * n_volumes : (k + 1) * n_volumes]) for k in range(stack.n_slices))


def _meta(
    info: SeriesInfo, stack: Stack, order: list[int], resampled: bool, n_volumes: int, provenance: _Provenance
) -> VolumeMeta:
    ds = stack.frames[0].header.dataset
    scales = set(provenance.mappings)
    first = provenance.mappings[0]
    extra: dict[str, object] = {
        "study_uid": info.study_uid,
        "patient_id": info.patient_id,
        "series_number": info.series_number,
        "series_index": info.index,
        "selected_uid": info.uid,
        "sop_class_uid": info.sop_class_uid,
        "resampled": resampled,
        "values": provenance.values,
    }
    if provenance.missing:
        extra["unreadable_files"] = [str(path) for path in provenance.missing]
    if len(scales) > 1:
        extra["rescale_varies"] = True
    if n_volumes > 1:
        extra["frame_types"] = [stack.frames[i].frame_type for i in order[:n_volumes]]
    files = [str(p) for p in info.files] or [str(stack.frames[0].header.path)]
    source = files[0] if len(files) == 1 else os.path.commonpath(files)
    return VolumeMeta(
        modality=info.modality or text(ds, "Modality") or None,
        series_uid=info.series_instance_uid or text(ds, "SeriesInstanceUID") or None,
        description=info.description or None,
        rescale=None if scales == {(1.0, 0.0)} else (float(first[0]), float(first[1])),
        source=source,
        extra=extra,
    )
