"""A quality-control picture per case: three orthogonal slices through the segmentation's centre
of mass, with a label overlay in the palette colours (:mod:`medseg.io.palette`) and a legend. Rendered with matplotlib's Agg canvas (no
display, no pyplot global state) and written atomically.

Orientation convention (every view carries its letters at the four edges): the volume is first
permuted/flipped to the closest RAS axes (no interpolation), then each view shows

* axial: patient right on the image's left, anterior at the top (radiological);
* coronal: patient right on the image's left, superior at the top (radiological);
* sagittal: anterior on the image's left, superior at the top (as most viewers show it).

That is one rule: the column axis runs from its positive RAS end (R, A) on the left, the row axis
from its positive end (A, S) at the top.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medseg.io.atomic import atomic_path
from medseg.io.palette import colour_float, label_colours
from medseg.volume import Volume


def _to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip the first three axes to the closest RAS order (no interpolation); spacing too."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    reoriented = nib.orientations.apply_orientation(array, ornt)
    return reoriented, spacing[np.argsort(ornt[:, 0])]


def _centre(labels: np.ndarray) -> tuple[int, int, int]:
    """Centre of mass of the foreground (rounded), or the array centre when there is none."""
    idx = np.nonzero(labels)
    if not idx[0].size:
        return tuple(s // 2 for s in labels.shape)
    return tuple(int(round(float(np.mean(a)))) for a in idx)  # type: ignore[return-value]


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display range from the 0.5 and 99.5 percentiles (on a subsample of large images)."""
    step = max(1, int(round((image.size / 2e6) ** (1 / 3))))
    sample = image[::step, ::step, ::step].astype(np.float32)
    low, high = np.percentile(sample, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _colours(values: list[int]):
    """Each label value's palette colour (the same in the viewer, SEG and colour tables)."""
    from matplotlib.colors import ListedColormap

    return {v: colour_float(c) for v, c in label_colours(values).items()}, ListedColormap


#: (name, the RAS axis held fixed, the (column, row) RAS axes shown)
_VIEWS = (("sagittal", 0, (1, 2)), ("coronal", 1, (0, 2)), ("axial", 2, (0, 1)))
#: the letter of each RAS axis at its positive and negative end
_POSITIVE, _NEGATIVE = "RAS", "LPI"


def edge_letters(axes: tuple[int, int]) -> dict[str, str]:
    """The orientation letter at each edge (left, right, top, bottom) of a view whose columns run
    along RAS axis ``axes[0]`` (positive end on the left) and rows along ``axes[1]`` (positive end up)."""
    column, row = axes
    return {"left": _POSITIVE[column], "right": _NEGATIVE[column], "top": _POSITIVE[row], "bottom": _NEGATIVE[row]}


def render_qc(image: Volume, labels: Volume, names: Mapping[int, str], path: Path, title: str = "") -> Path:
    """Write a PNG with sagittal, coronal and axial slices through the labels' centre of mass.

    Needs ``image`` and ``labels`` on the same grid (the first channel of a 4D image is shown).
    The image is windowed by percentiles; views follow the module's orientation convention
    (radiological axial and coronal, anterior on the left in the sagittal view) and carry
    orientation letters at their edges.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    img = np.asarray(image.array)
    img, spacing = _to_ras(img[..., 0] if img.ndim == 4 else img, image.affine)
    lab, _ = _to_ras(np.asarray(labels.array), labels.affine)
    values = [int(v) for v in np.unique(lab) if v != 0]
    colours, listed = _colours(values)
    lut = np.zeros(int(max(values, default=0)) + 1, dtype=np.int32)
    lut[values] = np.arange(len(values))
    style = {"cmap": listed([colours[v] for v in values] or [(0, 0, 0, 0)]), "window": _window(img)}
    centre = _centre(lab)
    fig = Figure(figsize=(12, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    for n, view in enumerate(_VIEWS):
        _draw_view(fig.add_subplot(1, 3, n + 1), img, lut[lab] if values else None, lab, view, centre, spacing, style)
    handles = [Patch(color=colours[v], label=f"{v} {names.get(v, '')}".strip()) for v in values]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
    else:
        fig.text(0.5, 0.04, "no structure found", ha="center", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _draw_view(
    ax,
    img: np.ndarray,
    colour_index: np.ndarray | None,
    lab: np.ndarray,
    view: tuple,
    centre: tuple[int, int, int],
    spacing: np.ndarray,
    style: dict,
) -> None:
    """One orthogonal slice through ``centre`` with the overlay (colour indices into the cmap)."""
    from matplotlib.colors import NoNorm

    name, axis, axes = view
    index = tuple(centre[a] if a == axis else slice(None) for a in range(3))
    aspect = spacing[axes[1]] / spacing[axes[0]]
    low, high = style["window"]
    ax.imshow(img[index].T, cmap="gray", vmin=low, vmax=high, origin="lower", aspect=aspect, interpolation="nearest")
    if colour_index is not None:
        overlay = np.ma.masked_where(lab[index].T == 0, colour_index[index].T)
        ax.imshow(
            overlay,
            cmap=style["cmap"],
            norm=NoNorm(),
            alpha=0.45,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
    ax.invert_xaxis()  # the column axis's positive end (R or A) on the left
    _draw_letters(ax, edge_letters(axes))
    ax.set_title(name, fontsize=10)
    ax.set_axis_off()


#: where each edge letter sits, in axes fractions, and how it is aligned
_LETTER_PLACES = {
    "left": (0.015, 0.5, "left", "center"),
    "right": (0.985, 0.5, "right", "center"),
    "top": (0.5, 0.985, "center", "top"),
    "bottom": (0.5, 0.015, "center", "bottom"),
}


def _draw_letters(ax, letters: Mapping[str, str]) -> None:
    """Orientation letters inside the image at the middle of each edge, white with a dark outline."""
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for edge, letter in letters.items():
        x, y, ha, va = _LETTER_PLACES[edge]
        ax.text(
            x,
            y,
            letter,
            transform=ax.transAxes,
            ha=ha,
            va=va,
            color="white",
            fontsize=10,
            fontweight="bold",
            path_effects=outline,
        )
