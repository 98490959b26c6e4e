"""Colour tables beside a label map, so 3D Slicer and ITK-SNAP show medseg's names and colours.

* Slicer colour table (``.ctbl``): one line ``value name R G B A`` per label (0-255), names with
  whitespace joined by ``_`` (Slicer splits on whitespace). Load it in Slicer, then pick it as the
  label map's lookup table (Volumes module, Display, Lookup Table).
* ITK-SNAP label description (``.txt``): ``IDX R G B A VIS MSH "LABEL"`` lines, alpha in [0, 1]
  (Segmentation menu, Import Label Descriptions).

Both hold the background row (0) and every label of ``names`` with its colour from
:mod:`medseg.io.palette`. Readers for both formats parse them back (used to check them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from medseg.errors import InputError
from medseg.io.atomic import atomic_write_text
from medseg.io.palette import RGB, named_colours

SLICER_SUFFIX = ".ctbl"
ITKSNAP_SUFFIX = "_itksnap.txt"

_ITKSNAP_HEADER = """################################################
# ITK-SnAP Label Description File (written by medseg)
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""
_ITKSNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9.]+)\s+([01])\s+([01])\s+"(.*)"\s*$')

ColourTable = dict[int, tuple[str, RGB]]


def slicer_name(name: str) -> str:
    """A label name as one Slicer colour-table token (whitespace runs become ``_``)."""
    return re.sub(r"\s+", "_", name.strip()) or "unnamed"


def slicer_ctbl_text(names: Mapping[int, str]) -> str:
    """The Slicer colour table for ``names`` (value -> name) as text."""
    rows = named_colours(names)
    lines = [
        "# Color table file written by medseg (label value, name, R G B A)",
        f"# {len(rows) + 1} values",
        "0 Background 0 0 0 0",
    ]
    lines += [f"{value} {slicer_name(name)} {r} {g} {b} 255" for value, name, (r, g, b) in rows]
    return "\n".join(lines) + "\n"


def itksnap_text(names: Mapping[int, str]) -> str:
    """The ITK-SNAP label description for ``names`` (value -> name) as text."""
    lines = [f'{0:>5} {0:>5} {0:>4} {0:>4} {0:>8} {0:>2} {0:>2}    "Clear Label"']
    for value, name, (r, g, b) in named_colours(names):
        label = name.replace('"', "'")
        lines.append(f'{value:>5} {r:>5} {g:>4} {b:>4} {1:>8} {1:>2} {1:>2}    "{label}"')
    return _ITKSNAP_HEADER + "\n".join(lines) + "\n"


def colour_table_paths(labels_path: Path) -> dict[str, Path]:
    """Where the colour tables of a label file go: ``case.nii.gz`` -> ``case.ctbl``, ``case_itksnap.txt``."""
    from medseg.io.atomic import full_suffix

    stem = labels_path.name[: -len(full_suffix(labels_path))] if full_suffix(labels_path) else labels_path.name
    return {
        "slicer_ctbl": labels_path.with_name(stem + SLICER_SUFFIX),
        "itksnap_labels": labels_path.with_name(stem + ITKSNAP_SUFFIX),
    }


def write_colour_tables(names: Mapping[int, str], labels_path: Path) -> dict[str, Path]:
    """Write both colour tables beside ``labels_path`` atomically; returns them by output name."""
    paths = colour_table_paths(Path(labels_path))
    atomic_write_text(paths["slicer_ctbl"], slicer_ctbl_text(names))
    atomic_write_text(paths["itksnap_labels"], itksnap_text(names))
    return paths


def read_slicer_ctbl(path: Path) -> ColourTable:
    """``{value: (name, (R, G, B))}`` from a Slicer colour table (comments and blank lines skipped).

    Raises :class:`InputError` naming the line when a line is not ``value name R G B A``.
    """
    table: ColourTable = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            value, name, rgb = int(parts[0]), parts[1], tuple(int(v) for v in parts[2:5])
        except (IndexError, ValueError):
            raise InputError(f"{path}:{number} is not 'value name R G B A'; is this a Slicer colour table?") from None
        if len(parts) != 6 or len(rgb) != 3:
            raise InputError(f"{path}:{number} has {len(parts)} fields, expected 6 (value name R G B A)")
        table[value] = (name, rgb)
    return table


def read_itksnap_labels(path: Path) -> ColourTable:
    """``{value: (name, (R, G, B))}`` from an ITK-SNAP label description file.

    Raises :class:`InputError` naming the line when a line is not ``IDX R G B A VIS MSH "LABEL"``.
    """
    table: ColourTable = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ITKSNAP_LINE.match(line)
        if match is None:
            raise InputError(f"{path}:{number} is not 'IDX R G B A VIS MSH \"LABEL\"'; is this an ITK-SNAP label file?")
        table[int(match[1])] = (match[8], (int(match[2]), int(match[3]), int(match[4])))
    return table
