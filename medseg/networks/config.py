"""The topology of a network for one spatial dimensionality: patch, batch, stages, kernels, strides.

The plan (:mod:`medseg.model.plan`) holds one for 3D and one for 2D; every network family of
the registry is built from one. Validated on construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medseg.errors import ConfigError


@dataclass(frozen=True)
class NetworkConfig:
    """Patch, batch and U-Net topology for one spatial dimensionality (3D or 2D).

    ``features``, ``kernel_sizes`` and ``strides`` have one entry per stage; the first stride is
    all ones (no downsampling at full resolution). The patch size is divisible, per axis, by the
    product of that axis's strides, so every stage has whole feature maps.
    """

    patch_size: tuple[int, ...]
    batch_size: int
    features: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))
        object.__setattr__(self, "features", tuple(int(v) for v in self.features))
        object.__setattr__(self, "kernel_sizes", tuple(tuple(int(v) for v in k) for k in self.kernel_sizes))
        object.__setattr__(self, "strides", tuple(tuple(int(v) for v in s) for s in self.strides))
        dims = len(self.patch_size)
        if dims not in (2, 3) or min(self.patch_size) < 1:
            raise ConfigError(f"patch_size must hold 2 or 3 positive sizes, got {list(self.patch_size)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        n = len(self.features)
        if n < 1 or len(self.kernel_sizes) != n or len(self.strides) != n:
            raise ConfigError(
                f"features, kernel_sizes and strides need one entry per stage; got {n}, "
                f"{len(self.kernel_sizes)}, {len(self.strides)}"
            )
        if any(len(k) != dims for k in self.kernel_sizes) or any(len(s) != dims for s in self.strides):
            raise ConfigError(f"every kernel size and stride needs {dims} values (one per patch axis)")
        if any(v != 1 for v in self.strides[0]):
            raise ConfigError(f"the first stage's stride must be all 1s, got {list(self.strides[0])}")
        bad = [p for p, d in zip(self.patch_size, self.divisor) if p % d]
        if bad:
            raise ConfigError(
                f"patch_size {list(self.patch_size)} is not divisible by the network's total stride "
                f"{list(self.divisor)}; use multiples of it, e.g. {list(round_up(self.patch_size, self.divisor))}"
            )

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.patch_size)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Per-axis product of all strides: every patch size must be a multiple of it."""
        return tuple(math.prod(s[d] for s in self.strides) for d in range(len(self.patch_size)))


def round_up(shape: tuple[int, ...], divisor: tuple[int, ...]) -> tuple[int, ...]:
    """Each size rounded up to a multiple of its divisor (at least one multiple)."""
    return tuple(max(d, int(math.ceil(s / d)) * d) for s, d in zip(shape, divisor))
