"""What a volume file's header claims, checked before any voxel memory is allocated.

A header states the grid and the voxel type, so the bytes of voxel data it promises are known
before reading them. :func:`check_claim` refuses, in one line saying why:

* complex voxels (medseg segments real-valued images);
* more voxel data than :func:`max_image_bytes` (default 16 GiB, ``MEDSEG_MAX_IMAGE_GB`` to change
  it), which no real scan needs and a damaged header claims easily (32767^3 voxels);
* more voxel data than the file holds (a 92-byte ``.nii.gz`` claiming 2000^3 voxels), when the
  reader can tell how much it holds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import ConfigError, InputError

#: the environment variable that sets the largest voxel data read from one file, in GiB (may be fractional)
MAX_GB_ENV = "MEDSEG_MAX_IMAGE_GB"
#: the default limit in GiB: a 2048^3 uint16 micro-CT is exactly this
DEFAULT_MAX_GB = 16.0


@dataclass(frozen=True)
class Claim:
    """A header's promise: ``shape`` (every dimension, components included), the voxel type's name
    and size in bytes, and whether it is complex."""

    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    complex: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes of voxel data the header promises."""
        return math.prod(self.shape) * self.itemsize

    def describe(self) -> str:
        """``2000x2000x2000 int16 voxels (14.9 GiB)``."""
        return f"{'x'.join(map(str, self.shape))} {self.dtype} voxels ({format_bytes(self.nbytes)})"


def max_image_bytes() -> int:
    """The largest voxel data medseg reads from one file: ``MEDSEG_MAX_IMAGE_GB`` GiB, default 16.

    Raises ConfigError for a value that is not a positive number.
    """
    text = os.environ.get(MAX_GB_ENV, "").strip()
    if not text:
        return int(DEFAULT_MAX_GB * 1024**3)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"{MAX_GB_ENV}={text!r} is not a positive number of GiB; set it to e.g. 32 or unset it")
    return int(value * 1024**3)


def check_claim(path: Path, claim: Claim, available: int | None = None) -> None:
    """Refuse (InputError) a header whose voxels are complex, exceed :func:`max_image_bytes`, or
    exceed ``available``, the bytes of voxel data the file really holds (None: unknown)."""
    if claim.complex:
        raise InputError(
            f"{path} holds complex ({claim.dtype}) voxels; medseg segments real-valued images: save the "
            "magnitude (or the real part) as a real-valued image first"
        )
    limit = max_image_bytes()
    if claim.nbytes > limit:
        raise InputError(
            f"{path}: its header claims {claim.describe()}, more than the limit of {format_bytes(limit)} "
            f"per image; is the header damaged? (set {MAX_GB_ENV} to read larger images)"
        )
    if available is not None and available < claim.nbytes:
        raise InputError(
            f"{path}: its header claims {claim.describe()} but the file holds {format_bytes(max(available, 0))} "
            "of voxel data; the file is truncated or its header is wrong: re-export or copy it again"
        )


def format_bytes(count: int) -> str:
    """``512 bytes``, ``3.2 MiB``, ``14.9 GiB``."""
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):  # noqa: B007 (the unit reached is printed below)
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"
