"""Typed access to DICOM header values: numbers that are needed, checked once, named when malformed.

pydicom converts a value when it is first accessed and raises a bare ``ValueError`` (``invalid
literal for int() with base 10: '1A'``) for malformed numbers. Every numeric value medseg needs
is read through these helpers instead, which raise :class:`MalformedValue` naming the attribute
and its text, so discovery can skip the file with a warning that says what is wrong. Values
medseg does not need (SeriesNumber, GantryDetectorTilt...) go through the lenient ``*_or_none``
helpers, which return ``None`` for a malformed value.
"""

from __future__ import annotations

import logging
import math
import struct
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medseg.errors import DicomError, printable

if TYPE_CHECKING:
    from pydicom import Dataset

#: how much of a malformed value a message quotes
QUOTE_LIMIT = 40


class MalformedValue(DicomError):
    """A header value medseg needs is present but not a valid number (or out of range)."""


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Read without pydicom's own value-validation warnings and log lines.

    pydicom warns and logs (to the terminal, quoting the raw value, control characters included)
    when it meets a malformed value or an unknown character-set escape; medseg reports the values
    it needs itself, cleaned, once.
    """
    from pydicom.config import disable_value_validation

    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)
    try:
        with disable_value_validation(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_log.setLevel(level)


def raw_text(item: Dataset | None, keyword: str) -> str:
    """The value of ``keyword`` as written in the file, cleaned for messages (``''`` if unknown)."""
    if item is None:
        return ""
    try:
        element = item.get_item(keyword)
    except (KeyError, ValueError, TypeError):
        return ""
    value = getattr(element, "value", None)
    if isinstance(value, (bytes, bytearray)):
        return printable(bytes(value).decode("latin-1"), QUOTE_LIMIT)
    return printable(joined(value), QUOTE_LIMIT)


def joined(value: object) -> str:
    """A value as text: several values joined by ``\\`` as DICOM writes them, ``''`` for None."""
    if value is None:
        return ""
    from pydicom.multival import MultiValue

    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def malformed(item: Dataset | None, keyword: str, what: str = "a number") -> MalformedValue:
    """The error for a present but unusable value: ``NumberOfFrames '1A' is not a number``."""
    return MalformedValue(f"{keyword} '{raw_text(item, keyword)}' is not {what}")


def _values(item: Dataset | None, keyword: str) -> list | None:
    """The value(s) of ``keyword`` as a list; None when absent or empty. Raises MalformedValue."""
    if item is None or keyword not in item:
        return None
    try:
        value = item[keyword].value
    except (TypeError, ValueError, OverflowError, struct.error, AttributeError, LookupError):
        raise malformed(item, keyword) from None
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return [value]
    return list(value)


def float_values(item: Dataset | None, keyword: str, count: int | None) -> tuple[float, ...] | None:
    """A multi-valued number (e.g. ImagePositionPatient) as floats; None when absent or empty.

    Raises :class:`MalformedValue` when a value is not a finite number or fewer than ``count``
    values are given.
    """
    values = _values(item, keyword)
    if values is None:
        return None
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise malformed(item, keyword) from None
    if not all(math.isfinite(n) for n in numbers):
        raise malformed(item, keyword, "a finite number")
    if count is not None and len(numbers) < count:
        raise malformed(item, keyword, f"{count} numbers")
    return tuple(numbers[:count] if count else numbers)


def float_value(item: Dataset | None, keyword: str) -> float | None:
    """A single number as float; None when absent or empty; MalformedValue when malformed."""
    values = float_values(item, keyword, 1)
    return None if values is None else values[0]


def int_value(item: Dataset | None, keyword: str, minimum: int | None = None) -> int | None:
    """A single integer (IS/US/UL...); None when absent or empty.

    Raises :class:`MalformedValue` when it is not an integer or is below ``minimum``.
    """
    values = _values(item, keyword)
    if values is None:
        return None
    try:
        number = float(values[0])
    except (TypeError, ValueError):
        raise malformed(item, keyword) from None
    if not number.is_integer():
        raise malformed(item, keyword, "an integer")
    if minimum is not None and number < minimum:
        raise malformed(item, keyword, f"at least {minimum}")
    return int(number)


def float_or_none(item: Dataset | None, keyword: str) -> float | None:
    """A number medseg can do without: None when absent, empty or malformed."""
    try:
        return float_value(item, keyword)
    except MalformedValue:
        return None


def int_or_none(item: Dataset | None, keyword: str) -> int | None:
    """An integer medseg can do without: None when absent, empty or malformed."""
    try:
        return int_value(item, keyword)
    except MalformedValue:
        return None


def text(item: Dataset | None, keyword: str) -> str:
    """A text value cleaned for terminals and messages (:func:`medseg.errors.printable`); '' if absent."""
    if item is None:
        return ""
    try:
        value = item.get(keyword)
    except Exception:  # a value pydicom cannot decode (wrong character set, bad bytes)
        value = raw_text(item, keyword)
    return printable(joined(value))


def words(item: Dataset | None, keyword: str) -> tuple[str, ...]:
    """A multi-valued code string (e.g. ImageType) as upper-case words; () when absent or unreadable."""
    try:
        values = _values(item, keyword)
    except MalformedValue:
        return ()
    return tuple(str(v).strip().upper() for v in values or ())


def private_value(item: Dataset | None, group: int, offset: int, creators: Sequence[str]) -> object:
    """A private element's value found through its creator (e.g. Philips ``(2005,xx0E)``), or None.

    FL values of files read as implicit VR arrive as 4 raw bytes and are unpacked.
    """
    if item is None:
        return None
    for creator in creators:
        try:
            value = item.get_private_item(group, offset, creator).value
        except (KeyError, ValueError, TypeError):
            continue
        if isinstance(value, (bytes, bytearray)) and len(value) == 4:
            return struct.unpack("<f", bytes(value))[0]
        return value
    return None


@dataclass(frozen=True)
class PixelFormat:
    """How one file stores its pixels (Image Pixel module), checked when its header is read.

    ``frames`` is NumberOfFrames (1 when absent); ``bits_stored`` <= ``bits_allocated``.
    """

    rows: int
    cols: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool

    @property
    def n_bytes(self) -> int | None:
        """Bytes of uncompressed pixel data the header announces (None for non-byte sizes)."""
        if self.bits_allocated % 8:
            return None
        return self.rows * self.cols * self.frames * self.samples * self.bits_allocated // 8


def pixel_format(ds: Dataset) -> PixelFormat:
    """The checked Image Pixel module of an image header (needs Rows and Columns present).

    Raises :class:`MalformedValue` for a malformed or impossible value (e.g. NumberOfFrames
    ``'1A'``, Rows 0, BitsStored larger than BitsAllocated).
    """
    rows = int_value(ds, "Rows", minimum=1)
    cols = int_value(ds, "Columns", minimum=1)
    if rows is None or cols is None:
        raise malformed(ds, "Rows" if rows is None else "Columns", "a number of pixels")
    frames = int_value(ds, "NumberOfFrames", minimum=1) or 1
    samples = int_value(ds, "SamplesPerPixel", minimum=1) or 1
    bits_allocated = int_value(ds, "BitsAllocated", minimum=1) or 16
    bits_stored = int_value(ds, "BitsStored", minimum=1) or bits_allocated
    if bits_stored > bits_allocated:
        raise malformed(ds, "BitsStored", f"at most BitsAllocated ({bits_allocated})")
    representation = int_value(ds, "PixelRepresentation") or 0
    if representation not in (0, 1):
        raise malformed(ds, "PixelRepresentation", "0 or 1")
    return PixelFormat(
        rows=rows,
        cols=cols,
        frames=frames,
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=representation == 1,
    )
