"""Pixel data: decoding each file once, and applying the modality rescale.

Uncompressed little-endian pixel data is read straight from the file at the offset found
while reading the header (one ``read`` per file, no second header parse). Everything else
(JPEG baseline/lossless, JPEG 2000, JPEG-LS, RLE, deflated, big endian) goes through pydicom's
``pixel_array`` with the installed pylibjpeg / pyjpegls plugins.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from medseg.errors import DicomError
from medseg.io.dicom.series import FileHeader

_EXPLICIT_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"}
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")


def decode_file(header: FileHeader) -> np.ndarray:
    """Stored pixel values of one file as ``(frames, rows, columns)``.

    Needs a greyscale image. Raises :class:`DicomError` for colour images, truncated pixel
    data, or a compressed transfer syntax no installed plugin can decode.
    """
    ds = header.dataset
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip()
    if photometric not in _GREYSCALE or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(
            f"{header.path} holds colour pixels ({photometric}); medseg reads greyscale volumes only"
        )
    array = _read_native(header) if header.pixel_offset is not None else None
    if array is None:
        array = _read_with_pydicom(header)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    return array.reshape(frames, rows, cols)


def _native_dtype(ds: object) -> np.dtype | None:
    bits = int(getattr(ds, "BitsAllocated", 0) or 0)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32):
        return None
    return np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")


def _read_native(header: FileHeader) -> np.ndarray | None:
    """Read uncompressed pixel bytes directly; None when this file needs pydicom instead."""
    ds = header.dataset
    dtype = _native_dtype(ds)
    if dtype is None:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = int(ds.Rows) * int(ds.Columns) * frames * dtype.itemsize
    implicit = bool(getattr(ds, "original_encoding", (False, True))[0])
    if header.pixel_offset is None:
        return None
    with open(header.path, "rb") as fp:
        fp.seek(header.pixel_offset)
        element = fp.read(12)
        length = _element_length(element, implicit)
        if length is None:
            return None
        fp.seek(header.pixel_offset + (8 if implicit else 12))
        data = fp.read(min(length, expected))
    if len(data) < expected:
        raise DicomError(
            f"{header.path} is truncated: its pixel data has {len(data)} of the {expected} bytes "
            "the header announces; re-export the series"
        )
    array = np.frombuffer(data, dtype=dtype)
    return _sign_extend(array, ds)


def _element_length(element: bytes, implicit: bool) -> int | None:
    """Value length from the Pixel Data element header; None if encapsulated or unexpected."""
    if implicit:
        length = struct.unpack("<I", element[4:8])[0] if len(element) >= 8 else None
    elif len(element) >= 12 and element[4:6] in _EXPLICIT_LONG_VRS:
        length = struct.unpack("<I", element[8:12])[0]
    else:
        length = None
    return None if length is None or length == 0xFFFFFFFF else length


def _sign_extend(array: np.ndarray, ds: object) -> np.ndarray:
    """Signed values stored in fewer bits than allocated get their sign bit extended (as pydicom does)."""
    bits_allocated = int(getattr(ds, "BitsAllocated", 16))
    bits_stored = int(getattr(ds, "BitsStored", bits_allocated) or bits_allocated)
    if array.dtype.kind != "i" or bits_stored >= bits_allocated:
        return array
    shift = bits_allocated - bits_stored
    return (array << shift) >> shift


def _read_with_pydicom(header: FileHeader) -> np.ndarray:
    import pydicom

    try:
        return np.asarray(pydicom.dcmread(header.path, force=True).pixel_array)
    except Exception as exc:  # pydicom/plugins raise many types (missing plugin, corrupt stream)
        meta = getattr(header.dataset, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        raise DicomError(
            f"cannot decode the pixel data of {header.path} ({name}: {type(exc).__name__}: {exc}); "
            "the file may be truncated, or install the decoder plugins (pylibjpeg, "
            "pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls)"
        ) from None


def rescale(stored: np.ndarray, slopes: Sequence[float], intercepts: Sequence[float]) -> np.ndarray:
    """Apply RescaleSlope/Intercept per frame to ``stored`` (frames on axis 0).

    Keeps an integer dtype when every slope is 1 and every intercept is one integer and the
    result fits (the stored dtype, else int16/int32); otherwise returns float32.
    """
    slope_values = np.asarray(slopes, dtype=np.float64)
    intercept_values = np.asarray(intercepts, dtype=np.float64)
    uniform = np.all(slope_values == 1.0) and np.all(intercept_values == intercept_values[0])
    if uniform and float(intercept_values[0]).is_integer() and np.issubdtype(stored.dtype, np.integer):
        intercept = int(intercept_values[0])
        if intercept == 0:
            return stored
        dtype = _int_dtype_for(stored, intercept)
        if dtype is not None:
            out = stored.astype(dtype, copy=True)
            out += dtype.type(intercept)
            return out
    out = stored.astype(np.float32)
    shape = (-1,) + (1,) * (stored.ndim - 1)
    out *= slope_values.astype(np.float32).reshape(shape)
    out += intercept_values.astype(np.float32).reshape(shape)
    return out


def _int_dtype_for(stored: np.ndarray, intercept: int) -> np.dtype | None:
    low = int(stored.min()) + intercept
    high = int(stored.max()) + intercept
    for dtype in (stored.dtype, np.dtype(np.int16), np.dtype(np.int32)):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    return None
