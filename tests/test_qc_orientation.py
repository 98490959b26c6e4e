"""The QC picture's orientation, read from its pixels: a structure at a known anatomical corner must
appear where the convention puts it (axial/coronal radiological, sagittal anterior on the left), for
flipped, permuted and oblique voxel grids, and every view carries letters at its edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.inference.qc import edge_letters, render_qc
from medseg.volume import Volume

SHAPE = (40, 44, 36)
VIEWS = ("sagittal", "coronal", "axial")


def rotation(axis: int, degrees: float) -> np.ndarray:
    """A right-handed rotation about RAS axis ``axis``."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


#: voxel axes -> RAS directions (columns) times spacing
GRIDS = {
    "ras": np.diag([1.0, 1.2, 1.5]),
    "lps_flipped": np.diag([-1.0, -1.0, 1.4]),
    "permuted_sagittal": np.array([[0, 0, -1.5], [1.1, 0, 0], [0, -1.0, 0]]),  # i->A, j->I, k->L
    "oblique": rotation(0, 20) @ rotation(2, -15) @ np.array([[0, 1.2, 0], [0, 0, 1.0], [-1.3, 0, 0]]),
}


def volume_with_corner(direction: np.ndarray, corner: tuple[int, int, int]) -> tuple[Volume, Volume]:
    """A black image and a label block in the RAS octant ``corner`` (+1/-1 per axis) of the volume."""
    affine = np.eye(4)
    affine[:3, :3] = direction
    affine[:3, 3] = -direction @ (np.array(SHAPE) - 1) / 2  # world origin at the volume centre
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(float)
    world = ijk @ direction.T + affine[:3, 3]
    inside = np.all([(world[..., a] * corner[a] > 5) & (world[..., a] * corner[a] < 14) for a in range(3)], axis=0)
    image = Volume(np.zeros(SHAPE, np.float32), affine)
    return image, image.with_array(inside.astype(np.uint8), kind="label")


def panels(path: Path) -> list[dict[str, np.ndarray]]:
    """Per view (left to right): its image box (top, bottom, left, right) and the pixels of the
    coloured overlay inside it. The black image areas are found as the three runs of columns that
    hold many dark pixels (titles and the legend are thin text)."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    coloured = rgb.max(-1) - rgb.min(-1) > 25
    image = (rgb.max(-1) < 60) | coloured
    columns = image.sum(0) > 40
    edges = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(int), [0]])))
    runs = list(zip(edges[::2], edges[1::2]))
    assert len(runs) == 3, f"expected three views, found column runs {runs}"
    out = []
    for left, right in runs:
        rows = np.flatnonzero(image[:, left:right].sum(1) > 0.5 * (right - left))
        top, bottom = rows.min(), rows.max() + 1
        out.append(
            {
                "rgb": rgb[top:bottom, left:right],
                "box": np.array((0, bottom - top, 0, right - left)),
                "structure": np.argwhere(coloured[top:bottom, left:right]),
            }
        )
    return out


def quadrant(panel: dict[str, np.ndarray]) -> tuple[str, str]:
    """Where the structure lies in its view: ("top"|"bottom", "left"|"right")."""
    top, bottom, left, right = panel["box"]
    row, col = panel["structure"].mean(0)
    assert len(panel["structure"]) > 50, "the structure is not in this view"
    return ("top" if row < (top + bottom) / 2 else "bottom", "left" if col < (left + right) / 2 else "right")


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize(
    "corner, expected",
    [
        # right, anterior, superior: top-left in every view (R left in axial/coronal, A left in sagittal)
        ((1, 1, 1), {"sagittal": ("top", "left"), "coronal": ("top", "left"), "axial": ("top", "left")}),
        # left, posterior, inferior: bottom-right in every view
        ((-1, -1, -1), {"sagittal": ("bottom", "right"), "coronal": ("bottom", "right"), "axial": ("bottom", "right")}),
        # right, posterior, superior: sagittal top-right, coronal top-left, axial bottom-left
        ((1, -1, 1), {"sagittal": ("top", "right"), "coronal": ("top", "left"), "axial": ("bottom", "left")}),
    ],
)
def test_structure_appears_on_its_anatomical_side(tmp_path, grid, corner, expected) -> None:
    image, labels = volume_with_corner(GRIDS[grid], corner)
    path = render_qc(image, labels, {1: "x"}, tmp_path / "qc.png")
    found = {view: quadrant(panel) for view, panel in zip(VIEWS, panels(path))}
    assert found == expected


def test_every_view_has_letters_at_its_edges(tmp_path) -> None:
    image, labels = volume_with_corner(GRIDS["oblique"], (1, 1, 1))
    path = render_qc(image, labels, {1: "x"}, tmp_path / "qc.png")
    for panel in panels(path):
        top, bottom, left, right = panel["box"]
        white = panel["rgb"].min(-1) > 200
        middle_row, middle_col = (top + bottom) // 2, (left + right) // 2
        edges = {
            "left": white[middle_row - 10 : middle_row + 10, left : left + 20],
            "right": white[middle_row - 10 : middle_row + 10, right - 20 : right],
            "top": white[top : top + 20, middle_col - 10 : middle_col + 10],
            "bottom": white[bottom - 20 : bottom, middle_col - 10 : middle_col + 10],
        }
        assert all(region.sum() > 5 for region in edges.values()), {k: int(v.sum()) for k, v in edges.items()}


def test_edge_letters_follow_the_convention() -> None:
    assert edge_letters((1, 2)) == {"left": "A", "right": "P", "top": "S", "bottom": "I"}  # sagittal
    assert edge_letters((0, 2)) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}  # coronal
    assert edge_letters((0, 1)) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}  # axial
