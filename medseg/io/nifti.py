"""NIfTI files through nibabel, with gzip done by ISA-L (python-isal) instead of zlib.

nibabel reads and writes ``.nii.gz`` with Python's zlib-based ``gzip`` module: on a real CT
here about 0.3 GB/s of voxels inflating and 0.1 GB/s deflating, so a 512x512x300 int16 volume
costs about 2 s to read and write back. ISA-L's igzip reads and writes the same standard gzip
streams about 2x faster for images and 3-5x for label maps (``python -m
benchmarks.nifti_io`` in a source checkout). Headers, affines and voxels are still nibabel's: only the byte
stream around them changes. Plain ``.nii`` files go straight to nibabel (memory-mapped when
possible). Every header is checked before its voxels are read (:func:`load_nifti`,
:mod:`medseg.io.limits`), so a damaged or hostile header never allocates what it claims.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from medseg.io.atomic import full_suffix
from medseg.io.limits import Claim, check_claim

if TYPE_CHECKING:
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

#: gzip level for written ``.nii.gz`` files: ISA-L's level 1 (nibabel's default is zlib level 1).
COMPRESS_LEVEL = 1
#: ``sizeof_hdr``, the first 4 bytes of a NIfTI header: 348 for NIfTI-1, 540 for NIfTI-2.
_HEADER_SIZES = {348: "Nifti1Image", 540: "Nifti2Image"}
#: bytes read to parse a header (a NIfTI-2 header is the larger)
_HEADER_BYTES = 540
#: bytes inflated at a time when the gzip trailer cannot tell the length
_CHUNK = 4 * 1024**2


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


def load_nifti(path: str | os.PathLike[str]) -> SpatialImage:
    """Open a ``.nii`` or ``.nii.gz`` file as a nibabel image, after checking what its header claims.

    The header is read first and :func:`medseg.io.limits.check_claim` refuses (InputError)
    complex voxels, voxel data beyond the size limit, and voxel data the file does not hold: a
    ``.nii`` must be long enough; a ``.nii.gz`` is inflated by ISA-L only up to the claimed size,
    in one piece when the gzip trailer (ISIZE, the length mod 2^32) agrees with the header, else
    in chunks that stop where the stream ends. Anything that does not start with a NIfTI-1/2
    header goes to ``nibabel.load``, so its error messages stay nibabel's. Raises what nibabel or
    igzip raise for otherwise unreadable files.
    """
    import nibabel as nib

    head = _read_head(path)
    image_class = _image_class(head)
    parsed = _claim(image_class, head) if image_class is not None else None
    if parsed is None:
        return cast("SpatialImage", nib.load(os.fspath(path)))
    claim, offset = parsed
    if not is_gzipped(path):
        check_claim(Path(path), claim, os.path.getsize(path) - offset)
        return cast("SpatialImage", nib.load(os.fspath(path)))
    check_claim(Path(path), claim)  # the limit, before inflating anything
    data = _inflate(path, offset + claim.nbytes)
    check_claim(Path(path), claim, len(data) - offset)
    return cast("SpatialImage", image_class.from_stream(io.BytesIO(data)))


def _read_head(path: str | os.PathLike[str]) -> bytes:
    """The first bytes of the (inflated) file: room for a NIfTI-2 header."""
    if not is_gzipped(path):
        with open(path, "rb") as handle:
            return handle.read(_HEADER_BYTES)
    from isal import igzip

    with igzip.open(os.fspath(path), "rb") as handle:
        return handle.read(_HEADER_BYTES)


def _claim(image_class: Any, head: bytes) -> tuple[Claim, int] | None:
    """(what the header claims, where the voxel data starts), or None when nibabel cannot parse it
    (then ``nibabel.load`` reports why, allocating nothing)."""
    try:
        header = image_class.header_class.from_fileobj(io.BytesIO(head), check=False)
        shape = tuple(int(d) for d in header.get_data_shape())
        dtype = header.get_data_dtype()
        offset = max(int(header.get_data_offset()), header.sizeof_hdr)
    except Exception:  # nibabel raises several types for a damaged header
        return None
    return Claim(shape, str(dtype), dtype.itemsize, dtype.kind == "c"), offset


def _inflate(path: str | os.PathLike[str], needed: int) -> bytes:
    """The first ``needed`` bytes of the gzip stream at ``path`` (fewer when it ends sooner)."""
    from isal import igzip

    with igzip.open(os.fspath(path), "rb") as handle:
        if _gzip_isize(path) == needed % 2**32:  # the trailer agrees: read it in one piece
            return cast(bytes, handle.read(needed))
        chunks, total = [], 0
        while total < needed:
            chunk = handle.read(min(_CHUNK, needed - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks)


def _gzip_isize(path: str | os.PathLike[str]) -> int | None:
    """ISIZE, the last 4 bytes of a gzip file: its inflated length mod 2^32 (of the last member)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() < 18:  # smaller than an empty gzip member
            return None
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def save_nifti(image: nib.Nifti1Image, path: str | os.PathLike[str]) -> None:
    """Write ``image`` to ``path`` (``.nii`` or ``.nii.gz`` by name); gzip streams are written by
    ISA-L at :data:`COMPRESS_LEVEL`. Not atomic by itself: callers write to a temporary path."""
    import nibabel as nib

    if not is_gzipped(path):
        nib.save(image, os.fspath(path))
        return
    from isal import igzip

    with igzip.open(os.fspath(path), "wb", compresslevel=COMPRESS_LEVEL) as handle:
        image.to_stream(handle)
