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
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import DicomError, GeometryError
from medseg.io.dicom.checks import (
    Stack,
    build_stack,
    check_frames_complete,
    check_slice_count,
    regularity_error,
    regularity_problems,
)
from medseg.io.dicom.headers import frames_of, read_header
from medseg.io.dicom.pixels import decode_file, rescale
from medseg.io.dicom.series import DicomSeries, FileHeader, Frame, SeriesInfo
from medseg.volume import LPS_TO_RAS, Volume, VolumeMeta

log = logging.getLogger(__name__)

#: a volume needs at least this many slice positions unless the caller lowers it
MIN_SLICES = 3


def load_volume(
    path: str | Path, select: str | int | None = None, resample: bool = False, *, min_slices: int = MIN_SLICES
) -> Volume:
    """The volume of one series under ``path`` (a DICOM folder or a single DICOM file).

    ``select`` names the series (index, UID or description pattern, see
    :func:`medseg.io.dicom.select_series`); it is required when ``path`` holds several image
    series. ``resample=True`` repairs gantry tilt and irregular slice spacing by resampling
    onto a regular grid instead of refusing them. Raises a :class:`medseg.errors.MedsegError`
    subclass with a one-line message for every problem.
    """
    from medseg.io.dicom.discover import discover_series
    from medseg.io.dicom.select import select_series

    info = select_series(discover_series(path), select)
    return load_series(info, resample=resample, min_slices=min_slices).volume


def load_series(info: SeriesInfo, resample: bool = False, *, min_slices: int = MIN_SLICES) -> DicomSeries:
    """Load one discovered image series: checked geometry, decoded and rescaled pixels.

    Reads every file's pixel data once. Refuses (:class:`GeometryError`) mixed orientations,
    too few slices, duplicate positions with different pixels, and — unless ``resample`` —
    gantry tilt and non-uniform spacing. Duplicates with identical pixels are dropped with a
    warning. Promises a RAS :class:`Volume` indexed ``[i, j, k(, t)]`` and the header-only
    source datasets (see :class:`DicomSeries`).
    """
    label = f"series {info.label}"
    if not info.is_image:
        raise DicomError(f"{label} is a {info.modality or 'non-image'} object, not an image series")
    frames = list(info.frames) or _frames_from_files(info.files)
    if not frames:
        raise DicomError(f"{label} holds no image frames; is it an image series?")
    stack = build_stack(frames, label)
    multiframe = any(f.multiframe for f in frames)
    classic_duplicates = not multiframe and stack.counts.max() > 1
    problems: list[str] = []
    if not classic_duplicates:
        problems = _check(stack, multiframe, resample, min_slices, label)
    order = [i for slice_frames in stack.slices for i in slice_frames]
    stored = _decode_in_order(stack.frames, order)
    if classic_duplicates:
        stack, stored = _drop_duplicates(stack, stored, label)
        order = [s[0] for s in stack.slices]
        problems = _check(stack, False, resample, min_slices, label)
    values = rescale(stored, *zip(*(stack.frames[i].rescale for i in order)))
    return _assemble(info, stack, order, values, resample=bool(problems))


def _frames_from_files(files: Sequence[Path]) -> list[Frame]:
    frames = []
    for path in files:
        header = read_header(Path(path))
        if header is None:
            raise DicomError(f"{path} is not a DICOM file; rediscover the series with discover_series")
        frames.extend(frames_of(header))
    return frames


def _check(stack: Stack, multiframe: bool, resample: bool, min_slices: int, label: str) -> list[str]:
    """Run the geometry checks; return the problems resampling will repair (raise otherwise)."""
    if multiframe:
        check_frames_complete(stack, label)
    check_slice_count(stack, min_slices, label)
    tilt_tag = stack.frames[0].header.dataset.get("GantryDetectorTilt")
    try:
        tilt_value = float(tilt_tag) if tilt_tag not in (None, "") else None
    except (TypeError, ValueError):
        tilt_value = None
    problems = regularity_problems(stack, tilt_value)
    if problems and not resample:
        raise regularity_error(stack, problems, label)
    return problems


def _decode_in_order(frames: Sequence[Frame], order: Sequence[int]) -> np.ndarray:
    """Stored values ``(len(order), rows, cols)``, frame ``order[n]`` at ``n``; each file decoded once."""
    targets: dict[int, list[tuple[int, int]]] = defaultdict(list)
    headers: dict[int, FileHeader] = {}
    for dest, i in enumerate(order):
        header = frames[i].header
        headers[id(header)] = header
        targets[id(header)].append((dest, frames[i].index))
    out: np.ndarray | None = None
    for key, pairs in targets.items():
        array = decode_file(headers[key])
        dests, indices = (np.array(v) for v in zip(*pairs))
        if indices.max() >= array.shape[0]:
            raise DicomError(f"{headers[key].path} has {array.shape[0]} frame(s) but its header lists more")
        if out is None:
            out = np.empty((len(order),) + array.shape[1:], dtype=array.dtype)
        elif array.shape[1:] != out.shape[1:]:
            raise GeometryError(f"{headers[key].path} has a {array.shape[1:]} matrix, the series {out.shape[1:]}")
        elif not np.can_cast(array.dtype, out.dtype, casting="safe"):
            out = out.astype(np.result_type(out.dtype, array.dtype))
        out[dests] = array[indices]
    if out is None:
        raise DicomError("the series holds no frames to decode")
    return out


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


def _assemble(info: SeriesInfo, stack: Stack, order: list[int], values: np.ndarray, resample: bool) -> DicomSeries:
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
    volume = Volume(array, LPS_TO_RAS @ affine_lps, "image", _meta(info, stack, order, resample, n_volumes))
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
        step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
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
    return datasets, tuple(tuple(pairs[k * n_volumes:(k + 1) * n_volumes]) for k in range(stack.n_slices))


def _meta(info: SeriesInfo, stack: Stack, order: list[int], resampled: bool, n_volumes: int) -> VolumeMeta:
    ds = stack.frames[0].header.dataset
    scales = {stack.frames[i].rescale for i in order}
    first = stack.frames[order[0]].rescale
    extra: dict[str, object] = {
        "study_uid": info.study_uid,
        "patient_id": info.patient_id,
        "series_number": info.series_number,
        "series_index": info.index,
        "selected_uid": info.uid,
        "sop_class_uid": info.sop_class_uid,
        "resampled": resampled,
    }
    if len(scales) > 1:
        extra["rescale_varies"] = True
    if n_volumes > 1:
        extra["frame_types"] = [stack.frames[i].frame_type for i in order[:n_volumes]]
    files = [str(p) for p in info.files] or [str(stack.frames[0].header.path)]
    source = files[0] if len(files) == 1 else os.path.commonpath(files)
    return VolumeMeta(
        modality=info.modality or str(ds.get("Modality", "") or "") or None,
        series_uid=info.series_instance_uid or str(ds.get("SeriesInstanceUID", "") or "") or None,
        description=info.description or None,
        rescale=None if scales == {(1.0, 0.0)} else (float(first[0]), float(first[1])),
        source=source,
        extra=extra,
    )
