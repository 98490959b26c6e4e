"""Cases listed in a CSV manifest: columns ``case,image`` (more ``image*`` columns = more input
channels, an optional ``series`` column selects a series in a DICOM folder); paths relative to the CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from medseg.cases.case import InputCase
from medseg.cases.naming import Namer
from medseg.cases.privacy import dicom_name_parts
from medseg.errors import InputError
from medseg.io.files import is_volume_file


def read_manifest(path: Path, namer: Namer) -> list[InputCase]:
    """Cases from a CSV with columns ``case,image`` (+ ``image*`` channels, optional ``series``).

    Raises InputError for a missing column, an empty ``case`` cell or a duplicate case name; a
    missing image file becomes a case with a ``problem`` (recorded as failed, the batch goes on).
    A row naming DICOM (a folder or file) gets the patient's name parts from its first header, kept
    out of the case id and of everything stored about the case.
    """
    image_columns, rows = _read_rows(path)
    cases: list[InputCase] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=2):
        name = row.get("case", "")
        if not name:
            raise InputError(f"{path} line {number}: empty 'case' cell; give every row a case name")
        if name in seen:
            raise InputError(f"{path} line {number}: case {name!r} appears twice; case names must be unique")
        seen.add(name)
        cells = [row.get(c, "") for c in image_columns]
        if not cells[0]:
            raise InputError(f"{path} line {number}: empty 'image' cell for case {name!r}")
        cases.append(_row_case(path, name, [cell for cell in cells if cell], row.get("series") or None, namer))
    if not cases:
        raise InputError(f"{path} lists no cases; add rows below the header")
    return cases


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The image columns (``image`` first) and the stripped rows of the CSV at ``path``."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "case" not in header or "image" not in header:
            raise InputError(
                f"{path}: a manifest needs the columns 'case' and 'image', found {', '.join(header) or 'none'}"
            )
        image_columns = ["image"] + [h for h in header if h.startswith("image") and h != "image"]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    return image_columns, rows


def _row_case(path: Path, name: str, cells: list[str], series: str | None, namer: Namer) -> InputCase:
    images = tuple(path.parent / cell for cell in cells)
    missing = [str(p) for p in images if not p.exists()]
    terms = dicom_name_parts(p for p in images if p.is_dir() or (p.is_file() and not is_volume_file(p)))
    return InputCase(
        case_id=namer.manifest_id(name, terms),
        kind="manifest",
        source=";".join(cells),
        images=images,
        series_select=series,
        problem=f"input not found: {', '.join(missing)}" if missing else None,
        redact=terms,
    )
