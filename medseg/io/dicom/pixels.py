"""Pixel data: decoding each file once, keeping only the stored bits, and applying the rescale.

Uncompressed little-endian pixel data is read straight from the file at the offset found
while reading the header (one ``read`` per file, no second header parse). Everything else
(JPEG baseline/lossless, JPEG 2000, JPEG-LS, RLE, deflated, big endian) goes through pydicom's
``pixel_array`` with the installed pylibjpeg / pyjpegls plugins. Both paths then keep only the
BitsStored low bits, as pydicom and dcm2niix do: unsigned values are masked (Siemens field maps
and XA30 EPI set bits above BitsStored), signed values are sign-extended from bit BitsStored-1.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import numpy as np

from medseg.errors import DicomError, printable
from medseg.io.dicom.headers import element_header_size, is_implicit, os_reason, pixel_data_end
from medseg.io.dicom.series import FileHeader, FileProblem, UnusableFile
from medseg.io.dicom.values import PixelFormat, pixel_format, quiet_pydicom, text

_EXPLICIT_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"}
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
#: the decoder plugins named when pydicom cannot decode compressed pixel data
PLUGINS = "pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls"


def check_greyscale(header: FileHeader) -> None:
    """Raise :class:`DicomError` for a colour image (RGB, YBR, palette): medseg reads greyscale only."""
    photometric = text(header.dataset, "PhotometricInterpretation") or "MONOCHROME2"
    samples = header.pixels.samples if header.pixels is not None else 1
    if photometric not in _GREYSCALE or samples != 1:
        raise DicomError(
            f"{printable(header.path)} holds colour pixels ({photometric}); medseg reads greyscale volumes only"
        )


def decode_file(header: FileHeader) -> np.ndarray:
    """Stored pixel values of one greyscale file as ``(frames, rows, columns)``, BitsStored bits only.

    Raises :class:`UnusableFile` when the pixel data cannot be read: the file is unreadable,
    truncated, shorter than the header announces, or compressed in a way no installed plugin
    decodes.
    """
    pixels = header.pixels or pixel_format(header.dataset)
    try:
        array = _read_native(header, pixels) if header.pixel_offset is not None else None
        if array is None:
            array = _read_with_pydicom(header)
    except OSError as exc:
        raise UnusableFile(FileProblem(header.path, os_reason(exc))) from None
    array = keep_stored_bits(array, pixels)
    try:
        return array.reshape(pixels.frames, pixels.rows, pixels.cols)
    except ValueError:
        reason = f"its pixel data holds {array.size} values, its header announces {pixels.frames} x {pixels.rows} x {pixels.cols}"
        raise UnusableFile(FileProblem(header.path, reason)) from None


def keep_stored_bits(array: np.ndarray, pixels: PixelFormat) -> np.ndarray:
    """Only the low BitsStored bits of each value: masked (unsigned) or sign-extended (signed).

    Promises what pydicom's ``pixel_array`` returns; an array already in range is returned as is.
    """
    width = array.dtype.itemsize * 8
    if array.dtype.kind not in "iu" or pixels.bits_stored >= width:
        return array
    if array.dtype.kind == "u":
        mask = array.dtype.type((1 << pixels.bits_stored) - 1)
        return array if not np.any(array > mask) else np.bitwise_and(array, mask)
    shift = width - pixels.bits_stored
    return (array << shift) >> shift


def _native_dtype(pixels: PixelFormat) -> np.dtype | None:
    if pixels.bits_allocated not in (8, 16, 32) or pixels.samples != 1:
        return None
    return np.dtype(f"<{'i' if pixels.signed else 'u'}{pixels.bits_allocated // 8}")


def _read_native(header: FileHeader, pixels: PixelFormat) -> np.ndarray | None:
    """Read uncompressed pixel bytes directly; None when this file needs pydicom instead."""
    dtype = _native_dtype(pixels)
    if dtype is None or header.pixel_offset is None:
        return None
    expected = pixels.rows * pixels.cols * pixels.frames * dtype.itemsize
    implicit = is_implicit(header)
    with open(header.path, "rb") as fp:
        fp.seek(header.pixel_offset)
        length = _element_length(fp.read(12), implicit)
        if length is None:
            return None
        fp.seek(header.pixel_offset + element_header_size(header))
        data = fp.read(min(length, expected))
        size = os.fstat(fp.fileno()).st_size
    if len(data) < expected:
        end = pixel_data_end(header)
        reason = (
            f"truncated at {size} of {end} bytes"
            if end is not None and size < end
            else f"its pixel data holds {len(data)} of the {expected} bytes its header announces"
        )
        raise UnusableFile(FileProblem(header.path, reason))
    return np.frombuffer(data, dtype=dtype)


def _element_length(element: bytes, implicit: bool) -> int | None:
    """Value length from the Pixel Data element header; None if encapsulated or unexpected."""
    if implicit:
        length = struct.unpack("<I", element[4:8])[0] if len(element) >= 8 else None
    elif len(element) >= 12 and element[4:6] in _EXPLICIT_LONG_VRS:
        length = struct.unpack("<I", element[8:12])[0]
    else:
        length = None
    return None if length is None or length == 0xFFFFFFFF else length


def _read_with_pydicom(header: FileHeader) -> np.ndarray:
    import pydicom

    try:
        with quiet_pydicom():
            return np.asarray(pydicom.dcmread(header.path, force=True).pixel_array)
    except OSError:
        raise
    except Exception as exc:  # pydicom/plugins raise many types (missing plugin, corrupt stream)
        meta = getattr(header.dataset, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        detail = printable(f"{type(exc).__name__}: {exc}", 160)
        reason = (
            f"cannot decode its pixel data ({name}: {detail}): the file may be truncated or corrupt, "
            f"or a decoder plugin is missing ({PLUGINS})"
        )
        raise UnusableFile(FileProblem(header.path, reason)) from None


def rescale(stored: np.ndarray, slopes: Sequence[float], intercepts: Sequence[float]) -> np.ndarray:
    """Apply a linear value mapping (RescaleSlope/Intercept, or a real-world one) per frame (axis 0).

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
