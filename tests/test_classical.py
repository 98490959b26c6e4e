"""Classical instance baselines: Otsu + components and the distance-transform watershed, on drawn
disks of both polarities and on real DSB2018 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.evaluation.instances import score_instances
from medseg.inference.classical import otsu_instances, watershed_instances
from medseg.io import read_volume
from medseg.io.image2d import image_pixels, volume_from_pixels


def _touching_disks(dark: bool, colour: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two radius-12 disks whose edges overlap by 2 px (one blob), and a lone disk; pixels and truth."""
    rows, cols = np.indices((64, 96))
    truth = np.zeros((64, 96), np.uint16)
    for iid, (r, c) in enumerate(((20, 20), (20, 42), (46, 75)), start=1):
        truth[((rows - r) ** 2 + (cols - c) ** 2 <= 144) & (truth == 0)] = iid
    grey = np.where(truth > 0, 60, 200) if dark else np.where(truth > 0, 200, 30)
    pixels = grey.astype(np.uint8)
    return (np.stack([pixels, pixels // 2, pixels], axis=-1) if colour else pixels), truth


@pytest.mark.parametrize("dark, colour", [(False, False), (True, False), (True, True)])
def test_polarity_and_splitting(dark: bool, colour: bool) -> None:
    pixels, truth = _touching_disks(dark, colour)
    image = volume_from_pixels(pixels, None)
    otsu = image_pixels(otsu_instances(image))
    split = image_pixels(watershed_instances(image))
    assert otsu.shape == truth.shape and len(np.unique(otsu)) - 1 == 2  # the touching pair merges
    assert len(np.unique(split)) - 1 == 3
    assert score_instances("w", split, truth).ap50 == 1.0
    # the merged blob is about twice one disk (IoU about 0.5): from IoU 0.6 on only the lone disk matches
    merged = score_instances("o", otsu, truth)
    assert merged.matched[merged.thresholds.index(0.6)] == 1 and merged.dsb_score < 0.5


def test_flat_image_gives_no_objects() -> None:
    image = volume_from_pixels(np.full((8, 8), 7, np.uint8), None)
    assert not otsu_instances(image).array.any() and not watershed_instances(image).array.any()


def test_baselines_on_real_dsb_images(shared_data: Path) -> None:
    # Measured on these 7 images (every 90th, sorted by name): Otsu 0.511 DSB / 0.682 AP@0.5,
    # watershed 0.422 / 0.655. Bounds leave room for library versions, not for a broken pipeline.
    folder = shared_data / "dsb2018_nuclei"
    names = sorted(p.name for p in (folder / "images").glob("*.png"))[::90]
    scores: dict[str, list[tuple[float, float]]] = {"otsu": [], "watershed": []}
    for name in names:
        image = read_volume(folder / "images" / name)
        truth = np.asarray(read_volume(folder / "labels" / name, kind="label").array)
        for key, method in (("otsu", otsu_instances), ("watershed", watershed_instances)):
            result = method(image)
            assert result.same_grid(image) and result.kind == "label"
            s = score_instances(name, np.asarray(result.array), truth)
            scores[key].append((s.dsb_score, s.ap50))
    otsu, watershed = (np.mean(scores[k], axis=0) for k in ("otsu", "watershed"))
    assert 0.40 < otsu[0] < 0.65 and 0.55 < otsu[1] < 0.80
    assert 0.30 < watershed[0] < 0.60 and 0.50 < watershed[1] < 0.80
