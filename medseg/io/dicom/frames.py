"""One file's header -> :class:`Frame` records: geometry, value scaling, and what kind of image it is.

Every numeric value a frame needs is read through :mod:`medseg.io.dicom.values`, so a malformed
one raises :class:`~medseg.io.dicom.values.MalformedValue` naming it (discovery then skips the
file with a warning) instead of becoming a silent ``None`` ("no geometry") or a bare ValueError.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from medseg.io.dicom.series import FileHeader, Frame
from medseg.io.dicom.values import float_or_none, float_value, float_values, int_or_none, private_value, text, words

#: private creators of the Philips Scale Slope (2005,xx0E) ("PhilipsScaleSlope" in dcm2niix's sidecars)
PHILIPS_CREATORS = ("Philips MR Imaging DD 001", "Philips Imaging DD 001")
#: private creator of the per-frame Philips sequence (2005,xx0F) of enhanced files
PHILIPS_FRAME_CREATORS = ("Philips MR Imaging DD 005",)
#: private creator of Siemens NumberOfImagesInMosaic (0019,xx0A)
SIEMENS_CREATORS = ("SIEMENS MR HEADER",)
#: UIH "MR Number Of Slice In Volume" (0065,1050) of GRID (mosaic) images, per dcm2niix's UIH notes
UIH_SLICES_IN_VOLUME = (0x0065, 0x1050)


def frames_of(header: FileHeader) -> list[Frame]:
    """All frames of one file: one for a classic image, NumberOfFrames for a multi-frame one.

    Needs a header read by :func:`medseg.io.dicom.headers.read_header` (``header.pixels`` set
    for images; files without it have no frames). Enhanced multi-frame geometry comes from the
    Per-frame / Shared Functional Groups (PlanePosition, PlaneOrientation, PixelMeasures,
    PixelValueTransformation, RealWorldValueMapping); classic multi-frame files with a
    GridFrameOffsetVector get positions along the slice normal. Absent geometry gives ``None``
    fields; malformed values raise :class:`~medseg.io.dicom.values.MalformedValue`.
    """
    ds = header.dataset
    if header.pixels is None:
        return []
    n_frames = header.pixels.frames
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return [_enhanced_frame(header, i) for i in range(n_frames)]
    return [_classic_frame(header, i, n_frames) for i in range(n_frames)]


def _classic_frame(header: FileHeader, index: int, n_frames: int) -> Frame:
    ds = header.dataset
    position = float_values(ds, "ImagePositionPatient", 3)
    orientation = float_values(ds, "ImageOrientationPatient", 6)
    if n_frames > 1:
        position = _grid_frame_position(ds, position, orientation, index)
    rescale = _rescale(None, ds)
    assert header.pixels is not None
    return Frame(
        header=header,
        index=index,
        rows=header.pixels.rows,
        cols=header.pixels.cols,
        position=position,
        orientation=orientation,
        pixel_spacing=float_values(ds, "PixelSpacing", 2),
        rescale=rescale,
        stack="",
        order=(int_or_none(ds, "TemporalPositionIdentifier") or 0, _file_time(ds), str(header.path), index),
        frame_type=_last_value(words(ds, "ImageType")),
        real_world=_real_world((ds,), ds, rescale),
    )


def _grid_frame_position(ds: Any, position: Any, orientation: Any, index: int) -> Any:
    """Position of frame ``index`` of a classic multi-frame file (GridFrameOffsetVector)."""
    offsets = float_values(ds, "GridFrameOffsetVector", None)
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

    content = group("FrameContentSequence")
    frame_type = group("MRImageFrameTypeSequence") or group("CTImageFrameTypeSequence")
    rescale = _rescale(group("PixelValueTransformationSequence"), ds)
    assert header.pixels is not None
    return Frame(
        header=header,
        index=index,
        rows=header.pixels.rows,
        cols=header.pixels.cols,
        position=float_values(group("PlanePositionSequence"), "ImagePositionPatient", 3)
        or float_values(ds, "ImagePositionPatient", 3),
        orientation=float_values(group("PlaneOrientationSequence"), "ImageOrientationPatient", 6)
        or float_values(ds, "ImageOrientationPatient", 6),
        pixel_spacing=float_values(group("PixelMeasuresSequence"), "PixelSpacing", 2)
        or float_values(ds, "PixelSpacing", 2),
        rescale=rescale,
        stack=text(content, "StackID"),
        order=(int_or_none(content, "TemporalPositionIndex") or 0, _file_time(ds), str(header.path), index),
        frame_type=_last_value(words(frame_type, "FrameType")),
        real_world=_real_world(tuple(s for s in (item, shared_item) if s is not None), ds, rescale),
    )


def _rescale(source: Any, fallback: Any) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) from a functional group item or the top level; (1, 0) if absent."""
    for item in (source, fallback):
        if item is None:
            continue
        slope = float_value(item, "RescaleSlope")
        intercept = float_value(item, "RescaleIntercept")
        if slope is not None or intercept is not None:
            return (1.0 if slope in (None, 0.0) else slope, intercept or 0.0)
    return (1.0, 0.0)


def _real_world(sources: tuple[Any, ...], ds: Any, rescale: tuple[float, float]) -> tuple[float, float] | None:
    """(slope, intercept) from stored to real-world values, as dcm2niix applies them; None if the header gives none.

    Philips files with a private Scale Slope SS (2005,xx0E) give Philips "precise" values
    ``(SV * RS + RI) / (RS * SS)`` (dcm2niix's default); otherwise a RealWorldValueMappingSequence
    (per frame, shared, or top level) with one linear mapping gives ``SV * slope + intercept``.
    """
    scale = _philips_scale(sources, ds)
    if scale is not None:
        slope, intercept = rescale
        return (1.0 / scale, intercept / (slope * scale))
    for source in sources:
        mapping = _linear_mapping(source)
        if mapping is not None:
            return mapping
    return None


def _philips_scale(sources: tuple[Any, ...], ds: Any) -> float | None:
    """The Philips private Scale Slope of a frame (per-frame private item, else top level), if any."""
    from pydicom.sequence import Sequence

    if "PHILIPS" not in text(ds, "Manufacturer").upper():
        return None
    candidates = [private_value(ds, 0x2005, 0x0E, PHILIPS_CREATORS)]
    for source in sources:
        private = private_value(source, 0x2005, 0x0F, PHILIPS_FRAME_CREATORS)
        if isinstance(private, Sequence) and len(private):
            candidates.insert(0, private_value(private[0], 0x2005, 0x0E, PHILIPS_CREATORS))
    for value in candidates:
        try:
            scale = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(scale) and scale != 0.0:
            return scale
    return None


def _linear_mapping(item: Any) -> tuple[float, float] | None:
    """The one (slope, intercept) of an item's RealWorldValueMappingSequence; None if none or several differ."""
    sequence = item.get("RealWorldValueMappingSequence") if item is not None else None
    mappings = set()
    for mapping in sequence or ():
        slope = float_or_none(mapping, "RealWorldValueSlope")
        if slope is not None and slope != 0.0:
            mappings.add((slope, float_or_none(mapping, "RealWorldValueIntercept") or 0.0))
    return mappings.pop() if len(mappings) == 1 else None


def mosaic_kind(ds: Any) -> str | None:
    """``a Siemens mosaic (36 slices tiled in each image)`` / ``a UIH grid mosaic (...)``, or None.

    Siemens: ImageType MOSAIC or NumberOfImagesInMosaic (0019,xx0A). UIH (dcm2niix's UIH notes):
    ImageType VFRAME or MR Number Of Slice In Volume (0065,1050) on a UIH image.
    """
    image_type = words(ds, "ImageType")
    manufacturer = text(ds, "Manufacturer").upper()
    siemens = _count(private_value(ds, 0x0019, 0x0A, SIEMENS_CREATORS)) if "SIEMENS" in manufacturer else None
    if "MOSAIC" in image_type or siemens:
        return "a Siemens mosaic" + (f" ({siemens} slices tiled in each image)" if siemens else " (ImageType MOSAIC)")
    uih_element = ds.get(UIH_SLICES_IN_VOLUME) if ("UIH" in manufacturer or "UNITED IMAGING" in manufacturer) else None
    uih = _count(getattr(uih_element, "value", None))
    if "VFRAME" in image_type or uih:
        return "a UIH grid mosaic" + (f" ({uih} slices tiled in each image)" if uih else " (ImageType VFRAME)")
    return None


def _count(value: object) -> int | None:
    """A positive slice count from a private value (number, text or raw bytes), else None."""
    if isinstance(value, (bytes, bytearray)):  # read as UN (implicit VR): binary US, or IS/DS text
        raw = bytes(value)
        is_text = raw.strip(b"0123456789. \x00") == b""
        value = raw.decode("latin-1").strip("\x00 ") if is_text or len(raw) != 2 else struct.unpack("<H", raw)[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number >= 1 and number.is_integer() else None


def _file_time(ds: Any) -> str:
    """A sortable acquisition time string for ordering files along the 4th dimension."""
    value = ds.get("AcquisitionDateTime")
    if value:
        return str(value)
    date = str(ds.get("AcquisitionDate", "") or ds.get("ContentDate", "") or "")
    time = str(ds.get("AcquisitionTime", "") or ds.get("ContentTime", "") or "")
    return date + time


def _last_value(values: tuple[str, ...]) -> str:
    return values[-1] if values else ""
