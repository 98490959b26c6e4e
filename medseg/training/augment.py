"""Training augmentation (MONAI array transforms on torch tensors) and foreground-oversampled patches.

Per training patch, following nnU-Net v2's probabilities:

* spatial, in **one** resample: rotation (p 0.2; ±30° per axis in 3D, ±180° in 2D, in-plane
  only for very anisotropic 3D patches), scaling (p 0.2, one factor in ``scaling``), optional
  elastic deformation (p 0.2) -- MONAI ``Affine`` / ``Rand{2,3}DElastic``; patches needing
  neither are cropped directly, with no interpolation;
* mirroring each axis with p 0.5 (MONAI ``Flip``);
* intensity, image only: Gaussian noise (p 0.1), Gaussian blur (p 0.2), multiplicative
  brightness 0.75-1.25 (p 0.15), contrast 0.75-1.25 around the mean (p 0.15), low-resolution
  simulation 0.5-1x (p 0.25), gamma 0.7-1.5 on the inverted image (p 0.1) and on the image (p 0.3).

Random transforms draw their parameters first and then run a deterministic twin on image and
label alike, so both always see the same geometry (labels nearest-neighbour).

The sampler picks a case, then a patch centre: for forced-foreground patches a recorded
foreground voxel of a random class present in the case; otherwise anywhere (patches may reach
past the border by up to half their size, padded with zeros).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from medseg.training.cache import CaseCache
    from medseg.training.recipe import AugmentationConfig

P_ROTATION = 0.2
P_SCALING = 0.2
P_ELASTIC = 0.2
P_MIRROR = 0.5
ANISOTROPIC_PATCH = 3.0


@dataclass(frozen=True, eq=False)
class SpatialParams:
    """One patch's spatial draw: output->input voxel matrix (None = identity), axes to mirror, elastic."""

    matrix: np.ndarray | None
    flips: tuple[int, ...]
    elastic: bool = False


class PatchAugmenter:
    """Draws spatial parameters, says how large an input region they need, and augments patches.

    Call :meth:`set_random_state` once per worker. ``__call__(image (C,*region), label (1,*region),
    params)`` returns ``(image (C,*patch) float32, label (1,*patch) int64)``.
    """

    def __init__(self, aug: AugmentationConfig, spatial_dims: int, patch_size: Sequence[int]) -> None:
        if spatial_dims not in (2, 3) or len(patch_size) != spatial_dims:
            raise ConfigError(f"patch_size {list(patch_size)} does not fit spatial_dims = {spatial_dims}")
        self.aug = aug
        self.dims = spatial_dims
        self.patch = tuple(int(p) for p in patch_size)
        degrees = aug.rotation_degrees if aug.rotation_degrees is not None else (30.0 if spatial_dims == 3 else 180.0)
        self.max_angle = math.radians(degrees) if aug.rotation else 0.0
        self.rotation_axes = self._rotation_axes()
        self.intensity = _intensity_transforms(aug, spatial_dims)
        self.rng = np.random.default_rng(0)
        self._elastic = _elastic_transform(aug, spatial_dims, self.patch, self.max_angle) if aug.elastic else None

    def _rotation_axes(self) -> tuple[int, ...]:
        """Axes to rotate about: all three, only the thin one for very anisotropic 3D patches, one in 2D."""
        if self.dims == 2:
            return (0,)
        if max(self.patch) / min(self.patch) > ANISOTROPIC_PATCH:
            return (int(np.argmin(self.patch)),)
        return (0, 1, 2)

    def set_random_state(self, seed: int) -> None:
        """Seed this augmenter's own draws and every MONAI random transform in it."""
        self.rng = np.random.default_rng(seed)
        self.intensity.set_random_state(seed=seed % 2**32)
        if self._elastic is not None:
            self._elastic.set_random_state(seed=(seed + 1) % 2**32)

    # ------------------------------------------------------------------ spatial
    def sample(self) -> SpatialParams:
        """Draw rotation / scaling / elastic / mirroring for one patch."""
        rng = self.rng
        matrix = None
        if self.max_angle > 0 and rng.random() < P_ROTATION:
            angles = np.zeros(3 if self.dims == 3 else 1)
            angles[list(self.rotation_axes)] = rng.uniform(-self.max_angle, self.max_angle, len(self.rotation_axes))
            matrix = _rotation(angles, self.dims)
        low, high = self.aug.scaling
        if high > low and rng.random() < P_SCALING:
            scale = rng.uniform(low, high)
            matrix = (matrix if matrix is not None else np.eye(self.dims)) * scale
        elastic = self._elastic is not None and rng.random() < P_ELASTIC
        flips = tuple(a for a in range(self.dims) if self.aug.flips and rng.random() < P_MIRROR)
        return SpatialParams(matrix, flips, elastic)

    def region_size(self, params: SpatialParams) -> tuple[int, ...]:
        """Input region (same parity as the patch) that the draw samples from, around the patch centre."""
        if params.matrix is None and not params.elastic:
            return self.patch
        if params.elastic:  # MONAI draws its own rotation/scaling: cover the worst case
            grow = max(self.aug.scaling[1], 1.0) * (math.sqrt(self.dims) if self.max_angle else 1.0) * 1.25
            extent = (np.asarray(self.patch, dtype=np.float64) - 1) * grow + 3
        else:
            assert params.matrix is not None  # neither identity nor elastic
            extent = np.abs(params.matrix) @ (np.asarray(self.patch, dtype=np.float64) - 1) + 3
        sizes = []
        for e, p in zip(extent, self.patch):
            n = max(p, int(math.ceil(e)))
            sizes.append(n + ((n - p) % 2))  # equal parity keeps the identity grid on voxel centres
        return tuple(sizes)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, params: SpatialParams):
        """Spatial transform of image and label (one resample), mirroring, then intensity transforms."""
        from monai.transforms import Flip

        image, label = self._spatial(image, label.float(), params)
        if params.flips:
            flip = Flip(spatial_axis=list(params.flips))
            image, label = flip(image), flip(label)
        image = self.intensity(image)
        return _plain(image).float(), _plain(label).round().long()

    def _spatial(self, image: torch.Tensor, label: torch.Tensor, params: SpatialParams):
        if params.elastic:
            elastic = self._elastic
            assert elastic is not None  # sample() draws elastic only when the augmenter has the transform
            elastic.randomize(self.patch)
            return (
                elastic(image, self.patch, mode="bilinear", padding_mode="zeros", randomize=False),
                elastic(label, self.patch, mode="nearest", padding_mode="zeros", randomize=False),
            )
        if params.matrix is None:
            return _center_crop(image, self.patch), _center_crop(label, self.patch)
        from monai.transforms import Affine

        homogeneous = np.eye(self.dims + 1)
        homogeneous[: self.dims, : self.dims] = params.matrix
        affine = Affine(affine=homogeneous, spatial_size=self.patch, padding_mode="zeros", image_only=True)
        return affine(image, mode="bilinear"), affine(label, mode="nearest")


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor (MONAI returns MetaTensors unless metadata tracking is off, as in workers)."""
    as_tensor = getattr(tensor, "as_tensor", None)
    return as_tensor() if as_tensor is not None else tensor


def train_transforms(aug: AugmentationConfig, spatial_dims: int, patch_size: Sequence[int]) -> PatchAugmenter:
    """The augmentation pipeline for patches of ``patch_size`` (see :class:`PatchAugmenter`)."""
    return PatchAugmenter(aug, spatial_dims, patch_size)


def _rotation(angles: np.ndarray, dims: int) -> np.ndarray:
    from monai.transforms.utils import create_rotate

    return np.asarray(create_rotate(dims, list(angles) if dims == 3 else float(angles[0])))[:dims, :dims]


def _center_crop(tensor: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    starts = [(n - p) // 2 for n, p in zip(tensor.shape[1:], patch)]
    index = (slice(None), *(slice(s, s + p) for s, p in zip(starts, patch)))
    return tensor[index]


def _elastic_transform(aug: AugmentationConfig, dims: int, patch: tuple[int, ...], max_angle: float):
    """MONAI elastic deformation with rotation and scaling in the same resample (its own draws)."""
    from monai.transforms import Rand2DElastic, Rand3DElastic

    angles = ((-max_angle, max_angle),) * (3 if dims == 3 else 1) if max_angle else None
    scales = ((aug.scaling[0] - 1.0, aug.scaling[1] - 1.0),) * dims
    common: dict[str, Any] = dict(
        prob=1.0, rotate_range=angles, scale_range=scales, spatial_size=patch, padding_mode="zeros"
    )
    if dims == 3:
        return Rand3DElastic(sigma_range=(5, 8), magnitude_range=(50, 150), **common)
    spacing = (max(8, patch[0] // 4), max(8, patch[1] // 4))
    return Rand2DElastic(spacing=spacing, magnitude_range=(0, 2), **common)


def _intensity_transforms(aug: AugmentationConfig, dims: int):
    """nnU-Net's intensity augmentations as a MONAI Compose of array transforms (image only)."""
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandGaussianNoise,
        RandGaussianSmooth,
        RandScaleIntensity,
        RandScaleIntensityFixedMean,
        RandSimulateLowResolution,
        Transform,
    )

    steps: list[Transform] = []
    if aug.noise:
        steps.append(RandGaussianNoise(prob=0.1, mean=0.0, std=0.1))
    if aug.blur:
        steps.append(RandGaussianSmooth(sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2))
    if aug.brightness_contrast:
        steps.append(RandScaleIntensity(factors=(-0.25, 0.25), prob=0.15))
        steps.append(RandScaleIntensityFixedMean(prob=0.15, factors=(-0.25, 0.25), preserve_range=True))
    if aug.low_resolution:
        steps.append(
            RandSimulateLowResolution(
                prob=0.25, zoom_range=(0.5, 1.0), upsample_mode="trilinear" if dims == 3 else "bilinear"
            )
        )
    if aug.gamma:
        steps.append(RandAdjustContrast(prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True))
        steps.append(RandAdjustContrast(prob=0.3, gamma=(0.7, 1.5), invert_image=False, retain_stats=True))
    return Compose(steps)


# ---------------------------------------------------------------------------- patch sampling
def forced_foreground(index: int, batch_size: int, fraction: float) -> bool:
    """nnU-Net's rule: the last ``round(batch * fraction)``-ish samples of a batch hold foreground."""
    return not index < round(batch_size * (1.0 - fraction))


class PatchSampler:
    """Cuts input regions around random or foreground patch centres from cached cases.

    3D: regions of the (C, X, Y, Z) arrays. 2D: one slice across ``slice_axis``, then an in-plane
    region. Returns float32 image regions (C, *region) and uint8 label regions (1, *region).
    """

    def __init__(
        self,
        cache: CaseCache,
        case_ids: Sequence[str],
        spatial_dims: int,
        patch_size: Sequence[int],
        slice_axis: int = 0,
        open_cases: int = 64,
    ) -> None:
        if not case_ids:
            raise ConfigError("no training cases to sample patches from")
        self.cache = cache
        self.case_ids = tuple(case_ids)
        self.dims = spatial_dims
        self.patch = tuple(int(p) for p in patch_size)
        self.slice_axis = slice_axis
        self._open: OrderedDict[str, tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]] = OrderedDict()
        self._max_open = open_cases

    def _case(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        if case_id in self._open:
            self._open.move_to_end(case_id)
            return self._open[case_id]
        entry = (*self.cache.load(case_id), self.cache.foreground(case_id))
        self._open[case_id] = entry
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return entry

    def sample(self, rng: np.random.Generator, region: Sequence[int], foreground: bool):
        """One (image region, label region) pair; ``foreground`` centres it on a foreground voxel."""
        image, label, coords = self._case(self.case_ids[int(rng.integers(len(self.case_ids)))])
        voxel = _foreground_voxel(rng, coords) if foreground else None
        if self.dims == 2:
            axis = self.slice_axis
            index = int(voxel[axis]) if voxel is not None else int(rng.integers(label.shape[axis]))
            image = np.take(image, index, axis=axis + 1)
            label = np.take(label, index, axis=axis)
            voxel = None if voxel is None else np.delete(voxel, axis)
        centre = _patch_centre(rng, label.shape, self.patch, voxel)
        return _crop(image, centre, region, channel=True), _crop(label[None], centre, region, channel=True)


def _foreground_voxel(rng: np.random.Generator, coords: dict[int, np.ndarray]) -> np.ndarray | None:
    classes = [k for k, v in coords.items() if len(v)]
    if not classes:
        return None
    points = coords[classes[int(rng.integers(len(classes)))]]
    return points[int(rng.integers(len(points)))]


def _patch_centre(
    rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int], voxel: np.ndarray | None
) -> list[int]:
    """Centre of a patch inside the image, allowed past the border by up to half the missing size."""
    centre = []
    for axis, (n, p) in enumerate(zip(shape, patch)):
        pad = max(p - n, 0)
        low, high = -(pad // 2), n + pad // 2 + pad % 2 - p
        start = (
            int(rng.integers(low, high + 1)) if voxel is None else int(np.clip(int(voxel[axis]) - p // 2, low, high))
        )
        centre.append(start + p // 2)
    return centre


def _crop(array: np.ndarray, centre: Sequence[int], region: Sequence[int], channel: bool) -> np.ndarray:
    """A zero-padded copy of ``region`` voxels of ``array`` around ``centre`` (leading channel axis kept)."""
    out = np.zeros((array.shape[0], *region), dtype=np.float32 if array.dtype != np.uint8 else np.uint8)
    source, target = [slice(None)], [slice(None)]
    for c, r, n in zip(centre, region, array.shape[1:]):
        start = c - r // 2
        lo, hi = max(start, 0), min(start + r, n)
        if hi <= lo:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    out[tuple(target)] = array[tuple(source)]
    return out
