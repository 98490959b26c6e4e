"""NRRD and MetaImage (MHA/MHD) files through SimpleITK, header checked before the voxels are read.

SimpleITK allocates the whole image a header describes before reading it, so the header is read
first (``ImageFileReader.ReadImageInformation``) and :func:`medseg.io.limits.check_claim`
refuses complex voxels, images beyond the size limit and, for uncompressed raw data, more voxel
data than the file (or its detached data file) holds. Compressed data (NRRD ``encoding: gzip``,
MetaImage ``CompressedData = True``) cannot be measured without inflating it: only the limit
applies to it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.io.limits import Claim, check_claim

if TYPE_CHECKING:
    import SimpleITK as sitk

#: the longest text header looked at for the data's position (real headers are a few KiB)
_HEADER_LIMIT = 1024**2
_BITS = re.compile(r"(\d+)-bit")


def read_sitk(path: Path) -> sitk.Image:
    """The image in the NRRD/MHA/MHD file ``path``, after :func:`check_claim` accepted its header.

    Raises InputError for a refused header; SimpleITK's RuntimeError for an unreadable file.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    kind = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = _BITS.search(kind)
    components = reader.GetNumberOfComponents()
    shape = tuple(int(s) for s in reader.GetSize()) + ((components,) if components > 1 else ())
    itemsize = int(bits.group(1)) // 8 if bits else 1
    claim = Claim(shape, kind, itemsize * (2 if "complex" in kind else 1), "complex" in kind)
    check_claim(path, claim, raw_data_bytes(path) if bits else None)
    return reader.Execute()


def raw_data_bytes(path: Path) -> int | None:
    """Bytes of uncompressed voxel data the file at ``path`` (or the data file it names) holds;
    None when that cannot be told from the header (compressed, split, or unusual layouts)."""
    try:
        head = _text_header(path)
    except OSError:
        return None
    if head is None:
        return None
    fields, end = head
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        return _nrrd_bytes(path, fields, end)
    return _metaimage_bytes(path, fields, end)


def _text_header(path: Path) -> tuple[dict[str, str], int] | None:
    """(lower-case key -> value, the byte offset after the header) of a NRRD or MetaImage header."""
    with open(path, "rb") as handle:
        text = handle.read(_HEADER_LIMIT)
    nrrd = text.startswith(b"NRRD")
    fields: dict[str, str] = {}
    position = 0
    for line in text.splitlines(keepends=True):
        position += len(line)
        stripped = line.strip().decode("latin-1")
        if nrrd and not stripped:
            return fields, position
        key, sep, value = stripped.partition(":" if nrrd else "=")
        if nrrd and ":=" in stripped:
            continue  # a key/value comment, not a field
        if sep:
            fields[key.strip().lower()] = value.strip()
        if not nrrd and key.strip().lower() == "elementdatafile":
            return fields, position
    return (fields, position) if nrrd else None


def _nrrd_bytes(path: Path, fields: dict[str, str], end: int) -> int | None:
    if fields.get("encoding", "").lower() != "raw" or fields.get("line skip", "0") != "0":
        return None
    skip = fields.get("byte skip", "0")
    data = fields.get("data file", fields.get("datafile"))
    if data is None:
        return os.path.getsize(path) - end - (int(skip) if skip.isdigit() else 0)
    return _detached_bytes(path, data, skip)


def _metaimage_bytes(path: Path, fields: dict[str, str], end: int) -> int | None:
    if fields.get("compresseddata", "false").lower() == "true":
        return None
    skip = fields.get("headersize", "0")
    data = fields.get("elementdatafile", "")
    if data.upper() == "LOCAL":
        return os.path.getsize(path) - end - (int(skip) if skip.isdigit() else 0)
    return _detached_bytes(path, data, skip)


def _detached_bytes(path: Path, data: str, skip: str) -> int | None:
    """Size of a single detached data file named ``data`` (beside ``path``), less ``skip`` bytes."""
    if not data or " " in data or "%" in data or data.upper().startswith("LIST"):
        return None  # file lists and patterns: several files
    target = path.parent / data
    if not target.is_file():
        return None  # SimpleITK says it is missing
    return os.path.getsize(target) - (int(skip) if skip.isdigit() else 0)
