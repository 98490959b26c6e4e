"""Preprocessing shared by training and inference, and its exact inverse.

Steps (each recorded in a :class:`PreprocessRecord`):

1. reorient to the closest RAS axes (nibabel ``io_orientation``; permutations and flips only,
   no interpolation);
2. resample to ``plan.target_spacing`` only when some axis differs by more than
   :data:`SPACING_TOLERANCE` (relative): images linear (torch) or cubic (scipy), labels nearest
   (never for a ``plan.pixel_grid`` plan: images stay on their own grid);
3. normalise each channel as the plan says (per-image z-score, or CT clip + dataset z-score);
   with ``plan.bright_objects``, negate every channel of an image whose objects are darker than
   its background (:func:`dark_objects`; recorded as a negative divisor in ``intensity``).

Grids map voxel centres to voxel centres with edges aligned (``align_corners=False``): output
voxel ``o`` of an axis resized from ``n_in`` to ``n_out`` samples input coordinate
``(o + 0.5) * n_in / n_out - 0.5``. The inverse uses the same rule backwards and ends on the
recorded source affine (never recomputed), so restored outputs lie exactly on the source grid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.model.plan import Normalization, Plan
from medseg.volume import Volume, VolumeMeta

#: relative spacing difference below which an axis is not resampled
SPACING_TOLERANCE = 0.01
#: background probability above which a voxel counts as background when restoring probabilities
BACKGROUND_CERTAIN = 1.0 - 1e-3
#: share of boundary voxels in a slab above which restore_argmax resamples the whole slab
DENSE_FRACTION = 0.1


@dataclass(frozen=True, eq=False)
class PreprocessRecord:
    """Everything needed to map arrays on the preprocessed grid back onto the source grid.

    ``orientation`` holds nibabel's ``io_orientation`` rows ``(canonical axis, flip ±1)`` per
    source axis. ``shape``/``affine`` describe the preprocessed grid (RAS affine). ``intensity``
    holds per channel the ``(subtract, divide)`` values the normalisation used.
    """

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    orientation: tuple[tuple[int, int], ...]
    canonical_shape: tuple[int, int, int]
    canonical_spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    affine: np.ndarray
    resampled: bool
    intensity: tuple[tuple[float, float], ...] = ()
    source: str | None = None

    def __post_init__(self) -> None:
        for name in ("source_affine", "affine"):
            matrix = np.array(getattr(self, name), dtype=np.float64)
            matrix.flags.writeable = False
            object.__setattr__(self, name, matrix)
        object.__setattr__(self, "orientation", tuple((int(a), int(f)) for a, f in self.orientation))
        for name in ("source_shape", "canonical_shape", "shape"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "canonical_spacing", tuple(float(v) for v in self.canonical_spacing))
        object.__setattr__(self, "intensity", tuple((float(a), float(b)) for a, b in self.intensity))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the preprocessed grid."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_dict` rebuilds the record exactly)."""
        return {
            "source_shape": list(self.source_shape),
            "source_affine": self.source_affine.tolist(),
            "orientation": [list(o) for o in self.orientation],
            "canonical_shape": list(self.canonical_shape),
            "canonical_spacing": list(self.canonical_spacing),
            "shape": list(self.shape),
            "affine": self.affine.tolist(),
            "resampled": self.resampled,
            "intensity": [list(v) for v in self.intensity],
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def to_json(self) -> str:
        """The record as one JSON document (float64 values round-trip exactly)."""
        return json.dumps(self.to_dict())


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """A preprocessed case: ``array`` (C, X, Y, Z) float32 on the plan's grid, and its record."""

    array: np.ndarray
    record: PreprocessRecord = field(repr=False)


# ------------------------------------------------------------------------- public API
def preprocess_case(images: Sequence[Volume], plan: Plan) -> Preprocessed:
    """Reorient, resample and normalise one case's channel images for ``plan``.

    Needs one 3D image per plan channel, all on one grid. Promises ``array`` of shape
    (C, *record.shape), float32, finite.
    """
    images = [v.require_3d() for v in images]
    if len(images) != len(plan.channels):
        raise InputError(
            f"the plan expects {len(plan.channels)} channel(s) ({', '.join(plan.channels)}) but "
            f"{len(images)} image(s) were given; give one image per channel"
        )
    first = images[0]
    for image in images[1:]:
        if not image.same_grid(first):
            raise GeometryError("the channel images lie on different grids; resample them onto the first channel")
    target = canonical_geometry(first.affine, first.spatial_shape)[1] if plan.pixel_grid else plan.target_spacing
    record = _geometry_record(first, target)
    channels, intensity = [], []
    for image, norm in zip(images, plan.normalization):
        canonical = to_canonical(np.asarray(image.array, dtype=np.float32), record)
        resampled = _resample_image(canonical, record, plan.image_interpolation)
        normalised, values = normalize(resampled, norm)
        channels.append(normalised)
        intensity.append(values)
    if plan.bright_objects and dark_objects(channels):
        for channel in channels:
            np.negative(channel, out=channel)
        intensity = [(subtract, -divide) for subtract, divide in intensity]
    record = _replace_intensity(record, tuple(intensity))
    return Preprocessed(np.stack(channels), record)


def dark_objects(channels: Sequence[np.ndarray], samples: int = 100_000) -> bool:
    """True when an image's objects are darker than its background.

    Objects cover the smaller part of an image (nuclei, cells, lesions), so the brightness
    distribution leans towards them: few bright pixels on a dark background (fluorescence) put the
    mean above the median; few dark pixels on a bright background (bright-field, H&E) put it below.
    Needs the normalised channels of one image; judged on their mean, on at most ``samples``
    evenly strided pixels.
    """
    grey = np.mean([np.asarray(c, dtype=np.float32).ravel() for c in channels], axis=0)
    step = max(1, grey.size // samples)
    sample = grey[::step]
    return bool(np.median(sample) > float(sample.mean()))


def preprocess_label(label: Volume, record: PreprocessRecord) -> np.ndarray:
    """The label on the preprocessed grid, (X, Y, Z) uint8, nearest-neighbour only.

    Needs a label on the source grid the record was made from (GeometryError otherwise) with
    values in 0..255.
    """
    label = label.require_3d()
    if label.spatial_shape != record.source_shape or not np.allclose(label.affine, record.source_affine, atol=1e-3):
        raise GeometryError(
            f"the label grid (shape {label.spatial_shape}) is not the image grid it must match "
            f"(shape {record.source_shape}); resample the label onto its image (nearest)"
        )
    array = np.asarray(label.array)
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise InputError(f"label values must lie in 0..255 for training, got {int(array.min())}..{int(array.max())}")
    canonical = to_canonical(array.astype(np.uint8, copy=False), record)
    if not record.resampled:
        return np.ascontiguousarray(canonical)
    return resample_nearest(canonical, record.shape)


def preprocess_instances(instances: Volume, record: PreprocessRecord) -> np.ndarray:
    """An instance map on the preprocessed grid, (X, Y, Z), nearest-neighbour only, ids kept
    (uint16, uint32 beyond 65535 ids).

    Needs an instance map (0 = background, non-negative ids) on the source grid the record was
    made from (GeometryError otherwise).
    """
    instances = instances.require_3d()
    if instances.spatial_shape != record.source_shape or not np.allclose(
        instances.affine, record.source_affine, atol=1e-3
    ):
        raise GeometryError(
            f"the instance map grid (shape {instances.spatial_shape}) is not the image grid it must match "
            f"(shape {record.source_shape}); resample it onto its image (nearest)"
        )
    array = np.asarray(instances.array)
    top = int(array.max(initial=0))
    if array.size and int(array.min()) < 0:
        raise InputError(f"instance ids must be non-negative, got {int(array.min())}")
    canonical = to_canonical(array.astype(np.uint16 if top <= 65535 else np.uint32, copy=False), record)
    if not record.resampled:
        return np.ascontiguousarray(canonical)
    return resample_nearest(canonical, record.shape)


def restore_labels(labels: np.ndarray, record: PreprocessRecord, meta: VolumeMeta | None = None) -> Volume:
    """Labels on the preprocessed grid -> a label Volume with exactly the source shape and affine."""
    labels = np.asarray(labels)
    if labels.shape != record.shape:
        raise GeometryError(f"labels of shape {labels.shape} do not match the preprocessed grid {record.shape}")
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"restore_labels needs integer labels, got {labels.dtype}; take the argmax first")
    canonical = resample_nearest(labels, record.canonical_shape) if record.resampled else labels
    source = np.ascontiguousarray(from_canonical(canonical, record))
    return Volume(source, record.source_affine, "label", meta or VolumeMeta(source=record.source))


def restore_probabilities(probs: np.ndarray, record: PreprocessRecord, dtype: Any = np.float32) -> np.ndarray:
    """Class probabilities (C, *record.shape) -> (C, *source_shape) on the source grid.

    Resamples linearly, class by class, only inside the bounding box of voxels that are not
    certainly background (channel 0 below :data:`BACKGROUND_CERTAIN`); outside it the result
    is background 1, other classes 0. Memory: the output in ``dtype`` plus one box-sized class
    map at a time, never float64 full-resolution maps.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[1:] != record.shape:
        raise GeometryError(f"probabilities of shape {probs.shape} do not match (C, {record.shape})")
    out = np.zeros((probs.shape[0], *record.source_shape), dtype=dtype)
    view = to_canonical(out, record, channel_first=True)  # writes land in source order
    if not record.resampled:
        view[...] = probs
        return out
    box = _uncertain_box(probs)
    if probs.shape[0] > 1:
        view[0] = 1
    if box is None:
        return out
    pre_box, coords = _box_coordinates(box, record.shape, record.canonical_shape)
    for c in range(probs.shape[0]):
        source_index: tuple[Any, ...] = (c, *pre_box)
        target_index: tuple[Any, ...] = (c, *coords.target)
        view[target_index] = _resample_linear(probs[source_index], coords.axes)
    return out


def restore_argmax(probs: np.ndarray, record: PreprocessRecord, planes: int = 8) -> np.ndarray:
    """Labels on the source grid: the argmax of the probabilities ``restore_probabilities`` would
    give (linear resampling), without materialising them. Ties go to the lower class.

    Needs probabilities (C, *record.shape). Promises a source-shaped uint8 array (uint16 beyond
    256 classes). Exactness: a linearly resampled value is a convex combination of the 8
    preprocessed voxels around it, so where all 8 share one argmax that class wins; only voxels
    of cells whose corners disagree (the label boundaries) are interpolated, class by class, with
    the same separable lerp as :func:`restore_probabilities`. Memory: the output (Fortran
    order, as NIfTI files store it) plus ``planes`` canonical planes of work at a time.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[1:] != record.shape:
        raise GeometryError(f"probabilities of shape {probs.shape} do not match (C, {record.shape})")
    low_labels = argmax_labels(probs)
    out = np.zeros(record.source_shape, dtype=low_labels.dtype, order="F")  # NIfTI's order: written without a copy
    view = to_canonical(out, record)
    if not record.resampled:
        view[...] = low_labels
        return out
    uniform = _uniform_cells(low_labels)
    axes = [_linear_axis(n, m) for n, m in zip(record.shape, record.canonical_shape)]
    (lx, hx, wx), (ly, hy, wy), (lz, hz, wz) = axes
    for z0 in range(0, record.canonical_shape[2], planes):
        zs = slice(z0, min(z0 + planes, record.canonical_shape[2]))
        mixed = ~_gather(uniform, lx, ly, lz[zs])
        count = int(np.count_nonzero(mixed))
        if count > DENSE_FRACTION * mixed.size:  # many boundaries: resample the slab densely
            lo, hi = int(lz[zs].min()), int(hz[zs].max()) + 1
            slab = [(lx, hx, wx), (ly, hy, wy), (lz[zs] - lo, hz[zs] - lo, wz[zs])]
            labels = argmax_labels(np.stack([_resample_linear(probs[c, :, :, lo:hi], slab) for c in range(len(probs))]))
        else:
            labels = _gather(low_labels, lx, ly, lz[zs])
            if count:
                ox, oy, oz = np.nonzero(mixed)
                gz = oz + z0
                corners = (lx[ox], hx[ox], wx[ox]), (ly[oy], hy[oy], wy[oy]), (lz[gz], hz[gz], wz[gz])
                labels[ox, oy, oz] = argmax_labels(np.stack([_lerp_points(p, corners) for p in probs]))
        view[:, :, zs] = labels
    return out


def argmax_labels(probs: np.ndarray) -> np.ndarray:
    """Class index of the largest value along axis 0 (ties -> lower class), uint8 (uint16 beyond
    256 classes), without an int64 full-size temporary."""
    labels = np.zeros(probs.shape[1:], dtype=np.uint8 if probs.shape[0] <= 256 else np.uint16)
    best = np.array(probs[0], copy=True)
    for c in range(1, probs.shape[0]):
        better = probs[c] > best
        labels[better] = c
        np.copyto(best, probs[c], where=better)
    return labels


def _uniform_cells(labels: np.ndarray) -> np.ndarray:
    """True at (i, j, k) where the voxels i..i+1, j..j+1, k..k+1 (clamped at the edge) share a label."""
    high, low = labels.copy(), labels.copy()
    for axis in range(3):
        index = np.minimum(np.arange(labels.shape[axis]) + 1, labels.shape[axis] - 1)
        np.maximum(high, np.take(high, index, axis=axis), out=high)
        np.minimum(low, np.take(low, index, axis=axis), out=low)
    return high == low


def _gather(array: np.ndarray, ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """``array[np.ix_(ix, iy, iz)]``, one axis at a time, smallest result first."""
    return np.ascontiguousarray(array[:, :, iz][:, iy][ix])


def _lerp_points(values: np.ndarray, corners) -> np.ndarray:
    """Separable linear interpolation of a 3D float array at scattered points, axis 0 first (the
    order and arithmetic of :func:`_resample_linear`, so both give the same numbers)."""
    import torch

    (lx, hx, wx), (ly, hy, wy), (lz, hz, wz) = corners
    source = torch.from_numpy(np.require(values, np.float32))

    def at(ix, iy, iz):
        return source[torch.from_numpy(ix), torch.from_numpy(iy), torch.from_numpy(iz)]

    tx, ty, tz = (torch.from_numpy(w) for w in (wx, wy, wz))
    planes = []
    for iz in (lz, hz):
        rows = [torch.lerp(at(lx, iy, iz), at(hx, iy, iz), tx) for iy in (ly, hy)]
        planes.append(torch.lerp(rows[0], rows[1], ty))
    return torch.lerp(planes[0], planes[1], tz).numpy()


# ------------------------------------------------------------------------- orientation
def _geometry_record(image: Volume, target: tuple[float, float, float]) -> PreprocessRecord:
    import nibabel as nib

    shape = image.spatial_shape
    ornt = nib.orientations.io_orientation(image.affine)
    canonical_affine = image.affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    order = [int(a) for a in ornt[:, 0]]
    axes_shape = [0, 0, 0]
    for source_axis, axis in enumerate(order):
        axes_shape[axis] = shape[source_axis]
    canonical_shape = (axes_shape[0], axes_shape[1], axes_shape[2])
    norms = np.linalg.norm(canonical_affine[:3, :3], axis=0)
    spacing = (float(norms[0]), float(norms[1]), float(norms[2]))
    new_shape = target_shape(canonical_shape, spacing, target)
    resampled = new_shape != canonical_shape
    affine = canonical_affine @ _scale_matrix(canonical_shape, new_shape) if resampled else canonical_affine
    return PreprocessRecord(
        source_shape=shape,
        source_affine=image.affine,
        orientation=tuple((int(a), int(f)) for a, f in ornt),
        canonical_shape=canonical_shape,
        canonical_spacing=spacing,
        shape=new_shape,
        affine=affine,
        resampled=resampled,
        source=image.meta.source,
    )


def canonical_geometry(
    affine: np.ndarray, shape: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and spacing along the closest-RAS axes of a grid (what preprocessing resamples)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    out_shape, out_spacing = [0, 0, 0], [0.0, 0.0, 0.0]
    for source_axis, axis in enumerate(int(a) for a in ornt[:, 0]):
        out_shape[axis], out_spacing[axis] = int(shape[source_axis]), float(spacing[source_axis])
    return (out_shape[0], out_shape[1], out_shape[2]), (out_spacing[0], out_spacing[1], out_spacing[2])


def target_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, int, int]:
    """The grid size after resampling: unchanged on axes within :data:`SPACING_TOLERANCE` of target."""
    out = []
    for n, s, t in zip(shape, spacing, target):
        close = abs(s - t) <= SPACING_TOLERANCE * t
        out.append(n if close else max(1, int(round(n * s / t))))
    return tuple(out)  # type: ignore[return-value]


def to_canonical(array: np.ndarray, record: PreprocessRecord, channel_first: bool = False) -> np.ndarray:
    """A view of a source-ordered array in canonical axis order (flips, then a transpose)."""
    offset = 1 if channel_first else 0
    for axis, (_, flip) in enumerate(record.orientation):
        if flip < 0:
            array = np.flip(array, axis + offset)
    perm = [0, 0, 0]
    for axis, (target, _) in enumerate(record.orientation):
        perm[target] = axis
    lead = list(range(offset))
    return array.transpose(lead + [p + offset for p in perm] + list(range(offset + 3, array.ndim)))


def from_canonical(array: np.ndarray, record: PreprocessRecord) -> np.ndarray:
    """A view of a canonical (X, Y, Z) array back in source axis order (inverse of to_canonical)."""
    array = array.transpose([target for target, _ in record.orientation])
    for axis, (_, flip) in enumerate(record.orientation):
        if flip < 0:
            array = np.flip(array, axis)
    return array


# ------------------------------------------------------------------------- resampling
def _scale_matrix(n_in: tuple[int, ...], n_out: tuple[int, ...]) -> np.ndarray:
    """Voxel map from the resized grid to the original: x = s * o + (s - 1) / 2 per axis."""
    scale = np.array(n_in, dtype=np.float64) / np.array(n_out, dtype=np.float64)
    matrix = np.diag([*scale, 1.0])
    matrix[:3, 3] = (scale - 1.0) / 2.0
    return matrix


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


def resample_nearest(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of a 3D array to ``shape`` (voxel centres, edges aligned)."""
    index = [_nearest_index(n, m) for n, m in zip(array.shape, shape)]
    return np.ascontiguousarray(array[np.ix_(*index)])


@dataclass(frozen=True)
class _AxisCoords:
    """Per axis: lower index, upper index and weight of the linear interpolation."""

    axes: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    target: tuple[slice, ...] = ()


def _linear_axis(n_in: int, n_out: int, start: int = 0, stop: int | None = None):
    x = (np.arange(start, n_out if stop is None else stop) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    low = np.floor(x).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (x - low).astype(np.float32)


def _resample_linear(array: np.ndarray, axes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Separable linear interpolation of a 3D array (torch, float32) at the given per-axis coords."""
    import torch

    array = np.asarray(array, dtype=np.float32)
    flipped = [axis for axis in range(array.ndim) if array.strides[axis] < 0]
    for axis in flipped:  # torch takes no negative strides: read flipped axes with mirrored indices
        array = np.flip(array, axis)
    if not array.flags.writeable:
        array = array.copy()
    tensor = torch.from_numpy(array)  # any memory order (a NIfTI volume is Fortran-ordered): no copy
    for axis, (low, high, weight) in enumerate(axes):
        if axis in flipped:
            n = tensor.shape[axis] - 1
            low, high = n - low, n - high
        a = tensor.index_select(axis, torch.from_numpy(low))
        b = tensor.index_select(axis, torch.from_numpy(high))
        shape = [1, 1, 1]
        shape[axis] = -1
        tensor = torch.lerp(a, b, torch.from_numpy(weight).view(shape))
    return tensor.numpy()


def _resample_image(array: np.ndarray, record: PreprocessRecord, interpolation: str) -> np.ndarray:
    if not record.resampled:
        return np.array(array, dtype=np.float32, order="C")  # a fresh copy: normalised in place
    if interpolation == "cubic":
        from scipy import ndimage

        zoom = [m / n for n, m in zip(array.shape, record.shape)]
        out = ndimage.zoom(np.ascontiguousarray(array), zoom, order=3, mode="nearest", grid_mode=True)
        return out.astype(np.float32, copy=False)
    axes = [_linear_axis(n, m) for n, m in zip(array.shape, record.shape)]
    return _resample_linear(array, axes)


def _uncertain_box(probs: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (with a 1-voxel margin) of voxels not certainly background; None if none."""
    if probs.shape[0] == 1:
        return tuple(slice(0, n) for n in probs.shape[1:])
    mask = probs[0] < BACKGROUND_CERTAIN
    if not mask.any():
        return None
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, int(hits[0]) - 1), min(probs.shape[axis + 1], int(hits[-1]) + 2)))
    return tuple(box)


def _box_coordinates(
    box: tuple[slice, ...], n_pre: tuple[int, ...], n_canonical: tuple[int, ...]
) -> tuple[tuple[slice, ...], _AxisCoords]:
    """The canonical voxels whose samples fall inside ``box`` and their coords relative to the box."""
    pre_box, target, axes = [], [], []
    for part, n_in, n_out in zip(box, n_pre, n_canonical):
        x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)  # as _linear_axis samples
        inside = np.flatnonzero((x >= part.start) & (x <= part.stop - 1))
        if inside.size == 0:  # the box falls between two output samples: take the nearest one
            inside = np.array([int(np.clip(np.argmin(np.abs(x - (part.start + part.stop - 1) / 2)), 0, n_out - 1))])
        start, stop = int(inside[0]), int(inside[-1]) + 1
        low, high, weight = _linear_axis(n_in, n_out, start, stop)
        lo = int(low.min())
        hi = int(high.max()) + 1
        pre_box.append(slice(lo, hi))
        target.append(slice(start, stop))
        axes.append((low - lo, high - lo, weight))
    return tuple(pre_box), _AxisCoords(tuple(axes), tuple(target))


# ------------------------------------------------------------------------- normalisation
def normalize(array: np.ndarray, norm: Normalization) -> tuple[np.ndarray, tuple[float, float]]:
    """Normalise one float32 channel in place; returns it and the (subtract, divide) values used."""
    if norm.scheme == "none":
        return array, (0.0, 1.0)
    if norm.scheme == "ct":
        np.clip(array, norm.clip_low, norm.clip_high, out=array)
        mean, std = float(norm.mean), float(norm.std)  # type: ignore[arg-type]
    else:
        mean = float(array.mean(dtype=np.float64))
        std = float(array.std(dtype=np.float64))
    std = std if std > 1e-8 and math.isfinite(std) else 1.0
    array -= np.float32(mean)
    array /= np.float32(std)
    return array, (mean, std)


def _replace_intensity(record: PreprocessRecord, intensity: tuple[tuple[float, float], ...]) -> PreprocessRecord:
    from dataclasses import replace

    return replace(record, intensity=intensity)
