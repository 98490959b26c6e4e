"""What a run wrote, as text, for the tests that look for patient names in outputs (not a test module).

Every file name under an output folder, and every file's words: gzip files decompressed; NIfTI
files by their header and extensions only, PNGs without their pixel chunks and viewer pages with
their embedded base64 NIfTI payloads decoded to header and extensions (voxels and base64 are not
words, and would "contain" short name parts by chance); medseg's own viewer files, checked to be
byte for byte the shipped ones, are not scanned (NiiVue's bundle spells "zoe" by chance).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import numpy as np

_VIEWER_DATA = re.compile(r'<script id="medseg-data" type="application/json">(.*?)</script>', flags=re.S)


def png_text(data: bytes) -> bytes:
    """A PNG without its pixel chunks (IDAT): what it says in words (text chunks, header)."""
    kept, offset = [data[:8]], 8
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        if data[offset + 4 : offset + 8] != b"IDAT":
            kept.append(data[offset : offset + 12 + length])
        offset += 12 + length
    return b"".join(kept)


def nifti_text(data: bytes) -> bytes:
    """A NIfTI-1 file's header and extensions (everything before ``vox_offset``)."""
    offset = int(np.frombuffer(data[108:112], dtype="<f4")[0])
    return data[: max(offset, 348)]


def viewer_text(data: bytes) -> bytes:
    """A viewer page with its embedded NIfTI payloads replaced by their header and extensions."""
    page = data.decode("utf-8")
    match = _VIEWER_DATA.search(page)
    if match is None:
        return data
    payload = json.loads(match.group(1))
    headers = [
        nifti_text(gzip.decompress(base64.b64decode(payload.pop(key)))).decode("latin-1")
        for key in ("image", "labels")
        if key in payload
    ]
    rest = page[: match.start()] + json.dumps(payload) + page[match.end() :]
    return "\n".join([rest, *headers]).encode("utf-8")


def file_text(path: Path) -> str:
    """One file's words (see the module docstring), read as UTF-8 and as Latin-1."""
    data = path.read_bytes()
    if path.name.endswith((".nii.gz", ".nii")):
        data = nifti_text(gzip.decompress(data) if path.name.endswith(".gz") else data)
    elif path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.suffix == ".png":
        data = png_text(data)
    elif path.name.endswith("_viewer.html"):
        data = viewer_text(data)
    return data.decode("utf-8", "replace") + "\n" + data.decode("latin-1")


def written_texts(out: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{"name REL": REL, "file REL": words}`` for everything under ``out``; files whose name or
    suffix is in ``skip`` (e.g. ``".dcm"``: a DICOM SEG carries the patient module by design) are
    listed by name only."""
    from medseg.viewer.assets import ASSET_DIR, STATIC

    texts: dict[str, str] = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        texts[f"name {relative}"] = relative
        if not path.is_file() or path.name in skip or path.suffix in skip:
            continue
        if path.parent.name == ASSET_DIR and (STATIC / path.name).is_file():
            assert path.read_bytes() == (STATIC / path.name).read_bytes(), f"{relative} is not the shipped file"
            continue
        texts[f"file {relative}"] = file_text(path)
    return texts
