"""``medseg convert`` end to end through ``medseg.cli.main`` on real DICOM, SEG and RTSTRUCT data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.io.dicom import load_volume
from medseg.io.files import read_volume_file
from medseg.volume import Volume

SEGS = "dicom_seg_rtstruct_examples/dcmqi/segmentations"
RT = "dicom_seg_rtstruct_examples/rt-utils/mock_data"
PGBM = "dicom_tcia_brain_tumor_progression/dicom/PGBM-003"


def nrrd(path: Path) -> Volume:
    import SimpleITK as sitk

    return Volume.from_sitk(sitk.ReadImage(str(path)))


def test_dicom_series_to_nifti_with_series_choice(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "t1.nii.gz"
    assert main(["convert", str(shared_data / PGBM), str(out), "--series", "T1post"]) == 0
    written = Volume.from_nibabel(nib.load(str(out)))
    expected = load_volume(shared_data / PGBM / "11-T1post-18670")
    assert written.same_grid(expected, atol=1e-5)
    assert np.array_equal(written.array, expected.array)
    # independent geometry: dcm2niix's conversion of the same series (same world grid up to a row flip)
    reference = Volume.from_nibabel(
        nib.load(str(shared_data / "dicom_tcia_brain_tumor_progression/ref_dcm2niix/PGBM-003_11_T1post.nii.gz"))
    )
    row_flip = np.diag([1.0, -1.0, 1.0, 1.0])
    row_flip[1, 3] = written.shape[1] - 1
    assert np.allclose(np.linalg.inv(reference.affine) @ written.affine, row_flip, atol=1e-3)
    assert np.array_equal(written.array[:, ::-1, :], np.asarray(reference.array))


def test_seg_to_nifti_finds_the_referenced_series_beside_it(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "liver.nii.gz"
    assert main(["convert", str(shared_data / SEGS / "liver.dcm"), str(out)]) == 0
    written = read_volume_file(out, kind="label")
    expected = nrrd(shared_data / SEGS / "liver_seg.nrrd")
    assert written.same_grid(expected, atol=1e-4)
    assert np.array_equal(written.array, expected.array)
    assert json.loads((tmp_path / "liver.json").read_text())["labels"] == {"1": "Liver"}


def test_seg_with_explicit_reference_folder(shared_data: Path, tmp_path: Path) -> None:
    seg = tmp_path / "in" / "label.seg"
    seg.parent.mkdir()
    shutil.copy(shared_data / SEGS / "24x38x3/seg/label.seg", seg)  # alone: nothing to find beside it
    out = tmp_path / "label.nrrd"
    assert main(["convert", str(seg), str(out)]) == 2  # nothing beside it
    assert main(["convert", str(seg), str(out), "--reference", str(shared_data / SEGS / "23x38x3")]) == 2
    assert not out.exists()
    # the folder holds the classic and the multi-frame copy of the images: the SEG names the classic one
    assert main(["convert", str(seg), str(out), "--reference", str(shared_data / SEGS / "24x38x3")]) == 0
    assert np.array_equal(nrrd(out).array, nrrd(shared_data / SEGS / "24x38x3/nrrd/label.nrrd").array)


def test_rtstruct_to_nrrd_with_roi_choice(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("ct_1.dcm", "ct_2.dcm", "rt.dcm"):
        shutil.copy(shared_data / RT / name, folder / name)
    out = tmp_path / "rt.nii.gz"
    assert main(["convert", str(folder / "rt.dcm"), str(out), "--roi", "roi-1"]) == 0
    written = read_volume_file(out, kind="label")
    assert written.same_grid(load_volume(folder, select="PHANTOM*", min_slices=1), atol=1e-5)
    assert set(np.unique(written.array)) == {0, 1}
    assert main(["convert", str(folder / "rt.dcm"), str(tmp_path / "x.nii.gz"), "--roi", "nope"]) == 2
    assert not (tmp_path / "x.nii.gz").exists()


def test_rtstruct_with_missing_images_names_the_series(shared_data: Path, tmp_path: Path, capsys) -> None:
    path = shared_data / "dicom_seg_rtstruct_examples/pydicom_testfiles/rtstruct.dcm"
    out = tmp_path / "x.nii.gz"
    assert main(["convert", str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "1.2.826.0.1.3680043.8.498.2010020400001.2.1.1" in err and "--reference" in err
    assert not out.exists()


def test_volume_format_round_trip(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "msd_hippocampus/imagesTr"
    image = sorted(source.glob("*.nii.gz"))[0]
    original = read_volume_file(image)
    nrrd_out, mha_out, back = tmp_path / "a.nrrd", tmp_path / "a.mha", tmp_path / "a.nii.gz"
    assert main(["convert", str(image), str(nrrd_out)]) == 0
    assert main(["convert", str(nrrd_out), str(mha_out)]) == 0
    assert main(["convert", str(mha_out), str(back)]) == 0
    for path in (nrrd_out, mha_out, back):
        converted = read_volume_file(path)
        assert converted.same_grid(original, atol=1e-5)
        assert np.array_equal(converted.array, original.array)


def test_label_nifti_to_seg_and_back(shared_data: Path, tmp_path: Path) -> None:
    reference = shared_data / SEGS / "ct-3slice"
    labels = tmp_path / "liver.nii.gz"
    assert main(["convert", str(shared_data / SEGS / "liver.dcm"), str(labels)]) == 0
    seg = tmp_path / "liver_seg.dcm"
    assert main(["convert", str(labels), str(seg), "--reference", str(reference)]) == 0
    back = tmp_path / "back.nii.gz"
    assert main(["convert", str(seg), str(back), "--reference", str(reference)]) == 0
    assert np.array_equal(read_volume_file(back).array, read_volume_file(labels).array)
    assert json.loads((tmp_path / "back.json").read_text())["labels"] == {"1": "Liver"}
    # SEG output needs a reference series
    assert main(["convert", str(labels), str(tmp_path / "y.dcm")]) == 2
    assert not (tmp_path / "y.dcm").exists()


@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mha"])
def test_dicom_to_each_volume_format(shared_data: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"ct{suffix}"
    assert main(["convert", str(shared_data / SEGS / "ct-3slice"), str(out)]) == 0
    written, expected = read_volume_file(out), load_volume(shared_data / SEGS / "ct-3slice")
    assert written.same_grid(expected, atol=1e-4)
    assert np.array_equal(written.array, expected.array)
