"""Geometry checks: is a set of frames one regular volume, and if not, why not.

Slices are sorted by their distance along the slice normal (ImagePositionPatient dotted with
the cross product of the ImageOrientationPatient row and column directions), never by
InstanceNumber. The checks report, each in one line naming the fix:

* mixed orientations, matrix sizes or pixel spacings (not one stack);
* missing geometry (a 2D image such as a radiograph);
* frames of a multi-frame series that do not form complete volumes;
* too few slices (fewer than ``min_slices``, 3 by default);
* gantry tilt (the positions step away from the slice normal) and non-uniform slice spacing /
  missing slices. Only these two can be repaired, by resampling onto a regular grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import GeometryError
from medseg.io.dicom.series import Frame

#: largest difference of direction cosines for two frames to count as one orientation
ORIENTATION_TOL = 1e-3
#: frames closer than this (mm) along the slice normal share one slice position
POSITION_TOL_MM = 0.01
#: largest deviation of a slice from the regular grid, as a fraction of the slice spacing
SPACING_TOL = 0.01
#: largest in-plane drift of the last slice relative to the first, in pixels, before it is tilt
TILT_TOL_PIXELS = 0.1
#: the fix named in every message about a problem resampling repairs
RESAMPLE_HINT = "rerun with --resample (resample=True) to resample onto a regular grid"


def directions(orientation: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction and slice normal (LPS) from ImageOrientationPatient.

    GeometryError when the orientation is missing or degenerate.
    """
    if orientation is None:
        raise GeometryError("ImageOrientationPatient is missing; the slices have no orientation")
    values = np.asarray(orientation, dtype=np.float64)
    row, col = values[:3], values[3:6]
    row_norm, col_norm = np.linalg.norm(row), np.linalg.norm(col)
    if row_norm < 1e-6 or col_norm < 1e-6:
        raise GeometryError(f"ImageOrientationPatient {list(values)} is degenerate; the headers are corrupt")
    row, col = row / row_norm, col / col_norm
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def same_orientation(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """True when two ImageOrientationPatient values agree within :data:`ORIENTATION_TOL`."""
    if a is None or b is None:
        return a is None and b is None
    return bool(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))) <= ORIENTATION_TOL)


def orientation_groups(frames: Sequence[Frame]) -> list[list[Frame]]:
    """Frames split by orientation (first-seen order); one group when all agree."""
    groups: list[list[Frame]] = []
    for frame in frames:
        for group in groups:
            if same_orientation(group[0].orientation, frame.orientation):
                group.append(frame)
                break
        else:
            groups.append([frame])
    return groups


def position_groups(distances: np.ndarray) -> list[np.ndarray]:
    """Indices of ``distances`` sorted ascending, grouped where they lie within :data:`POSITION_TOL_MM`."""
    order = np.argsort(distances, kind="stable")
    if order.size == 0:
        return []
    sorted_d = distances[order]
    breaks = np.flatnonzero(np.diff(sorted_d) > POSITION_TOL_MM) + 1
    return np.split(order, breaks)


@dataclass(frozen=True)
class Stack:
    """Frames arranged as slices along the normal: ``slices[k]`` indexes ``frames``.

    ``slices[k]`` lists the frames at slice position k, sorted by their 4th-dimension order.
    ``positions[k]`` is the LPS position of slice k (its first frame), ``distances[k]`` its
    distance along ``normal``. ``pixel_spacing`` is (row spacing, column spacing) in mm.
    """

    frames: tuple[Frame, ...]
    slices: tuple[tuple[int, ...], ...]
    positions: np.ndarray
    distances: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def counts(self) -> np.ndarray:
        """How many frames share each slice position."""
        return np.array([len(s) for s in self.slices], dtype=int)


def build_stack(frames: Sequence[Frame], label: str) -> Stack:
    """Sort frames into slices along the normal, refusing anything that is not one stack.

    Needs at least one frame. Raises :class:`GeometryError` for missing geometry, mixed
    orientations, matrix sizes or pixel spacings.
    """
    frames = tuple(frames)
    first = frames[0]
    _require_geometry(frames, label)
    n_orientations = len(orientation_groups(frames))
    if n_orientations > 1:
        raise GeometryError(
            f"{label} mixes {n_orientations} slice orientations (mixed orientation, "
            "e.g. a localizer or several planes in one series); select one orientation "
            "(`medseg series` lists each part as its own series)"
        )
    matrices = {(f.rows, f.cols) for f in frames}
    if len(matrices) > 1:
        raise GeometryError(
            f"{label} mixes matrix sizes {sorted(matrices)}; select one part (`medseg series` lists each)"
        )
    spacings = np.array([f.pixel_spacing for f in frames], dtype=np.float64)
    if np.ptp(spacings, axis=0).max() > 1e-3 * spacings.max():
        found = sorted({tuple(s) for s in spacings.tolist()})
        raise GeometryError(f"{label} mixes pixel spacings {found}; not one volume")
    row, col, normal = directions(first.orientation)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    distances = positions @ normal
    slices = []
    for group in position_groups(distances):
        slices.append(tuple(sorted(group.tolist(), key=lambda i: frames[i].order)))
    firsts = [s[0] for s in slices]
    return Stack(
        frames=frames,
        slices=tuple(slices),
        positions=positions[firsts],
        distances=distances[firsts],
        row_dir=row,
        col_dir=col,
        normal=normal,
        pixel_spacing=(float(spacings[0][0]), float(spacings[0][1])),
        rows=first.rows,
        cols=first.cols,
    )


def _require_geometry(frames: Sequence[Frame], label: str) -> None:
    missing = [
        name
        for name, attr in (
            ("ImagePositionPatient", "position"),
            ("ImageOrientationPatient", "orientation"),
            ("PixelSpacing", "pixel_spacing"),
        )
        if any(getattr(f, attr) is None for f in frames)
    ]
    if missing:
        raise GeometryError(
            f"{label} has no {' / '.join(missing)} on some images: a 2D image (e.g. a radiograph) "
            "or a non-volumetric export, not a volume; medseg needs a slice stack with patient geometry"
        )


def check_frames_complete(stack: Stack, label: str) -> int:
    """Number of volumes along the 4th dimension; raises when positions hold different counts."""
    counts = stack.counts
    if counts.min() != counts.max():
        raise GeometryError(
            f"{label}: the frames do not form complete volumes (slice positions hold {counts.min()} "
            f"to {counts.max()} frames; stacks cover different positions); select one stack"
        )
    return int(counts[0])


def check_slice_count(stack: Stack, min_slices: int, label: str) -> None:
    """Raise when the stack has fewer than ``min_slices`` distinct slice positions."""
    if stack.n_slices < min_slices:
        raise GeometryError(
            f"{label} has {stack.n_slices} slice position(s), fewer than the {min_slices} a volume "
            "needs (too few slices); pass the folder holding the whole series, or lower min_slices"
        )


def regularity_problems(stack: Stack, gantry_tilt: float | None = None) -> list[str]:
    """Problems resampling can repair: gantry tilt and non-uniform spacing ([] for a regular stack)."""
    problems = []
    tilt = tilt_degrees(stack)
    if tilt is not None:
        tag = f", GantryDetectorTilt {gantry_tilt:g}°" if gantry_tilt else ""
        problems.append(f"gantry tilt of {tilt:.1f}° (slice positions step away from the slice normal{tag})")
    gaps = np.diff(stack.distances)
    if gaps.size and not spacing_is_uniform(stack.distances):
        problems.append(
            f"inconsistent slice increment (gaps along the slice normal of {gaps.min():.4g} to "
            f"{gaps.max():.4g} mm: missing slices or variable spacing)"
        )
    return problems


def tilt_degrees(stack: Stack) -> float | None:
    """Angle between the slice normal and the position stepping direction, or None if negligible."""
    if stack.n_slices < 2:
        return None
    step = stack.positions[-1] - stack.positions[0]
    along = float(step @ stack.normal)
    drift = float(np.linalg.norm(step - along * stack.normal))
    if drift <= TILT_TOL_PIXELS * min(stack.pixel_spacing):
        return None
    return float(np.degrees(np.arctan2(drift, abs(along))))


def spacing_is_uniform(distances: np.ndarray) -> bool:
    """True when every slice lies within :data:`SPACING_TOL` of a regular grid from first to last."""
    if distances.size < 3:
        return True
    spacing = (distances[-1] - distances[0]) / (distances.size - 1)
    grid = distances[0] + spacing * np.arange(distances.size)
    return bool(np.max(np.abs(distances - grid)) <= SPACING_TOL * abs(spacing) + 1e-6)


def regularity_error(stack: Stack, problems: list[str], label: str) -> GeometryError:
    """The one-line error for tilt / spacing problems, naming the resample fix."""
    return GeometryError(f"{label}: {' and '.join(problems)}; {RESAMPLE_HINT}")
