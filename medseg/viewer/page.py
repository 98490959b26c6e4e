"""One case's viewer page: ``<case>_viewer.html`` with its image and labels inside.

Browsers do not let a page opened from file:// fetch other files, so the page carries the source
image and the label map as base64 gzip NIfTI (float64 images as float32, the first channel of a
4D image) in a ``<script type="application/json">`` element, with the label names and palette
colours. The NiiVue bundle and the controls come from ``viewer_assets/`` beside the page. The page
is about 1.4 times the size of the compressed image.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import atomic_write_text
from medseg.io.palette import named_colours
from medseg.viewer.assets import ASSET_DIR, install_assets
from medseg.volume import Volume

#: Initial label opacity over the image.
DEFAULT_OPACITY = 0.5


def nifti_base64(volume: Volume) -> str:
    """The volume as a gzip NIfTI-1 file, base64-encoded (the image's first channel when 4D)."""
    from isal import igzip

    array = np.asarray(volume.array)
    if array.ndim == 4:
        array = array[..., 0]
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    data = volume.with_array(array).to_nibabel().to_bytes()
    return base64.b64encode(igzip.compress(data, compresslevel=1)).decode("ascii")


def viewer_payload(case_id: str, image: Volume, labels: Volume, names: Mapping[int, str]) -> dict[str, Any]:
    """What the page's script reads: case id, both volumes, and ``{value, name, colour}`` per label.

    Needs ``image`` and ``labels`` on the same grid. Labels present but unnamed get ``label n``.
    """
    present = {int(v) for v in np.unique(np.asarray(labels.array)) if v > 0}
    table_names = {**{v: f"label {v}" for v in present}, **{int(k): str(n) for k, n in names.items() if int(k) > 0}}
    table = [{"value": v, "name": n, "colour": list(c)} for v, n, c in named_colours(table_names)]
    return {
        "caseId": case_id,
        "image": nifti_base64(image),
        "labels": nifti_base64(labels),
        "labelTable": table,
        "opacity": DEFAULT_OPACITY,
        "centreMm": labels_centre_mm(labels),
    }


def labels_centre_mm(labels: Volume) -> list[float] | None:
    """RAS millimetres of the labels' centre of mass (the crosshair starts there), None when empty."""
    index = np.nonzero(np.asarray(labels.array))
    if not index[0].size:
        return None
    centre = np.array([float(np.mean(axis)) for axis in index[:3]] + [1.0])
    return [round(float(v), 3) for v in (labels.affine @ centre)[:3]]


def case_viewer_html(payload: Mapping[str, Any], assets: str = ASSET_DIR) -> str:
    """The viewer page for ``payload`` (:func:`viewer_payload`), assets taken from the relative URL ``assets``."""
    data = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")  # no "</script>" inside
    title = html.escape(f"{payload['caseId']} · medseg viewer")
    href = html.escape(assets, quote=True)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{href}/viewer.css"></head>
<body data-viewer="loading">
<div id="medseg-viewer"><div id="medseg-status">loading the NiiVue viewer …</div></div>
<script id="medseg-data" type="application/json">{data}</script>
<script src="{href}/niivue.umd.js"></script>
<script src="{href}/viewer.js"></script>
</body></html>
"""


def write_case_viewer(
    case_id: str, image: Volume, labels: Volume, names: Mapping[int, str], path: Path, assets_root: Path | None = None
) -> Path:
    """Write ``path`` (a ``<case>_viewer.html``) atomically, and the assets into ``assets_root/viewer_assets``.

    ``assets_root`` defaults to the page's folder; a batch passes its output folder so that all
    cases share one copy (the page links it by a relative path, so the folder can be moved).
    Needs the NiiVue bundle (:class:`~medseg.viewer.assets.ViewerUnavailable` otherwise) and
    ``image``/``labels`` on one grid (ValueError otherwise).
    """
    if not image.same_grid(labels):
        raise ValueError(f"the image {image.spatial_shape} and labels {labels.spatial_shape} are not on one grid")
    path = Path(path)
    folder = install_assets(Path(assets_root) if assets_root is not None else path.parent)
    href = Path(os.path.relpath(folder.resolve(), path.parent.resolve())).as_posix()
    atomic_write_text(path, case_viewer_html(viewer_payload(case_id, image, labels, names), href))
    return path
