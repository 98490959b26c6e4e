"""Reading DICOM headers (never pixel data) and turning them into :class:`Frame` records.

Files with the ``DICM`` preamble are read normally; files without preamble or file meta are
read with ``force=True`` only when their first bytes look like a DICOM data element, so
non-DICOM files (JSON, NIfTI, text, images) are skipped without being parsed.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from medseg.errors import DicomError
from medseg.io.dicom.series import FileHeader, Frame

#: Media Storage Directory (DICOMDIR): an index of files, not a data object
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: uncompressed little-endian transfer syntaxes whose pixel bytes can be read directly
NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_VALID_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
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


def read_header(path: Path) -> FileHeader | None:
    """Read one file's DICOM header, or return ``None`` when it is not a DICOM data object.

    Promises a header-only dataset (pixel data never read) and, for uncompressed little-endian
    files, the byte offset of the Pixel Data element. Raises :class:`DicomError` when the file
    looks like DICOM but cannot be parsed or ends early (truncated or corrupt).
    """
    import pydicom

    try:
        with open(path, "rb") as fp:
            kind = sniff_dicom(fp.read(132))
            if kind is None:
                return None
            fp.seek(0)
            dataset = pydicom.dcmread(fp, stop_before_pixels=True, force=not kind)
            position = fp.tell()
            next_tag = fp.read(4)
    except OSError as exc:
        raise DicomError(f"{path} cannot be read ({exc.strerror}); check the file permissions") from None
    except Exception as exc:  # pydicom raises many exception types for corrupt files
        raise DicomError(
            f"{path} looks like DICOM but cannot be parsed ({type(exc).__name__}: {exc}); "
            "the file is truncated or corrupt: re-export it"
        ) from None
    if _is_directory(dataset):
        return None
    if _truncated(dataset, preamble=kind, at_end=next_tag == b""):
        raise DicomError(f"{path} ends before its pixel data (truncated or corrupt DICOM file); re-export it")
    if "SOPClassUID" not in dataset and "SeriesInstanceUID" not in dataset:
        return None
    offset = position if next_tag == _PIXEL_DATA_TAG and _native(dataset) else None
    return FileHeader(path=path, dataset=dataset, pixel_offset=offset)


def _native(dataset: Any) -> bool:
    """Uncompressed little-endian pixel data (no file meta means implicit VR little endian)."""
    meta = getattr(dataset, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return not syntax or syntax in NATIVE_LITTLE_ENDIAN


def _is_directory(dataset: Any) -> bool:
    meta = getattr(dataset, "file_meta", None)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in dataset


def _truncated(dataset: Any, preamble: bool, at_end: bool) -> bool:
    """An image header that reached the end of the file without pixel data, or a DICM file without UIDs."""
    if not at_end:
        return False
    from pydicom.uid import UID

    sop_name = UID(str(dataset.get("SOPClassUID", "") or "")).name
    if "Rows" in dataset or sop_name.endswith("Image Storage"):
        return True
    return preamble and "SeriesInstanceUID" not in dataset


def frames_of(header: FileHeader) -> list[Frame]:
    """All frames of one file: one for a classic image, NumberOfFrames for a multi-frame one.

    Enhanced multi-frame geometry comes from the Per-frame / Shared Functional Groups
    (PlanePosition, PlaneOrientation, PixelMeasures, PixelValueTransformation); classic
    multi-frame files with a GridFrameOffsetVector get positions along the slice normal.
    Headers without geometry give frames whose geometry fields are ``None``.
    """
    ds = header.dataset
    if "Rows" not in ds or "Columns" not in ds:
        return []
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return [_enhanced_frame(header, i) for i in range(n_frames)]
    return [_classic_frame(header, i, n_frames) for i in range(n_frames)]


def _classic_frame(header: FileHeader, index: int, n_frames: int) -> Frame:
    ds = header.dataset
    position = _floats(ds, "ImagePositionPatient", 3)
    orientation = _floats(ds, "ImageOrientationPatient", 6)
    if n_frames > 1:
        position = _grid_frame_position(ds, position, orientation, index)
    return Frame(
        header=header,
        index=index,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        position=position,
        orientation=orientation,
        pixel_spacing=_floats(ds, "PixelSpacing", 2),
        rescale=_rescale(ds, ds),
        stack="",
        order=(_int(ds.get("TemporalPositionIdentifier")) or 0, _file_time(ds), str(header.path), index),
        frame_type=_last_value(ds.get("ImageType")),
    )


def _grid_frame_position(ds: Any, position: Any, orientation: Any, index: int) -> Any:
    """Position of frame ``index`` of a classic multi-frame file (GridFrameOffsetVector)."""
    offsets = _floats(ds, "GridFrameOffsetVector", None)
    if position is None or orientation is None or offsets is None or index >= len(offsets):
        return None if index else position
    import numpy as np

    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    return tuple(float(v) for v in np.asarray(position) + offsets[index] * normal)


def _enhanced_frame(header: FileHeader, index: int) -> Frame:
    ds = header.dataset
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    item = per_frame[index] if per_frame is not None and index < len(per_frame) else None
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared_item = shared[0] if shared else None

    def group(name: str) -> Any:
        for source in (item, shared_item):
            if source is not None and name in source and len(source[name].value):
                return source[name].value[0]
        return None

    position = group("PlanePositionSequence")
    orientation = group("PlaneOrientationSequence")
    measures = group("PixelMeasuresSequence")
    content = group("FrameContentSequence")
    frame_type = group("MRImageFrameTypeSequence") or group("CTImageFrameTypeSequence")
    return Frame(
        header=header,
        index=index,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        position=_floats(position, "ImagePositionPatient", 3) or _floats(ds, "ImagePositionPatient", 3),
        orientation=_floats(orientation, "ImageOrientationPatient", 6)
        or _floats(ds, "ImageOrientationPatient", 6),
        pixel_spacing=_floats(measures, "PixelSpacing", 2) or _floats(ds, "PixelSpacing", 2),
        rescale=_rescale(group("PixelValueTransformationSequence"), ds),
        stack=str(content.get("StackID", "")) if content is not None else "",
        order=(
            _int(content.get("TemporalPositionIndex")) if content is not None else 0,
            _file_time(ds),
            str(header.path),
            index,
        ),
        frame_type=_last_value(frame_type.get("FrameType") if frame_type is not None else None),
    )


def _rescale(source: Any, fallback: Any) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) from a functional group item or the top level; (1, 0) if absent."""
    for item in (source, fallback):
        if item is None:
            continue
        slope = _float(item.get("RescaleSlope"))
        intercept = _float(item.get("RescaleIntercept"))
        if slope is not None or intercept is not None:
            return (1.0 if slope in (None, 0.0) else slope, intercept or 0.0)
    return (1.0, 0.0)


def _floats(item: Any, keyword: str, count: int | None) -> tuple[float, ...] | None:
    """A multi-valued numeric attribute as floats, or None when absent, malformed or short."""
    if item is None or keyword not in item:
        return None
    try:
        value = item[keyword].value
        if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            value = [value]
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if count is not None and len(values) < count:
        return None
    return tuple(values[:count] if count else values)


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _file_time(ds: Any) -> str:
    """A sortable acquisition time string for ordering files along the 4th dimension."""
    value = ds.get("AcquisitionDateTime")
    if value:
        return str(value)
    date = str(ds.get("AcquisitionDate", "") or ds.get("ContentDate", "") or "")
    time = str(ds.get("AcquisitionTime", "") or ds.get("ContentTime", "") or "")
    return date + time


def _last_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return str(list(value)[-1]) if len(value) else ""
    except TypeError:
        return str(value)
