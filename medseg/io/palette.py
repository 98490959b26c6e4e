"""The one set of label colours: QC picture, viewer, DICOM SEG display colours and colour tables.

A label's colour depends on its value only, so label 1 has the same colour in every case, every
picture and every file. Values 1-6 take ITK-SNAP's default label colours (red, green, blue,
yellow, cyan, magenta); then come 14 more saturated colours chosen to stand out on a greyscale
image (no greys). Value 21 reuses value 1's colour, and so on. Value 0 is background and has no
colour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import highdicom as hd

RGB = tuple[int, int, int]

#: Colours of label values 1, 2, ... (0-255 per channel); repeats after the last.
PALETTE: tuple[RGB, ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 255),
    (255, 0, 128),
    (128, 255, 0),
    (0, 255, 128),
    (255, 128, 128),
    (128, 128, 255),
    (128, 255, 128),
    (255, 200, 0),
    (200, 0, 0),
    (0, 160, 0),
    (170, 110, 40),
    (0, 130, 130),
)


def label_colour(value: int) -> RGB:
    """The RGB colour (0-255) of label ``value`` (needs ``value >= 1``)."""
    if value < 1:
        raise ValueError(f"label value {value} has no colour; background (0) is not drawn")
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def label_colours(values: Iterable[int]) -> dict[int, RGB]:
    """``{value: colour}`` for every foreground value (0 and negatives are left out)."""
    return {int(v): label_colour(int(v)) for v in values if int(v) >= 1}


def colour_hex(rgb: RGB) -> str:
    """``(255, 128, 0)`` -> ``"#ff8000"`` for HTML and CSS."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def colour_float(rgb: RGB) -> tuple[float, float, float]:
    """The colour with channels in [0, 1] (matplotlib, Slicer segmentations)."""
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)


def dicom_display_colour(rgb: RGB) -> hd.color.CIELabColor:
    """The colour as DICOM's RecommendedDisplayCIELabValue (highdicom converts sRGB to CIELab)."""
    import highdicom as hd

    return hd.color.CIELabColor.from_rgb(*rgb)


def rgb_from_dicom(value: Iterable[int]) -> RGB:
    """The sRGB colour of a stored RecommendedDisplayCIELabValue triplet (0-65535 each)."""
    import highdicom as hd

    r, g, b = hd.color.CIELabColor.from_dicom_value(tuple(int(v) for v in value)).to_rgb()
    return (int(r), int(g), int(b))


def named_colours(names: Mapping[int, str]) -> list[tuple[int, str, RGB]]:
    """``(value, name, colour)`` for every foreground label of ``names``, by value."""
    return [(int(v), str(n), label_colour(int(v))) for v, n in sorted(names.items()) if int(v) >= 1]
