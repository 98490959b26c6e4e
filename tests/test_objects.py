"""Object tables and detection output: hand-made instance maps with known boxes, areas, centroids,
world positions under a non-trivial affine; CSV / JSON / QC picture written per case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.evaluation.objects import measure_objects, touching_ids
from medseg.inference.objects import write_detection_outputs
from medseg.io.image2d import volume_from_pixels
from medseg.volume import Volume


def _two_rectangles() -> np.ndarray:
    """(H, W) = (12, 16) pixels: id 3 rows 2-5 x columns 1-6 (4 x 6), id 9 rows 6-9 x columns 1-3
    (4 x 3) directly below it (touching), id 4 a lone pixel block at rows 10-11, columns 14-15."""
    pixels = np.zeros((12, 16), np.uint16)
    pixels[2:6, 1:7] = 3
    pixels[6:10, 1:4] = 9
    pixels[10:12, 14:16] = 4
    return pixels


def test_2d_table_boxes_areas_centroids_and_world() -> None:
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 100, 7
    rgb[2:6, 1:7, 1] = 50
    image = volume_from_pixels(rgb, (0.5, 0.25))  # rows 0.5 mm, columns 0.25 mm
    labels = image.with_array(np.swapaxes(_two_rectangles(), 0, 1)[:, :, None], kind="label")
    table = measure_objects(labels, image, classes={9: 2}, scores={3: 0.75})
    assert table.dims == 2 and [o.instance for o in table.objects] == [3, 4, 9]
    first, lone, below = table.objects
    assert first.box == (1, 2, 0, 7, 6, 1)  # i = column 1..6, j = row 2..5
    assert first.size == 24 and first.size_mm == pytest.approx(24 * 0.125)
    assert first.centroid == pytest.approx((3.5, 3.5, 0.0))
    # RAS = diag(-0.25, -0.5, 1) @ (i, j, k)
    assert first.centroid_mm == pytest.approx((-0.875, -1.75, 0.0))
    assert first.box_mm == pytest.approx((-1.625, -2.75, 0.0, -0.125, -0.75, 0.0))
    assert first.mean_intensity == pytest.approx((100.0, 50.0, 7.0))
    assert first.diameter == pytest.approx(2 * np.sqrt(24 / np.pi))
    assert (first.touching, below.touching, lone.touching) == (True, True, False)
    assert (first.on_border, lone.on_border) == (False, True)
    assert (first.score, below.score, below.class_value, first.class_value) == (0.75, None, 2, 1)
    row = first.row(2)
    assert row["area_px"] == 24 and row["area_mm2"] == pytest.approx(3.0) and row["mean_intensity_1"] == 50.0


def test_unknown_spacing_reports_no_millimetres() -> None:
    image = volume_from_pixels(np.zeros((12, 16), np.uint8), None)
    labels = image.with_array(np.swapaxes(_two_rectangles(), 0, 1)[:, :, None], kind="label")
    table = measure_objects(labels, image)
    assert table.spacing_mm is None and table.to_json()["spacing_known"] is False
    assert all(o.size_mm is None and o.centroid_mm is None and o.box_mm is None for o in table.objects)
    assert table.rows()[0]["area_mm2"] is None


def test_3d_world_coordinates_under_an_oblique_affine() -> None:
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = (-40.0, 12.0, 7.5)
    array = np.zeros((10, 12, 6), np.uint16)
    array[2:5, 3:9, 1:3] = 1  # 3 x 6 x 2 = 36 voxels, centre (3, 5.5, 1.5)
    labels = Volume(array, affine, "label")
    (obj,) = measure_objects(labels).objects
    assert obj.box == (2, 3, 1, 5, 9, 3) and obj.size == 36
    assert obj.size_mm == pytest.approx(36 * 0.8 * 1.2 * 2.5)
    assert obj.centroid == pytest.approx((3.0, 5.5, 1.5))
    assert obj.centroid_mm == pytest.approx(tuple((affine @ [3.0, 5.5, 1.5, 1.0])[:3]), abs=1e-4)
    corners = [affine @ [i, j, k, 1.0] for i in (1.5, 4.5) for j in (2.5, 8.5) for k in (0.5, 2.5)]
    low, high = np.min(corners, axis=0)[:3], np.max(corners, axis=0)[:3]
    assert obj.box_mm == pytest.approx((*low, *high), abs=1e-4)
    assert obj.diameter_mm == pytest.approx((6 * obj.size_mm / np.pi) ** (1 / 3))


def test_touching_uses_faces_only() -> None:
    diagonal = np.array([[1, 0], [0, 2]])
    assert touching_ids(diagonal) == set()
    assert touching_ids(np.array([[1, 2], [0, 0]])) == {1, 2}


def test_detection_outputs_2d(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = volume_from_pixels(rng.integers(0, 255, size=(12, 16, 3)).astype(np.uint8), None)
    labels = image.with_array(np.swapaxes(_two_rectangles(), 0, 1)[:, :, None], kind="label")
    paths = write_detection_outputs(tmp_path, "case1", image, labels, scores={3: 0.5, 4: 0.25, 9: 1.0})
    stored = np.asarray(Image.open(paths["instances"]))
    assert (
        paths["instances"].name == "case1.png"
        and stored.shape == (12, 16)
        and np.array_equal(stored, _two_rectangles())
    )
    rows = list(csv.DictReader(paths["objects_csv"].open()))
    assert [r["instance"] for r in rows] == ["3", "4", "9"] and rows[0]["area_px"] == "24" and rows[0]["area_mm2"] == ""
    payload = json.loads(paths["objects_json"].read_text())
    assert payload["count"] == 3 and payload["objects"][1]["score"] == 0.25 and payload["spacing_mm"] is None
    qc = Image.open(paths["objects_qc"])
    assert qc.size[0] > 100 and np.asarray(qc).std() > 0


def test_detection_outputs_3d(tmp_path: Path) -> None:
    array = np.zeros((10, 12, 6), np.uint16)
    array[2:5, 3:9, 1:5] = 1
    array[6:9, 3:9, 1:5] = 2
    labels = Volume(array, np.diag([0.5, 0.5, 2.0, 1.0]), "label")
    image = labels.with_array(array.astype(np.float32) * 10, kind="image")
    paths = write_detection_outputs(tmp_path, "vol", image, labels)
    assert paths["instances"].name == "vol.nii.gz" and paths["objects_qc"].exists()
    rows = list(csv.DictReader(paths["objects_csv"].open()))
    assert [r["volume_voxels"] for r in rows] == ["72", "72"] and float(rows[0]["volume_mm3"]) == pytest.approx(36.0)
