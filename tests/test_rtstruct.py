"""RTSTRUCT rasterisation on real structure sets and the CT slices they reference."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import DicomError, InputError
from medseg.io.dicom import discover_series, load_series, select_series
from medseg.io.rtstruct import polygon_mask, read_rtstruct
from medseg.volume import LPS_TO_RAS

RT = "dicom_seg_rtstruct_examples/rt-utils/mock_data"


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area (mm²) of a planar polygon given by its x, y coordinates."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


@pytest.fixture(scope="module")
def phantom(shared_data: Path, tmp_path_factory):
    """The two rt-utils CT slices (in a folder of their own) loaded as a series."""
    folder = tmp_path_factory.mktemp("phantom")
    for name in ("ct_1.dcm", "ct_2.dcm"):
        shutil.copy(shared_data / RT / name, folder / name)
    return load_series(select_series(discover_series(folder), None), min_slices=1)


def test_rtutils_roi_area_slice_and_geometry(shared_data: Path, phantom) -> None:
    path = shared_data / RT / "rt.dcm"
    labels = read_rtstruct(path, phantom)
    assert labels.kind == "label" and labels.same_grid(phantom.volume)
    assert labels.meta.label_names == {1: "ROI-1"}
    contours = [
        np.asarray(c.ContourData, float).reshape(-1, 3)
        for c in pydicom.dcmread(path).ROIContourSequence[0].ContourSequence
    ]
    z = {float(c[0, 2]) for c in contours}
    assert z == {60.0}
    k = int(np.argmin(np.abs(phantom.frame_positions[:, 2] - 60.0)))
    per_slice = np.count_nonzero(labels.array, axis=(0, 1))
    assert per_slice[k] > 0 and per_slice[1 - k] == 0
    # the second contour lies inside the first: even-odd makes it a hole
    expected = polygon_area(contours[0]) - polygon_area(contours[1])
    pixel_area = float(np.prod(phantom.volume.spacing[:2]))
    assert per_slice[k] * pixel_area == pytest.approx(expected, rel=0.03)
    inside_hole = _voxel(phantom, [-40.0, -40.0, 60.0])
    in_ring = _voxel(phantom, [-49.0, -40.0, 60.0])
    assert labels.array[inside_hole] == 0 and labels.array[in_ring] == 1


def _voxel(series, lps_point: list[float]) -> tuple[int, int, int]:
    """Voxel index of an LPS point on the series grid."""
    ras = LPS_TO_RAS[:3, :3] @ np.asarray(lps_point)
    ijk = np.linalg.solve(series.volume.affine[:3, :3], ras - series.volume.affine[:3, 3])
    return tuple(int(v) for v in np.rint(ijk))  # type: ignore[return-value]


def _synthetic_rtstruct(shared_data: Path, target: Path) -> Path:
    """rt.dcm with two ROIs: a 20 mm circle (z=65) and a square overlapping it, plus an off-slice contour."""
    ds = pydicom.dcmread(shared_data / RT / "rt.dcm")
    angles = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    circle = np.column_stack([10 + 20 * np.cos(angles), -5 + 20 * np.sin(angles), np.full(180, 65.0)])
    square = np.array([[10, -5, 65], [40, -5, 65], [40, 25, 65], [10, 25, 65]], float)
    off_slice = square + [0, 0, 2.5]
    roi, contour_item = ds.StructureSetROISequence[0], ds.ROIContourSequence[0]
    template = contour_item.ContourSequence[0]
    rois, items = [], []
    for number, name, polygons in ((1, "circle", [circle, off_slice]), (2, "square", [square])):
        new_roi = copy.deepcopy(roi)
        new_roi.ROINumber, new_roi.ROIName = number, name
        item = copy.deepcopy(contour_item)
        item.ReferencedROINumber = number
        item.ContourSequence = []
        for points in polygons:
            contour = copy.deepcopy(template)
            contour.ContourData = [float(v) for v in points.ravel()]
            contour.NumberOfContourPoints = len(points)
            del contour.ContourImageSequence
            item.ContourSequence.append(contour)
        rois.append(new_roi)
        items.append(item)
    ds.StructureSetROISequence, ds.ROIContourSequence = rois, items
    ds.save_as(target)
    return target


def test_synthetic_rois_area_order_overlap_and_selection(shared_data: Path, tmp_path: Path, phantom, caplog) -> None:
    path = _synthetic_rtstruct(shared_data, tmp_path / "rt.dcm")
    with caplog.at_level(logging.INFO, logger="medseg.io.rtstruct"):
        labels = read_rtstruct(path, phantom)
    assert labels.meta.label_names == {1: "circle", 2: "square"}
    assert "not on a slice" in caplog.text
    assert "ROIs overlap: 'circle' and 'square' share" in caplog.text and "--masks" in caplog.text
    pixel_area = float(np.prod(phantom.volume.spacing[:2]))
    k = int(np.argmin(np.abs(phantom.frame_positions[:, 2] - 65.0)))
    plane = labels.array[:, :, k]
    # the later ROI (square, value 2) wins the shared quarter of the circle
    assert np.count_nonzero(plane == 2) * pixel_area == pytest.approx(900.0, rel=0.03)
    assert np.count_nonzero(plane == 1) * pixel_area == pytest.approx(0.75 * np.pi * 400, rel=0.03)
    assert np.count_nonzero(labels.array[:, :, 1 - k]) == 0
    only_circle = read_rtstruct(path, phantom, rois=["CIRCLE"])
    assert np.count_nonzero(only_circle.array) * pixel_area == pytest.approx(np.pi * 400, rel=0.02)
    reordered = read_rtstruct(path, phantom, rois=["square", "circle"])
    assert reordered.meta.label_names == {1: "square", 2: "circle"}
    with pytest.raises(InputError, match="did you mean 'square'"):
        read_rtstruct(path, phantom, rois=["sqare"])


def test_polygon_mask_circle_area_and_hole_free_edges() -> None:
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    circle = np.column_stack([50 + 30 * np.cos(angles), 40 + 30 * np.sin(angles)])
    mask = polygon_mask(circle, (100, 80))
    assert np.count_nonzero(mask) == pytest.approx(np.pi * 900, rel=0.01)
    assert mask[50, 40] and not mask[50, 75] and not mask[85, 40]
    assert not polygon_mask(circle + 500, (100, 80)).any()  # entirely outside the grid


def test_wrong_reference_series_is_named(shared_data: Path, phantom) -> None:
    path = shared_data / "dicom_seg_rtstruct_examples/pydicom_testfiles/rtstruct.dcm"  # needs force=True
    with pytest.raises(
        DicomError, match=r"drawn on image series 1\.2\.826\.0\.1\.3680043\.8\.498\.2010020400001\.2\.1\.1"
    ):
        read_rtstruct(path, phantom)


def test_non_rtstruct_file_is_refused(shared_data: Path, phantom) -> None:
    with pytest.raises(DicomError, match="not a DICOM RT Structure Set"):
        read_rtstruct(shared_data / RT / "ct_1.dcm", phantom)
