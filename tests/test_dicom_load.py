"""load_series / DicomSeries: slice order, source datasets, 4D multi-frame, rescale, duplicates."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import GeometryError
from medseg.io.dicom import DicomSeries, discover_series, load_series, load_volume, select_series
from medseg.io.dicom.headers import read_header
from medseg.io.dicom.pixels import decode_file, rescale
from medseg.volume import LPS_TO_RAS

T1POST = "dicom_tcia_brain_tumor_progression/dicom/PGBM-003/11-T1post-18670"
D2N = "dicom_dicom2nifti_testdata/tests/data"
HITACHI = f"{D2N}/hitachi/anatomical/001"
ENH = "dicom_dcm_qa_enh/dicom"
DCMQI = "dicom_seg_rtstruct_examples/dcmqi/segmentations"


@pytest.fixture(scope="module")
def t1post(shared_data: Path) -> DicomSeries:
    return load_series(select_series(discover_series(shared_data / T1POST), None))


def test_classic_series_keeps_header_only_datasets_in_k_order(t1post: DicomSeries) -> None:
    volume, datasets = t1post.volume, t1post.datasets
    assert volume.shape == (280, 320, 22) and len(datasets) == 22
    assert all("PixelData" not in ds for ds in datasets)
    positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
    np.testing.assert_allclose(t1post.frame_positions, positions)
    lps = LPS_TO_RAS @ volume.affine
    steps = (positions - lps[:3, 3]) @ np.linalg.inv(lps[:3, :3]).T  # voxel coordinates of each IPP
    np.testing.assert_allclose(steps, np.column_stack([np.zeros(22), np.zeros(22), np.arange(22)]), atol=1e-3)
    # sorted along the normal, not by InstanceNumber (which is not spatial in this export)
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, 23))
    assert [path.name for path in t1post.info.files][:3] == ["000000.dcm", "000001.dcm", "000002.dcm"]
    assert t1post.source_frames == tuple(((k, 1),) for k in range(22)) and not t1post.resampled


def test_volume_meta_is_filled(t1post: DicomSeries, shared_data: Path) -> None:
    meta = t1post.volume.meta
    assert meta.modality == "MR" and meta.description == "T1post"
    assert meta.series_uid == t1post.datasets[0].SeriesInstanceUID == t1post.info.uid
    assert meta.rescale is None and meta.source == str(shared_data / T1POST)
    assert meta.extra["study_uid"] == t1post.datasets[0].StudyInstanceUID and meta.extra["resampled"] is False


def test_slice_order_ignores_instance_number(shared_data: Path, tmp_path: Path) -> None:
    for path in sorted((shared_data / HITACHI).iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.InstanceNumber = 10 - int(dataset.InstanceNumber)
        dataset.save_as(tmp_path / f"x{10 - int(path.stem)}.dcm")
    shuffled, original = load_volume(tmp_path), load_volume(shared_data / HITACHI)
    assert shuffled.same_grid(original, atol=1e-9)
    np.testing.assert_array_equal(shuffled.array, original.array)


def test_enhanced_files_of_one_series_form_a_4d_volume(shared_data: Path) -> None:
    series = load_series(select_series(discover_series(shared_data / f"{ENH}/Siemens_XA10"), None))
    assert series.volume.shape == (64, 64, 6, 4)
    assert [Path(ds.filename).name for ds in series.datasets] == ["6_1.dcm", "6_2.dcm", "6_3.dcm", "6_4.dcm"]
    assert series.source_frames == tuple(tuple((t, k + 1) for t in range(4)) for k in range(6))
    assert series.frame_positions.shape == (6, 3)


def test_multiframe_stacks_at_the_same_positions_become_frames(shared_data: Path) -> None:
    series = load_series(select_series(discover_series(shared_data / f"{ENH}/Philips"), None))
    volume = series.volume
    assert volume.shape == (64, 64, 32, 2) and volume.array.dtype == np.float32
    assert volume.meta.extra["frame_types"] == ["M", "FIELD_MAP"] and volume.meta.extra["rescale_varies"]
    assert len(series.datasets) == 1 and series.source_frames[0] == ((0, 1), (0, 33))
    field_map = volume.array[..., 1]  # RescaleSlope 0.2442, intercept -500: Hz
    assert field_map.min() >= -500.0 and field_map.max() <= 500.0


def test_legacy_converted_enhanced_ct_equals_its_classic_slices(shared_data: Path) -> None:
    classic = load_volume(shared_data / f"{DCMQI}/23x38x3/image")
    enhanced = load_volume(shared_data / f"{DCMQI}/23x38x3/multiframe/mf.dcm")
    assert enhanced.same_grid(classic, atol=1e-6) and classic.shape == (23, 38, 3)
    np.testing.assert_array_equal(enhanced.array, classic.array)


def test_ct_rescale_keeps_integers(shared_data: Path) -> None:
    """Slope 1, intercept -1024 on int16 stored values: HU as int16, equal to stored + intercept."""
    volume = load_volume(shared_data / f"{DCMQI}/ct-3slice")
    assert volume.array.dtype == np.int16 and volume.meta.rescale == (1.0, -1024.0)
    first = pydicom.dcmread(shared_data / f"{DCMQI}/ct-3slice/03.dcm")  # lowest z: slice k = 0
    np.testing.assert_array_equal(volume.array[..., 0].T, first.pixel_array.astype(np.int32) - 1024)


def test_rescale_dtype_rules() -> None:
    stored = np.array([[[0, 4095]]], dtype=np.uint16)
    assert rescale(stored, [1.0], [0.0]) is stored
    assert rescale(stored, [1.0], [-1024.0]).dtype == np.int16  # uint16 cannot hold -1024
    assert rescale(stored, [1.0], [100000.0]).dtype == np.int32
    assert rescale(stored, [1.0], [0.5]).dtype == np.float32  # non-integral intercept
    varying = rescale(np.ones((2, 1, 1), np.int16), [2.0, 0.5], [1.0, 1.0])
    np.testing.assert_array_equal(varying.ravel(), [3.0, 1.5])


def test_per_slice_rescale_gives_float32(shared_data: Path) -> None:
    volume = load_volume(shared_data / f"{D2N}/generic/anatomical/002_non_isotropic")
    assert volume.array.dtype == np.float32 and volume.meta.extra["rescale_varies"]


@pytest.mark.parametrize(
    "folder",
    [T1POST, HITACHI, f"{D2N}/generic/anatomical/002_non_isotropic", f"{ENH}/Philips", f"{DCMQI}/ct-3slice"],
)
def test_direct_pixel_reading_equals_pydicom(shared_data: Path, folder: str) -> None:
    """The fast path (offset + frombuffer, sign extension) decodes exactly what pydicom does."""
    for path in sorted((shared_data / folder).iterdir())[:3]:
        header = read_header(path)
        assert header is not None and header.pixel_offset is not None
        expected = pydicom.dcmread(path).pixel_array
        np.testing.assert_array_equal(decode_file(header), expected.reshape((-1,) + expected.shape[-2:]))


def _copy_series(source: Path, target: Path) -> list[Path]:
    shutil.copytree(source, target, dirs_exist_ok=True)
    return sorted(target.iterdir())


def test_duplicates_with_identical_pixels_are_dropped(shared_data: Path, tmp_path: Path, caplog) -> None:
    files = _copy_series(shared_data / HITACHI, tmp_path)
    copy = pydicom.dcmread(files[1])
    copy.SOPInstanceUID = pydicom.uid.generate_uid()
    copy.save_as(tmp_path / "copy.dcm")
    with caplog.at_level(logging.WARNING):
        volume = load_volume(tmp_path)
    assert volume.shape == (64, 64, 4) and "dropped 1 duplicate" in caplog.text
    np.testing.assert_array_equal(volume.array, load_volume(shared_data / HITACHI).array)


def test_duplicates_with_different_pixels_are_refused(shared_data: Path, tmp_path: Path) -> None:
    files = _copy_series(shared_data / HITACHI, tmp_path)
    copy = pydicom.dcmread(files[1])
    copy.SOPInstanceUID = pydicom.uid.generate_uid()
    pixels = copy.pixel_array.copy()
    pixels[0, 0] += 1
    copy.PixelData = pixels.tobytes()
    copy.save_as(tmp_path / "copy.dcm")
    with pytest.raises(GeometryError, match=r"2 images share 1 slice position.*different pixel data"):
        load_volume(tmp_path)


def test_a_missing_slice_is_refused_or_resampled(shared_data: Path, tmp_path: Path, t1post: DicomSeries) -> None:
    files = _copy_series(shared_data / T1POST, tmp_path)
    gone = next(f for f in files if pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber == 11)
    gone.unlink()  # slice k = 10
    with pytest.raises(GeometryError, match=r"inconsistent slice increment \(.*6\.5 to 13 mm"):
        load_volume(tmp_path)
    repaired = load_series(select_series(discover_series(tmp_path), None), resample=True)
    assert repaired.resampled and repaired.volume.same_grid(t1post.volume, atol=1e-3)
    original = t1post.volume.array.astype(np.float32)
    # positions carry sub-micrometre jitter, so the weights are 0.5 +- 1e-6: 0.01 on integer intensities
    np.testing.assert_allclose(repaired.volume.array[..., 10], (original[..., 9] + original[..., 11]) / 2, atol=0.01)
    np.testing.assert_allclose(repaired.volume.array[..., 11:], original[..., 11:], atol=0.01)
