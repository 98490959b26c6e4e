"""Resampling a tilted or irregularly spaced slice stack onto a regular orthogonal grid.

Only used when asked for (``resample=True`` / ``--resample``). The method follows dcm2niix's
gantry-tilt and equidistant-slice corrections, in one step:

* the output axes are the slices' own row and column directions and the slice normal, so the
  grid is orthogonal and every output slice is parallel to the input slices;
* each input slice is translated in-plane to where it really lies (the in-plane drift of a
  tilted stack), with bilinear interpolation; the in-plane extent grows to cover every slice;
* output slices are equidistant along the normal from the first to the last input slice and
  are interpolated linearly between the two nearest input slices;
* slice spacing: the input spacing when it is uniform; otherwise the smallest gap, but never
  more than twice the input slice count (dcm2niix's rule), spanning first to last slice.

Voxels outside every input slice get the stack's minimum value (air for CT), as dcm2niix does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.io.dicom.checks import TILT_TOL_PIXELS, Stack, spacing_is_uniform

#: in-plane drift (pixels) ignored when sizing the output: the same bound the tilt check uses
_ROUND_EPS = TILT_TOL_PIXELS
#: in-plane shifts closer than this (pixels) to a whole pixel are rounding noise in the positions
_SNAP_PIXELS = 1e-3


@dataclass(frozen=True)
class RegularGrid:
    """An orthogonal output grid: LPS ``origin`` of voxel (0,0,0), unit axes, spacing (i, j, k)."""

    origin: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    col_shift: int
    row_shift: int
    distances: np.ndarray

    def affine_lps(self) -> np.ndarray:
        """Voxel (i, j, k) -> LPS mm."""
        affine = np.eye(4)
        affine[:3, 0] = self.row_dir * self.spacing[0]
        affine[:3, 1] = self.col_dir * self.spacing[1]
        affine[:3, 2] = self.normal * self.spacing[2]
        affine[:3, 3] = self.origin
        return affine

    def positions(self) -> np.ndarray:
        """LPS position of voxel (0, 0, k) of every output slice, K x 3."""
        steps = np.arange(self.shape[2])[:, None] * self.spacing[2] * self.normal
        return self.origin[None, :] + steps


def regular_grid(stack: Stack) -> RegularGrid:
    """The orthogonal grid covering every slice of ``stack`` (see the module docstring)."""
    row_spacing, col_spacing = stack.pixel_spacing
    shifts = stack.positions - stack.positions[0]
    col_offsets = shifts @ stack.row_dir / col_spacing
    row_offsets = shifts @ stack.col_dir / row_spacing
    col_lo, col_hi = _span(col_offsets)
    row_lo, row_hi = _span(row_offsets)
    distances = _output_distances(stack.distances)
    origin = stack.positions[0] + col_lo * col_spacing * stack.row_dir + row_lo * row_spacing * stack.col_dir
    spacing_k = float(distances[1] - distances[0]) if distances.size > 1 else 1.0
    return RegularGrid(
        origin=origin,
        row_dir=stack.row_dir,
        col_dir=stack.col_dir,
        normal=stack.normal,
        spacing=(col_spacing, row_spacing, spacing_k),
        shape=(stack.cols + col_hi - col_lo, stack.rows + row_hi - row_lo, int(distances.size)),
        col_shift=col_lo,
        row_shift=row_lo,
        distances=distances,
    )


def _span(offsets: np.ndarray) -> tuple[int, int]:
    """Whole pixels the slices drift below 0 and above 0 (``lo`` <= 0 <= ``hi``)."""
    return int(np.floor(offsets.min() + _ROUND_EPS)), int(np.ceil(offsets.max() - _ROUND_EPS))


def _output_distances(distances: np.ndarray) -> np.ndarray:
    """Equidistant positions along the normal from the first to the last input slice."""
    count = distances.size
    total = float(distances[-1] - distances[0])
    if count < 2 or total <= 0:
        return distances.copy()
    if not spacing_is_uniform(distances):
        gaps = np.diff(distances)
        smallest = float(gaps[gaps > 0].min())
        count = min(int(round(total / smallest)) + 1, 2 * distances.size)
    return distances[0] + np.linspace(0.0, total, count)


def resample_stack(values: np.ndarray, stack: Stack, grid: RegularGrid) -> np.ndarray:
    """Resample ``values`` (K, rows, cols), slice k at ``stack.positions[k]``, onto ``grid``.

    Returns float32 ``(slices, rows, cols)`` of the grid (axis order as the input).
    """
    from scipy import ndimage

    fill = float(values.min())
    row_spacing, col_spacing = stack.pixel_spacing
    shifts = stack.positions - stack.positions[0]
    out_rows, out_cols = grid.shape[1], grid.shape[0]
    moved = np.empty((values.shape[0], out_rows, out_cols), dtype=np.float32)
    for k in range(values.shape[0]):
        offset = _snap(
            grid.row_shift - float(shifts[k] @ stack.col_dir) / row_spacing,
            grid.col_shift - float(shifts[k] @ stack.row_dir) / col_spacing,
        )
        ndimage.affine_transform(
            values[k].astype(np.float32, copy=False),
            np.ones(2),
            offset=offset,
            output_shape=(out_rows, out_cols),
            output=moved[k],
            order=1,
            mode="constant",
            cval=fill,
        )
    return _blend(moved, stack.distances, grid.distances)


def _snap(*offsets: float) -> tuple[float, ...]:
    """Offsets within :data:`_SNAP_PIXELS` of a whole pixel (position rounding noise) made whole."""
    return tuple(float(round(o)) if abs(o - round(o)) < _SNAP_PIXELS else o for o in offsets)


def _blend(moved: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Linear interpolation along the normal between the two input slices around each target."""
    if source.size == 1:
        return moved.copy()
    upper = np.clip(np.searchsorted(source, target, side="right"), 1, source.size - 1)
    lower = upper - 1
    weight = np.clip((target - source[lower]) / (source[upper] - source[lower]), 0.0, 1.0)
    out = np.empty((target.size,) + moved.shape[1:], dtype=np.float32)
    for s, (lo, hi, w) in enumerate(zip(lower, upper, weight.astype(np.float32))):
        np.multiply(moved[lo], 1.0 - w, out=out[s])
        if w > 0:
            out[s] += w * moved[hi]
    return out
