"""Bad input gets a one-line MedsegError naming the problem and the fix; never a traceback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medseg.errors import DicomError, GeometryError, InputError, MedsegError
from medseg.io import read_volume
from medseg.io.dicom import load_volume

FAILING = "dicom_dicom2nifti_testdata/tests/data/failing"
HITACHI = "dicom_dicom2nifti_testdata/tests/data/hitachi/anatomical/001"
JPEG = "dicom_dicom2nifti_testdata/tests/data/generic/compressed_jpeg/001"
EXAMPLES = "dicom_seg_rtstruct_examples"


def refusal(path: Path, error: type = MedsegError, match: str = "", **kwargs: object) -> str:
    """Load ``path``, expect ``error`` whose one-line message matches ``match``; return the message."""
    with pytest.raises(error) as caught:
        load_volume(path, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    assert re.search(match, message), message
    return message


@pytest.mark.parametrize(
    ("series", "error", "problem"),
    [
        ("slicecount/001", GeometryError, r"2 slice position\(s\).*too few slices"),
        ("sliceincrement/001", GeometryError, r"inconsistent slice increment.*5 to 10 mm.*--resample"),
        ("sliceincrement/002", GeometryError, r"gantry tilt of 15\.5.*inconsistent slice increment"),
        ("gantrytilting/001", GeometryError, r"gantry tilt of 14\.0.*--resample"),
        ("sliceorientation/001", DicomError, r"split into parts: mixed orientations.*choose one"),
        ("notavolume/001", GeometryError, r"4 images share 1 slice position.*different pixel data.*not a volume"),
    ],
)
def test_failing_series_are_refused_with_the_reason(shared_data: Path, series: str, error: type, problem: str) -> None:
    refusal(shared_data / FAILING / series, error, problem)


def test_one_part_of_a_mixed_orientation_series_has_too_few_slices(shared_data: Path) -> None:
    assert "too few slices" in refusal(shared_data / FAILING / "sliceorientation/001", select="1")


def test_missing_path(tmp_path: Path) -> None:
    refusal(tmp_path / "nowhere", InputError, "does not exist; check the path")


def test_empty_folder(tmp_path: Path) -> None:
    refusal(tmp_path, DicomError, "is an empty folder")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "scan.json").write_text("{}\n")
    refusal(tmp_path, DicomError, r"no DICOM files found .*\(2 file\(s\) checked\)")


@pytest.mark.parametrize("where", ["pixels", "header"])
def test_truncated_file(shared_data: Path, tmp_path: Path, where: str) -> None:
    """One slice of a series cut inside its pixel data, or halfway through its header."""
    shutil.copytree(shared_data / HITACHI, tmp_path, dirs_exist_ok=True)
    victim = tmp_path / "003.dcm"
    data = victim.read_bytes()
    header_bytes = len(data) - 64 * 64 * 2
    victim.write_bytes(data[: len(data) - 1000 if where == "pixels" else header_bytes // 2])
    message = refusal(tmp_path if where == "pixels" else victim)
    assert "003.dcm" in message and "truncated" in message and "re-export" in message


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")  # pydicom notices it too
def test_truncated_compressed_file(shared_data: Path, tmp_path: Path) -> None:
    shutil.copytree(shared_data / JPEG, tmp_path, dirs_exist_ok=True)
    victim = sorted(tmp_path.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-20000])
    message = refusal(tmp_path)
    assert victim.name in message and "cannot decode" in message and "truncated" in message


@pytest.mark.parametrize(
    "objects", [["rt-utils/mock_data/rt.dcm"], ["dcmqi/segmentations/liver.dcm", "highdicom/seg_image_ct_binary.dcm"]]
)
def test_only_non_image_objects(shared_data: Path, tmp_path: Path, objects: list[str]) -> None:
    for name in objects:
        shutil.copy(shared_data / EXAMPLES / name, tmp_path / Path(name).name)
    refusal(tmp_path, DicomError, r"no image series found, only non-image objects \((RTSTRUCT|SEG)\)")


def test_a_seg_file_given_directly_is_not_an_image(shared_data: Path) -> None:
    refusal(shared_data / EXAMPLES / "dcmqi/segmentations/liver.dcm", DicomError, "no image series found")


def test_a_2d_radiograph_is_not_a_volume(shared_data: Path) -> None:
    path = shared_data / EXAMPLES / "pydicom_testfiles/dicomdirtests/77654033/CR1/6154"
    refusal(path, GeometryError, "no ImagePositionPatient / ImageOrientationPatient.*not a volume")


def test_a_single_classic_slice_names_the_fix(shared_data: Path) -> None:
    message = refusal(shared_data / HITACHI / "001.dcm")
    assert "too few slices" in message and "pass the folder holding the whole series" in message


def test_read_volume_routes_dicom_errors(shared_data: Path) -> None:
    """``medseg.io.read_volume`` (used by every command) raises the same typed errors."""
    with pytest.raises(GeometryError, match="gantry tilt"):
        read_volume(shared_data / FAILING / "gantrytilting/001")
    assert read_volume(shared_data / HITACHI).shape == (64, 64, 4)
