"""What the browser tests measure on a NiiVue viewer page: which label each screen pixel shows.

The page's NiiVue maps a canvas pixel to a voxel of the label volume (``canvasPos2frac`` ->
``frac2mm`` -> ``mm2vox``); the screenshot says which palette colour the pixel has. NiiVue blends
label colours over the grey image (and softens a label's edge voxels: their opacity is the share
of the 7-voxel neighbourhood in a label), so a pixel is classified by its chroma: the pixel minus
its grey part (its smallest channel). A chroma weaker than :data:`MIN_CHROMA` is no label (grey
image, black background); otherwise the label whose palette colour has the nearest hue.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import numpy as np

from medseg.io.palette import label_colour

if TYPE_CHECKING:
    from tests.browser import Browser

MIN_CHROMA = 40.0
MAX_HUE_DISTANCE = 0.35


def _hue(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chroma (largest channel minus smallest) and the normalised colour without its grey part."""
    rgb = rgb.astype(np.float64)
    coloured = rgb - rgb.min(axis=-1, keepdims=True)
    chroma = coloured.max(axis=-1)
    return chroma, coloured / np.maximum(chroma, 1e-9)[..., None]


def classify(pixels: np.ndarray, values: list[int]) -> np.ndarray:
    """Label value shown by each RGB pixel ``(N, 3)`` among ``values`` (palette hues), else 0.

    ``values`` must have distinct hues (true of the palette's first 12 colours).
    """
    if not values:
        return np.zeros(len(pixels), dtype=np.int64)
    _, palette = _hue(np.array([label_colour(v) for v in values]))
    chroma, hue = _hue(pixels)
    distance = np.linalg.norm(hue[:, None, :] - palette[None], axis=2)
    nearest = np.argmin(distance, axis=1)
    shown = (chroma >= MIN_CHROMA) & (distance[np.arange(len(pixels)), nearest] <= MAX_HUE_DISTANCE)
    return np.where(shown, np.array(values)[nearest], 0)


def screenshot_rgb(browser: Browser) -> np.ndarray:
    """The page as an ``(H, W, 3)`` uint8 array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB"))


def show_axial_opaque(browser: Browser, frame: str = "window") -> None:
    """Axial view, labels fully opaque, no crosshair: each label pixel has its exact palette colour."""
    browser.evaluate(f"""(async () => {{
        const v = {frame}.medsegViewer.viewer;
        v.setOpacity(1); v.nv.setCrosshairWidth(0); v.setView('sliceTypeAxial'); v.nv.drawScene();
        await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    }})()""")


def canvas_samples(browser: Browser, affine: np.ndarray, step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Screen pixels ``(N, 2)`` (x, y) on a grid over the canvas and the voxel ``(N, 3)`` each shows
    (rows of -1 where the pixel shows no voxel).

    NiiVue gives the world (RAS mm) position of each pixel; medseg's ``affine`` turns it into
    the voxel index, so the check does not rely on NiiVue's own voxel bookkeeping.
    """
    result = browser.evaluate(f"""(() => {{
        const v = window.medsegViewer.viewer, nv = v.nv, rect = v.canvas.getBoundingClientRect();
        const dpr = nv.uiData.dpr || 1, points = [], voxels = [];
        for (let y = Math.ceil(rect.top) + 1; y < rect.bottom - 1; y += {step}) {{
            for (let x = Math.ceil(rect.left) + 1; x < rect.right - 1; x += {step}) {{
                const f = nv.canvasPos2frac([(x + 0.5 - rect.left) * dpr, (y + 0.5 - rect.top) * dpr]);
                points.push([x, y]);
                if (f[0] < 0 || f[0] > 1 || f[1] < 0 || f[1] > 1 || f[2] < 0 || f[2] > 1) {{ voxels.push(null); continue; }}
                const mm = nv.frac2mm(f, 0, true);
                voxels.push([mm[0], mm[1], mm[2]]);
            }}
        }}
        return JSON.stringify({{points, voxels}});
    }})()""")
    data = json.loads(result)
    world = np.array([v if v is not None else [np.nan] * 3 for v in data["voxels"]], dtype=np.float64)
    index = np.linalg.solve(affine[:3, :3], (world - affine[:3, 3]).T).T
    voxels = np.where(np.isfinite(index), np.rint(np.nan_to_num(index, nan=-1.0)), -1).astype(np.int64)
    return np.array(data["points"], dtype=np.int64), voxels


def shown_and_expected(
    browser: Browser, labels: np.ndarray, affine: np.ndarray, values: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """For canvas pixels that show a voxel: the label their colour shows and the label the map holds there."""
    rgb = screenshot_rgb(browser)
    points, voxels = canvas_samples(browser, affine)
    inside = np.all((voxels >= 0) & (voxels < np.array(labels.shape)), axis=1)
    points, voxels = points[inside], voxels[inside]
    expected = labels[voxels[:, 0], voxels[:, 1], voxels[:, 2]]
    shown = classify(rgb[points[:, 1], points[:, 0]], values)
    return shown, expected
