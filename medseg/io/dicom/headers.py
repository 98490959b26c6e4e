"""Reading one file's DICOM header (never its pixel data), and saying why a file cannot be used.

Files with the ``DICM`` preamble are read normally; files without preamble or file meta are
read with ``force=True`` only when their first bytes look like a DICOM data element, so
non-DICOM files (JSON, NIfTI, text, images) are skipped without being parsed. A file that
cannot be used raises :class:`UnusableFile` whose :class:`FileProblem` names what happened:
unreadable (permission denied...), not DICOM although named ``.dcm``, truncated (at N of M
bytes where the header tells M), complete but without pixel data, or a malformed value.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from medseg.errors import printable
from medseg.io.dicom.frames import frames_of
from medseg.io.dicom.series import FileHeader, FileProblem, Frame, UnusableFile
from medseg.io.dicom.values import MalformedValue, PixelFormat, pixel_format, quiet_pydicom
from medseg.io.walk import os_reason

#: Media Storage Directory (DICOMDIR): an index of files, not a data object
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: uncompressed little-endian transfer syntaxes whose pixel bytes can be read directly
NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
#: Deflated Explicit VR Little Endian: the whole dataset is zlib-compressed (pydicom inflates it)
DEFLATED = "1.2.840.10008.1.2.1.99"
#: file name suffixes that promise DICOM: such a file that is not DICOM is reported, not skipped
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".dic")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_VALID_VRS = {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FL",
    b"FD",
    b"IS",
    b"LO",
    b"LT",
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"PN",
    b"SH",
    b"SL",
    b"SQ",
    b"SS",
    b"ST",
    b"SV",
    b"TM",
    b"UC",
    b"UI",
    b"UL",
    b"UN",
    b"UR",
    b"US",
    b"UT",
    b"UV",
}


def sniff_dicom(head: bytes) -> bool | None:
    """``True``: DICOM with preamble; ``False``: looks like raw DICOM (needs force); ``None``: not DICOM.

    Needs the first 132 bytes of a file (fewer when the file is shorter).
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return None
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return None
    if head[4:6] in _VALID_VRS:  # explicit VR
        return False
    length = struct.unpack("<I", head[4:8])[0]
    return False if length < 1024 else None  # implicit VR: a short first element


def read_frames(path: Path) -> tuple[FileHeader, list[Frame]] | None:
    """One file's header and frames, or ``None`` when it is not a DICOM data object.

    Raises :class:`UnusableFile` (naming the file, what happened and, when known, its series)
    for a file that cannot be used, including one whose needed values are malformed.
    """
    header = read_header(path)
    if header is None:
        return None
    try:
        with quiet_pydicom():
            return header, frames_of(header)
    except MalformedValue as exc:
        raise UnusableFile(FileProblem(path, str(exc), series_uid(header.dataset), header)) from None


def read_header(path: Path) -> FileHeader | None:
    """Read one file's DICOM header, or return ``None`` when it is not a DICOM data object.

    Promises a header-only dataset (pixel data never read), the checked pixel format of an
    image and, for uncompressed little-endian files, the byte offset of the Pixel Data element.
    Raises :class:`UnusableFile` for a file that looks like (or is named like) DICOM but cannot
    be used: unreadable, not parseable, truncated, without pixel data, malformed pixel format.
    """
    try:
        with open(path, "rb") as fp, quiet_pydicom():
            parsed = _parse(fp, path)
    except OSError as exc:
        raise UnusableFile(FileProblem(path, os_reason(exc))) from None
    return None if parsed is None else _checked(path, *parsed)


def _parse(fp: BinaryIO, path: Path) -> tuple[Any, bool, int, bytes, int, bytes] | None:
    """(dataset, has preamble, position after the header, next 4 bytes, file size, last 8 bytes)."""
    import pydicom

    size = os.fstat(fp.fileno()).st_size
    kind = sniff_dicom(fp.read(132))
    if kind is None:
        if path.suffix.lower() in DICOM_SUFFIXES or size == 0:
            reason = "empty file" if size == 0 else "not DICOM (no DICOM header)"
            raise UnusableFile(FileProblem(path, reason))
        return None
    fp.seek(0)
    try:
        dataset = pydicom.dcmread(fp, stop_before_pixels=True, force=not kind)
    except Exception as exc:  # pydicom raises many exception types for corrupt files
        detail = printable(f"{type(exc).__name__}: {exc}", 120)
        raise UnusableFile(FileProblem(path, f"not readable as DICOM ({detail}): truncated or corrupt")) from None
    position = fp.tell()
    next_tag = fp.read(4)
    fp.seek(max(size - 8, 0))
    return dataset, kind, position, next_tag, size, fp.read(8)


def _checked(
    path: Path, dataset: Any, preamble: bool, position: int, next_tag: bytes, size: int, tail: bytes
) -> FileHeader | None:
    """The header of a parsed file, or None for a DICOMDIR / non-data object; UnusableFile otherwise."""
    if _is_directory(dataset):
        return None
    uid = series_uid(dataset)
    native = next_tag == _PIXEL_DATA_TAG and _syntax(dataset) in ("", *NATIVE_LITTLE_ENDIAN)
    header = FileHeader(path=path, dataset=dataset, pixel_offset=position if native else None)
    if next_tag == b"" and _syntax(dataset) != DEFLATED and _needs_pixels(dataset, preamble):
        raise UnusableFile(FileProblem(path, _no_pixels_reason(dataset, size, tail), uid, header))
    if "SOPClassUID" not in dataset and "SeriesInstanceUID" not in dataset:
        return None
    if "Rows" not in dataset or "Columns" not in dataset:
        return header
    try:
        pixels = pixel_format(dataset)
    except MalformedValue as exc:
        raise UnusableFile(FileProblem(path, str(exc), uid, header)) from None
    header = FileHeader(path=path, dataset=dataset, pixel_offset=header.pixel_offset, pixels=pixels)
    short = _short_pixel_data(header, size)
    if short:
        raise UnusableFile(FileProblem(path, short, uid, header))
    return header


def series_uid(dataset: Any) -> str | None:
    """SeriesInstanceUID of a (possibly partial) header, cleaned; None when absent."""
    value = printable(dataset.get("SeriesInstanceUID", "") or "")
    return value or None


def _syntax(dataset: Any) -> str:
    """TransferSyntaxUID ('' for files without file meta: implicit VR little endian)."""
    meta = getattr(dataset, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def _is_directory(dataset: Any) -> bool:
    meta = getattr(dataset, "file_meta", None)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset


def _needs_pixels(dataset: Any, preamble: bool) -> bool:
    """An image header that reached the end of the file, or a DICM file that ended before its UIDs."""
    if "Rows" in dataset or sop_name(dataset).endswith("Image Storage"):
        return True
    return preamble and "SeriesInstanceUID" not in dataset


def sop_name(dataset: Any) -> str:
    """The SOP class name (``MR Image Storage``), else its UID, else ''."""
    from pydicom.uid import UID

    uid = printable(dataset.get("SOPClassUID", "") or "")
    return UID(uid).name if uid else ""


def _no_pixels_reason(dataset: Any, size: int, tail: bytes) -> str:
    """A complete file without Pixel Data, or one cut short before it."""
    if "SeriesInstanceUID" in dataset and _ends_cleanly(dataset, size, tail):
        return f"has no pixel data (a {sop_name(dataset) or 'DICOM'} object)"
    return f"truncated at {size} bytes, inside its header"


def _ends_cleanly(dataset: Any, size: int, tail: bytes) -> bool:
    """True when the last element read ends exactly at the end of the file (nothing was cut off)."""
    tags = list(dataset.keys())
    if not tags:
        return False
    element = dataset.get_item(tags[-1])
    start, length = getattr(element, "value_tell", None), getattr(element, "length", None)
    if start is not None and length is not None and length != 0xFFFFFFFF:
        return int(start) + int(length) == size
    return tail == _SEQUENCE_DELIMITER  # an undefined-length sequence closed properly


def _short_pixel_data(header: FileHeader, size: int) -> str | None:
    """``truncated at N of M bytes`` when uncompressed pixel data runs past the end of the file."""
    if header.pixel_offset is None or header.pixels is None:
        return None
    end = pixel_data_end(header)
    return f"truncated at {size} of {end} bytes" if end is not None and size < end else None


def pixel_data_end(header: FileHeader) -> int | None:
    """Byte offset where uncompressed pixel data announced by the header ends (None if unknown)."""
    pixels: PixelFormat | None = header.pixels
    if header.pixel_offset is None or pixels is None or pixels.n_bytes is None:
        return None
    return header.pixel_offset + element_header_size(header) + pixels.n_bytes


def element_header_size(header: FileHeader) -> int:
    """Bytes of the Pixel Data element's tag/VR/length: 8 in implicit VR, 12 in explicit VR."""
    return 8 if is_implicit(header) else 12


def is_implicit(header: FileHeader) -> bool:
    """True when the dataset was encoded in implicit VR (files without file meta are)."""
    return bool(getattr(header.dataset, "original_encoding", (False, True))[0])
