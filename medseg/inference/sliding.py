"""Sliding-window prediction with Gaussian blending, batched tiles and mirroring TTA.

A whole volume rarely fits the network at once, so it is covered by overlapping tiles of the
plan's patch size (nnU-Net's step rule: overlap 0.5 by default). Each tile's logits are weighted
by a Gaussian (sigma = tile / 8) that trusts tile centres over tile borders, added in place into
one preallocated float32 accumulator (one fused multiply-add per tile), and finally divided by
the summed weights, which are computed in one pass as an outer product of per-axis sums.
Several tiles go through the network per forward call. 2D models run on the slices of a 3D volume, many slices' tiles per forward call.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from medseg.errors import ConfigError

#: A network call: float32 tiles (B, C, *patch) -> float32 logits (B, K, *patch), any device.
Forward = Callable[[torch.Tensor], torch.Tensor]

Window = tuple[slice, ...]


@dataclass(frozen=True)
class WindowConfig:
    """How to tile a volume. ``mirror_axes`` are spatial axes (0-based) flipped for TTA."""

    patch_size: tuple[int, ...]
    overlap: float = 0.5
    tiles_per_batch: int = 2
    mirror_axes: tuple[int, ...] = ()
    sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.tiles_per_batch < 1:
            raise ConfigError(f"tiles per batch must be at least 1, got {self.tiles_per_batch}")
        if any(p < 1 for p in self.patch_size):
            raise ConfigError(f"patch size must be positive, got {self.patch_size}")
        bad = [a for a in self.mirror_axes if not 0 <= a < len(self.patch_size)]
        if bad:
            raise ConfigError(f"mirror axes {bad} do not exist for a {len(self.patch_size)}D patch")


def tile_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of tiles covering ``size`` voxels with a step of about ``patch * (1 - overlap)``.

    Needs ``size >= patch``. The first tile starts at 0, the last ends at ``size``, the others are
    spread evenly in between (nnU-Net's rule), so every voxel is covered.
    """
    if size < patch:
        raise ValueError(f"size {size} is smaller than the patch {patch}; pad first")
    step = max(1.0, patch * (1.0 - overlap))
    n = math.ceil((size - patch) / step) + 1
    if n == 1:
        return [0]
    actual = (size - patch) / (n - 1)
    return [int(round(actual * i)) for i in range(n)]


def tile_grid(shape: Sequence[int], patch: Sequence[int], overlap: float) -> list[Window]:
    """All tile windows (tuples of slices) covering an array of ``shape`` (each dim >= patch)."""
    starts = [tile_starts(s, p, overlap) for s, p in zip(shape, patch)]
    return [tuple(slice(o, o + p) for o, p in zip(origin, patch)) for origin in itertools.product(*starts)]


def _gaussian_1d(size: int, sigma_scale: float) -> np.ndarray:
    """exp(-x^2 / 2 sigma^2) over a tile axis centred at (size - 1) / 2, sigma = size * sigma_scale (max 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    return np.exp(-0.5 * (x / max(size * sigma_scale, 1e-6)) ** 2)


@lru_cache(maxsize=8)
def _gaussian_numpy(patch: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    weights = _gaussian_1d(patch[0], sigma_scale)
    for p in patch[1:]:
        weights = np.multiply.outer(weights, _gaussian_1d(p, sigma_scale))
    return weights.astype(np.float32)


def gaussian_weights(
    patch: Sequence[int], sigma_scale: float = 0.125, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A separable Gaussian over a tile (max 1 at the centre, strictly positive, symmetric), float32."""
    return torch.from_numpy(_gaussian_numpy(tuple(int(p) for p in patch), float(sigma_scale))).to(device)


def weight_map(
    shape: Sequence[int],
    patch: Sequence[int],
    overlap: float,
    sigma_scale: float = 0.125,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The sum of the tile Gaussians of :func:`tile_grid` over an array of ``shape``, float32.

    The tile grid is a Cartesian product and the Gaussian separable, so the sum is the outer
    product of one 1D sum per axis: O(voxels), one pass, instead of one add per tile.
    """
    axes = []
    for size, p in zip(shape, patch):
        profile = np.zeros(size, dtype=np.float64)
        g = _gaussian_1d(p, sigma_scale)
        for start in tile_starts(size, p, overlap):
            profile[start : start + p] += g
        axes.append(torch.from_numpy(profile.astype(np.float32)).to(device))
    weights = axes[0]
    for a in axes[1:]:
        weights = torch.outer(weights.reshape(-1), a).reshape(*weights.shape, a.shape[0])
    return weights


def mirrored(forward: Forward, axes: Sequence[int]) -> Forward:
    """Wrap ``forward`` so it averages the logits over every flip combination of ``axes``.

    Each flipped input's output is flipped back before averaging (2^len(axes) passes).
    """
    if not axes:
        return forward
    combos = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]

    def run(x: torch.Tensor) -> torch.Tensor:
        total = forward(x)
        for combo in combos[1:]:
            dims = [a + 2 for a in combo]
            total += torch.flip(forward(torch.flip(x, dims)), dims)
        return total.div_(len(combos))

    return run


def _pad_to_patch(image: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad spatial dims smaller than the patch (centred); return the padded image and the crop back."""
    spatial = image.shape[2:]
    pads, crop = [], [slice(None), slice(None)]
    for size, p in zip(spatial, patch):
        total = max(0, p - size)
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + size))
    if not any(sum(p) for p in pads):
        return image, tuple(crop)
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants the last dim first
    return F.pad(image, flat), tuple(crop)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _tile_index(n: int, window: Window) -> tuple[int | slice, ...]:
    """The index of tile ``window`` of image ``n`` in a (N, C, *spatial) array, all channels."""
    return (n, slice(None), *window)


def sliding_window(
    forward: Forward,
    image: torch.Tensor,
    num_classes: int,
    config: WindowConfig,
    accumulate_on: torch.device | str | None = None,
) -> torch.Tensor:
    """Blend tile logits over ``image`` (N, C, *spatial) into (N, K, *spatial) float32 logits.

    Needs ``len(spatial) == len(config.patch_size)``; ``forward`` must return ``num_classes``
    channels. Tiles of all N images share one geometry and are batched together.
    ``accumulate_on`` is where the float32 accumulator lives (default: the image's device).
    Promises: a weighted average of logits (Gaussian weights), the same spatial shape as ``image``.
    """
    patch = tuple(config.patch_size)
    if image.dim() != 2 + len(patch):
        raise ValueError(f"image must be (N, C, {len(patch)} spatial dims), got {tuple(image.shape)}")
    device = torch.device(accumulate_on) if accumulate_on is not None else image.device
    padded, crop = _pad_to_patch(image, patch)
    shape = tuple(padded.shape[2:])
    gauss = gaussian_weights(patch, config.sigma_scale, device)
    windows = tile_grid(shape, patch, config.overlap)
    acc = torch.zeros((padded.shape[0], num_classes, *shape), dtype=torch.float32, device=device)
    run = mirrored(forward, config.mirror_axes)
    tasks = [(n, w) for n in range(padded.shape[0]) for w in windows]
    with torch.inference_mode():
        for batch in _batches(tasks, config.tiles_per_batch):
            tiles = torch.stack([padded[_tile_index(n, w)] for n, w in batch])
            logits = run(tiles).to(device=device, dtype=torch.float32)
            if logits.shape[1] != num_classes or tuple(logits.shape[2:]) != patch:
                raise ValueError(
                    f"the network returned {tuple(logits.shape)} for tiles {tuple(tiles.shape)}; "
                    f"expected {num_classes} classes at the patch size {patch}"
                )
            for (n, w), tile in zip(batch, logits):
                acc[_tile_index(n, w)].addcmul_(tile, gauss)  # weighted add in place, no temporary
        acc /= weight_map(shape, patch, config.overlap, config.sigma_scale, device)
    return acc[crop]


def predict_volume(
    forward: Forward,
    image: torch.Tensor,
    num_classes: int,
    config: WindowConfig,
    slice_axis: int | None = None,
    accumulate_on: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits (K, X, Y, Z) for a preprocessed image (C, X, Y, Z) with a 3D or a 2D network.

    With a 2D patch, ``slice_axis`` (0, 1 or 2) names the axis the network slices along; the
    slices are predicted as a batch and restacked.
    """
    if image.dim() != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got {tuple(image.shape)}")
    if len(config.patch_size) == 3:
        return sliding_window(forward, image[None], num_classes, config, accumulate_on)[0]
    if len(config.patch_size) != 2 or slice_axis not in (0, 1, 2):
        raise ValueError(f"a 2D patch needs slice_axis 0, 1 or 2, got {slice_axis}")
    slices = image.movedim(1 + slice_axis, 0)  # (S, C, A, B)
    logits = sliding_window(forward, slices, num_classes, config, accumulate_on)  # (S, K, A, B)
    return logits.movedim(0, 1 + slice_axis)
