"""The QC picture of an instance map: each object's outline (``skimage.segmentation.find_boundaries``)
in its own colour and its id at its centre, over the image.

2D images are shown as the file shows them (row 0 at the top, colour kept; grey and other images
windowed at the 0.5 / 99.5 percentiles). 3D volumes get three panels, the middle slice along each
voxel axis (``k`` slice: ``i`` across, ``j`` up), with the ids of the objects the slice cuts.
Rendered with matplotlib's Agg canvas and written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from medseg.io.atomic import atomic_path
from medseg.io.image2d import image_pixels, is_2d

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from medseg.volume import Volume

#: ids are drawn when a panel shows at most this many objects (beyond, outlines only)
MAX_IDS = 600


def display_rgb(pixels: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float image in [0, 1] for display: 8-bit RGB(A) as stored, anything else
    scaled per channel between its 0.5 and 99.5 percentiles (grey repeated on three channels)."""
    if pixels.ndim == 3 and pixels.dtype == np.uint8 and pixels.shape[2] >= 3:
        return pixels[..., :3].astype(np.float32) / 255.0
    channels = pixels[..., None] if pixels.ndim == 2 else pixels
    channels = channels[..., :3] if channels.shape[2] >= 3 else channels[..., :1]
    out: np.ndarray = np.empty(channels.shape, dtype=np.float32)
    for c in range(channels.shape[2]):
        low, high = np.percentile(channels[..., c], [0.5, 99.5])
        out[..., c] = np.clip((channels[..., c] - low) / (high - low if high > low else 1.0), 0.0, 1.0)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


Origin = Literal["upper", "lower"]


def _panels(image: Volume, instances: Volume) -> list[tuple[str, np.ndarray, np.ndarray, Origin]]:
    """(title, display RGB, labels, origin) per panel: one for a 2D image, three middle slices for 3D."""
    if is_2d(instances):
        return [("", display_rgb(image_pixels(image)), image_pixels(instances), "upper")]
    img, lab = np.asarray(image.array), np.asarray(instances.array)
    panels: list[tuple[str, np.ndarray, np.ndarray, Origin]] = []
    for axis, name in enumerate(("i", "j", "k")):
        middle = lab.shape[axis] // 2
        index = tuple(middle if a == axis else slice(None) for a in range(3))
        pixels = np.swapaxes(img[index], 0, 1)  # second remaining axis up, first across
        panels.append((f"{name} = {middle}", display_rgb(pixels), np.swapaxes(lab[index], 0, 1), "lower"))
    return panels


def _colours(ids: np.ndarray) -> np.ndarray:
    """One RGB colour per id (tab20, cycling)."""
    from matplotlib import colormaps

    table = colormaps["tab20"]
    return np.array([table(int(i) % 20)[:3] for i in ids], dtype=np.float32).reshape(-1, 3)


def _draw_panel(ax: Axes, rgb: np.ndarray, labels: np.ndarray, origin: Origin, title: str) -> None:
    from matplotlib import patheffects
    from skimage.measure import regionprops
    from skimage.segmentation import find_boundaries

    overlay = rgb.copy()
    ids = np.unique(labels[labels > 0])
    if ids.size:
        lut = np.zeros((int(ids.max()) + 1, 3), dtype=np.float32)
        lut[ids] = _colours(ids)
        edges = find_boundaries(labels, mode="inner") & (labels > 0)
        overlay[edges] = lut[labels[edges]]
    ax.imshow(overlay, origin=origin, interpolation="nearest")
    if 0 < ids.size <= MAX_IDS:
        size = float(np.clip(1600.0 / max(labels.shape), 5.0, 9.0))
        stroke = [patheffects.withStroke(linewidth=1.5, foreground="black")]
        for region in regionprops(labels):
            row, col = region.centroid
            ax.text(
                col, row, str(region.label), color="white", fontsize=size, ha="center", va="center", path_effects=stroke
            )
    ax.set_title(f"{title}  {ids.size} object(s)".strip(), fontsize=9)
    ax.set_axis_off()


def render_objects_qc(image: Volume, instances: Volume, path: Path, title: str = "") -> Path:
    """Write a PNG with every object's outline and id over ``image`` (same grid as ``instances``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(image, instances)
    height, width = panels[0][2].shape
    inches = float(np.clip(max(height, width) / 100.0, 6.0, 12.0))
    fig = Figure(figsize=(inches * len(panels), inches * height / width + 0.5), dpi=120)
    FigureCanvasAgg(fig)
    for n, (name, rgb, labels, origin) in enumerate(panels):
        _draw_panel(fig.add_subplot(1, len(panels), n + 1), rgb, labels, origin, name)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
