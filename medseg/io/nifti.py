"""NIfTI files through nibabel, with gzip done by ISA-L (python-isal) instead of zlib.

nibabel reads and writes ``.nii.gz`` with Python's zlib-based ``gzip`` module: on a real CT
here about 0.3 GB/s of voxels inflating and 0.1 GB/s deflating, so a 512x512x300 int16 volume
costs about 2 s to read and write back. ISA-L's igzip reads and writes the same standard gzip
streams about 2x faster for images and 3-5x for label maps (``python -m
benchmarks.nifti_io`` in a source checkout). Headers, affines and voxels are still nibabel's: only the byte
stream around them changes. Plain ``.nii`` files go straight to nibabel (memory-mapped when
possible).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from medseg.io.atomic import full_suffix

if TYPE_CHECKING:
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

#: gzip level for written ``.nii.gz`` files: ISA-L's level 1 (nibabel's default is zlib level 1).
COMPRESS_LEVEL = 1
#: ``sizeof_hdr``, the first 4 bytes of a NIfTI header: 348 for NIfTI-1, 540 for NIfTI-2.
_HEADER_SIZES = {348: "Nifti1Image", 540: "Nifti2Image"}


def is_gzipped(path: str | os.PathLike[str]) -> bool:
    """True for a ``.nii.gz`` name."""
    return full_suffix(Path(path)).lower() == ".nii.gz"


def _image_class(head: bytes) -> Any:
    """The nibabel NIfTI class whose ``sizeof_hdr`` the first 4 bytes hold (either byte order)."""
    import nibabel as nib

    for order in ("little", "big"):
        name = _HEADER_SIZES.get(int.from_bytes(head[:4], order))
        if name:
            return getattr(nib, name)
    return None


def load_nifti(path: str | os.PathLike[str]) -> "SpatialImage":
    """Open a ``.nii`` or ``.nii.gz`` file as a nibabel image.

    A gzipped file is inflated into memory with ISA-L (its voxels are then read from memory);
    anything that does not start with a NIfTI-1/2 header goes to ``nibabel.load``, so its error
    messages stay nibabel's. Raises what nibabel or igzip raise for unreadable files.
    """
    import nibabel as nib

    if not is_gzipped(path):
        return cast("SpatialImage", nib.load(os.fspath(path)))
    from isal import igzip

    with igzip.open(os.fspath(path), "rb") as handle:
        data = handle.read()
    image_class = _image_class(data)
    if image_class is None:
        return cast("SpatialImage", nib.load(os.fspath(path)))
    return cast("SpatialImage", image_class.from_stream(io.BytesIO(data)))


def save_nifti(image: "nib.Nifti1Image", path: str | os.PathLike[str]) -> None:
    """Write ``image`` to ``path`` (``.nii`` or ``.nii.gz`` by name); gzip streams are written by
    ISA-L at :data:`COMPRESS_LEVEL`. Not atomic by itself: callers write to a temporary path."""
    import nibabel as nib

    if not is_gzipped(path):
        nib.save(image, os.fspath(path))
        return
    from isal import igzip

    with igzip.open(os.fspath(path), "wb", compresslevel=COMPRESS_LEVEL) as handle:
        image.to_stream(handle)
