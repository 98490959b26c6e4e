"""Resampling onto a regular orthogonal grid (resample=True): tilt and missing slices repaired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.io.dicom import discover_series, load_series, load_volume, select_series

FAILING = "dicom_dicom2nifti_testdata/tests/data/failing"
HITACHI = "dicom_dicom2nifti_testdata/tests/data/hitachi/anatomical/001"


def _stored_slices(folder: Path) -> dict[float, np.ndarray]:
    """Rescaled pixels of each file keyed by z (LPS), as [i, j] arrays."""
    slices = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        values = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices[round(float(ds.ImagePositionPatient[2]), 3)] = values.T
    return slices


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(shared_data: Path) -> None:
    folder = shared_data / FAILING / "gantrytilting/001"
    series = load_series(select_series(discover_series(folder), None), resample=True)
    volume = series.volume
    # 4 slices 5 mm apart in z, tilted 14 deg: 4.85 mm along the normal, 3.63 mm in-plane drift
    assert series.resampled and volume.shape == (512, 521, 4) and series.source_frames == ()
    along_normal = 5 * 0.9702957  # z step times cos(tilt), IOP column direction (0, 0.9703, -0.2419)
    np.testing.assert_allclose(volume.spacing, (0.41796875, 0.41796875, along_normal), atol=1e-5)
    direction = volume.direction
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)  # orthogonal grid
    steps = np.diff(series.frame_positions, axis=0)
    np.testing.assert_allclose(np.linalg.norm(steps, axis=1), volume.spacing[2])
    slices = _stored_slices(folder)
    first = slices[min(slices)]  # the lowest slice lies at the grid origin side: a whole-row copy
    k0 = volume.array[..., 0]
    row_offset = next(j for j in range(10) if np.array_equal(k0[:, j : j + 512], first))
    assert row_offset == 9  # ceil(3.63 mm / 0.418 mm) rows of padding before the first slice
    assert volume.meta.extra["resampled"] is True


def test_missing_slices_are_filled_by_linear_interpolation(shared_data: Path) -> None:
    folder = shared_data / FAILING / "sliceincrement/001"
    volume = load_volume(folder, resample=True)
    assert volume.shape == (512, 512, 5) and volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.spacing[2], 5.0, atol=1e-5)
    slices = _stored_slices(folder)  # z = 18.1, 23.1, 28.1, 38.1: 33.1 is missing
    zs = sorted(slices)
    np.testing.assert_allclose(volume.array[..., 3], (slices[zs[2]] + slices[zs[3]]) / 2, atol=1e-3)
    for k, z in zip((0, 1, 2, 4), zs):
        np.testing.assert_allclose(volume.array[..., k], slices[z], atol=1e-3)


def test_a_regular_series_is_not_resampled(shared_data: Path) -> None:
    plain = load_series(select_series(discover_series(shared_data / HITACHI), None))
    asked = load_series(select_series(discover_series(shared_data / HITACHI), None), resample=True)
    assert not asked.resampled and asked.volume.same_grid(plain.volume, atol=0)
    np.testing.assert_array_equal(asked.volume.array, plain.volume.array)
    assert asked.volume.array.dtype == plain.volume.array.dtype


@pytest.mark.parametrize("series", ["slicecount/001", "notavolume/001"])
def test_resampling_does_not_repair_what_it_cannot(shared_data: Path, series: str) -> None:
    from medseg.errors import GeometryError

    with pytest.raises(GeometryError, match="too few slices|not a volume"):
        load_volume(shared_data / FAILING / series, resample=True)
