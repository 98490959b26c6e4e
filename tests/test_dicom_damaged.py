"""Damaged and unusual exports: malformed values, unreadable or truncated files, files without pixel
data, mosaics, and folder trees nested thousands deep. Each gets a one-line reason (exit 2), never a
silently shorter volume or an internal error."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from medseg.cli import main
from medseg.errors import DicomError, GeometryError, MedsegError
from medseg.io.dicom import discover_series, load_volume

D2N = "dicom_dicom2nifti_testdata/tests/data"
HITACHI = f"{D2N}/hitachi/anatomical/001"  # 4 classic MR slices, 64 x 64, implicit VR
SIEMENS = f"{D2N}/siemens/anatomical/001"  # 4 classic MR slices, 256 x 256, explicit VR
JPEG = f"{D2N}/generic/compressed_jpeg/001"


def copy_series(shared_data: Path, series: str, target: Path) -> list[Path]:
    """The series' files copied to ``target``, ordered along the slice normal (first to last slice)."""
    shutil.copytree(shared_data / series, target)
    files = sorted(target.iterdir())
    normal = np.cross(*np.reshape(pydicom.dcmread(files[0], stop_before_pixels=True).ImageOrientationPatient, (2, 3)))
    return sorted(
        files, key=lambda f: float(np.dot(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, normal))
    )


def write_raw(path: Path, keyword: str, text: str) -> None:
    """Rewrite ``path`` with ``keyword`` holding exactly ``text`` (malformed values pydicom would refuse)."""
    ds = pydicom.dcmread(path)
    tag = Tag(tag_for_keyword(keyword))
    if dictionary_VR(tag) in ("US", "UL") and text:  # binary: a valid encoding of an impossible number
        setattr(ds, keyword, int(text))
        ds.save_as(path)
        return
    raw = text.encode("latin-1")
    raw += b" " * (len(raw) % 2)
    ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, ds.original_encoding[0], True)
    ds.save_as(path)


def one_line_refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; expect exit 2 and one ``medseg: error:`` line without a traceback; return it."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("medseg: error: "), lines
    return lines[0]


# --- malformed header values (issue 14 item 6) -------------------------------------------------

MALFORMED = [
    ("NumberOfFrames", "1A", "NumberOfFrames '1A' is not a number"),
    ("PixelSpacing", "abc\\2.3", "PixelSpacing 'abc\\2.3' is not a number"),
    ("ImagePositionPatient", "1\\x\\3", "ImagePositionPatient '1\\x\\3' is not a number"),
    ("RescaleSlope", "one", "RescaleSlope 'one' is not a number"),
    ("BitsStored", "40", "BitsStored '40' is not at most BitsAllocated (16)"),
]


@pytest.mark.parametrize(("keyword", "value", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_file_with_a_malformed_value_is_skipped_with_a_warning(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, keyword: str, value: str, reason: str
) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    write_raw(files[-1], keyword, value)
    with caplog.at_level(logging.WARNING):
        (info,) = discover_series(tmp_path / "mr")
    assert f"skipping {files[-1]}: {reason}" in caplog.text
    assert info.n_slices == 3 and [p.path for p in info.unreadable] == [files[-1]]
    assert "1 file(s) unreadable" in info.notes
    with pytest.raises(
        DicomError,
        match=rf"1 of its 4 files cannot be read: .*{files[-1].name} \({re.escape(reason)}\).*--allow-missing-slices",
    ):
        load_volume(tmp_path / "mr")
    assert load_volume(tmp_path / "mr", allow_missing_slices=True).shape == (64, 64, 3)


def test_series_with_every_file_malformed_is_listed_and_refused(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in copy_series(shared_data, HITACHI, tmp_path / "mr"):
        write_raw(path, "NumberOfFrames", "1A")
    assert main(["series", str(tmp_path / "mr")]) == 0
    assert "none of its 4 file(s) can be read" in capsys.readouterr().out
    line = one_line_refusal(["convert", str(tmp_path / "mr"), str(tmp_path / "out.nii.gz")], capsys)
    assert "none of its 4 file(s) can be read" in line and "NumberOfFrames '1A' is not a number" in line
    assert "internal error" not in line and not (tmp_path / "out.nii.gz").exists()


# --- unreadable and truncated files (item 7) ---------------------------------------------------


def test_a_truncated_last_slice_refuses_the_series(shared_data: Path, tmp_path: Path) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    whole = files[-1].read_bytes()
    files[-1].write_bytes(whole[:-1000])  # cut inside the pixel data
    expected = f"{files[-1].name} (truncated at {len(whole) - 1000} of {len(whole)} bytes)"
    with pytest.raises(
        DicomError, match=rf"1 of its 4 files cannot be read: .*{re.escape(expected)}.*--allow-missing-slices"
    ):
        load_volume(tmp_path / "mr")
    volume = load_volume(tmp_path / "mr", allow_missing_slices=True)
    assert volume.shape == (64, 64, 3) and volume.meta.extra["unreadable_files"] == [str(files[-1])]
    np.testing.assert_array_equal(volume.array, load_volume(shared_data / HITACHI).array[..., :3])


def test_a_missing_middle_slice_is_a_gap_once_allowed(shared_data: Path, tmp_path: Path) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    files[1].write_bytes(files[1].read_bytes()[:500])  # cut inside the header: the series UID is lost
    with pytest.raises(
        DicomError,
        match=re.escape(f"{files[1].name} (truncated at 500 bytes, inside its header; in this series' folder"),
    ):
        load_volume(tmp_path / "mr")
    with pytest.raises(GeometryError, match=r"inconsistent slice increment.*--resample"):
        load_volume(tmp_path / "mr", allow_missing_slices=True)
    assert load_volume(tmp_path / "mr", allow_missing_slices=True, resample=True).shape[2] == 4  # regridded


def test_an_unreadable_file_says_permission_denied(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated (tests may run as root, which ignores file modes)."""
    import medseg.io.dicom.headers as headers

    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    real_open = open

    def guarded(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path) == files[-1]:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(headers, "open", guarded, raising=False)
    with pytest.raises(DicomError) as caught:
        load_volume(tmp_path / "mr")
    message = str(caught.value)
    assert f"{files[-1].name} (permission denied; in this series' folder" in message
    assert "truncated" not in message


def test_a_non_dicom_file_named_dcm_beside_a_series_is_named(shared_data: Path, tmp_path: Path) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    files[-1].write_text("<html>export error</html>\n")
    with pytest.raises(DicomError, match=rf"{files[-1].name} \(not DICOM \(no DICOM header\); in this series' folder"):
        load_volume(tmp_path / "mr")
    assert load_volume(tmp_path / "mr", allow_missing_slices=True).shape == (64, 64, 3)


def test_compressed_file_failing_to_decode_can_be_left_out(shared_data: Path, tmp_path: Path) -> None:
    files = copy_series(shared_data, JPEG, tmp_path / "jpeg")
    files[-1].write_bytes(files[-1].read_bytes()[:-20000])
    with pytest.raises(DicomError, match=rf"{files[-1].name} \(cannot decode its pixel data .*truncated"):
        load_volume(tmp_path / "jpeg")
    complete = load_volume(shared_data / JPEG)
    volume = load_volume(tmp_path / "jpeg", allow_missing_slices=True)
    assert volume.shape[2] == complete.shape[2] - 1 and volume.meta.extra["unreadable_files"] == [str(files[-1])]


def test_convert_allow_missing_slices(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    files[-1].write_bytes(files[-1].read_bytes()[:-1000])
    out = tmp_path / "out.nii.gz"
    line = one_line_refusal(["convert", str(tmp_path / "mr"), str(out)], capsys)
    assert "truncated at" in line and "--allow-missing-slices" in line and not out.exists()
    assert main(["convert", str(tmp_path / "mr"), str(out), "--allow-missing-slices"]) == 0
    import nibabel as nib

    assert nib.load(out).shape == (64, 64, 3)


# --- messages that pointed the wrong way (item 8) ----------------------------------------------


@pytest.mark.parametrize("where", ["folder", "file"])
def test_a_complete_file_without_pixel_data_says_so(shared_data: Path, tmp_path: Path, where: str) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    ds = pydicom.dcmread(files[-1])
    del ds.PixelData
    ds.save_as(files[-1])
    with pytest.raises(DicomError) as caught:
        load_volume(files[-1] if where == "file" else tmp_path / "mr")
    message = str(caught.value)
    assert f"{files[-1].name}" in message and "has no pixel data (a MR Image Storage object)" in message
    assert "truncated" not in message and "corrupt" not in message


def _siemens_mosaic(path: Path) -> None:
    ds = pydicom.dcmread(path)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0A, "US", 36)  # NumberOfImagesInMosaic
    ds.save_as(path)


def _uih_grid(path: Path) -> None:
    ds = pydicom.dcmread(path)
    ds.Manufacturer = "UIH"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "VFRAME"]
    block = ds.private_block(0x0065, "Uih_v1.0", create=True)
    block.add_new(0x50, "DS", "27")  # MR Number Of Slice In Volume
    del ds.ImagePositionPatient  # as in the report: it used to be called "a radiograph"
    ds.save_as(path)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_siemens_mosaic, "a Siemens mosaic (36 slices tiled in each image)"),
        (_uih_grid, "a UIH grid mosaic (27 slices tiled in each image)"),
    ],
)
@pytest.mark.parametrize("where", ["folder", "file"])
def test_mosaics_are_named_as_mosaics(shared_data: Path, tmp_path: Path, make, kind: str, where: str) -> None:
    files = copy_series(shared_data, SIEMENS, tmp_path / "epi")
    for path in files:
        make(path)
    with pytest.raises(DicomError) as caught:
        load_volume(files[0] if where == "file" else tmp_path / "epi")
    message = str(caught.value)
    assert f"is {kind}, which medseg does not unpack" in message and "dcm2niix" in message
    assert "radiograph" not in message and "pass the folder" not in message
    assert any(kind.split(" ", 1)[1] in note for note in discover_series(tmp_path / "epi")[0].notes)


# --- folder trees nested deep (item 17, discovery part) ----------------------------------------


def _nest(root: Path, depth: int, name: str) -> list[int]:
    """``depth`` folders ``name`` nested under ``root`` (made through directory descriptors, so the
    total path may exceed the system limit); returns the open descriptors, outermost first."""
    fds = [os.open(root, os.O_RDONLY)]
    for _ in range(depth):
        os.mkdir(name, dir_fd=fds[-1])
        fds.append(os.open(name, os.O_RDONLY, dir_fd=fds[-1]))
    return fds


def _unnest(fds: list[int], name: str) -> None:
    """Remove what :func:`_nest` made, innermost first, and close the descriptors."""
    for inner, outer in zip(reversed(fds[1:]), reversed(fds[:-1])):
        for entry in os.listdir(inner):
            os.unlink(entry, dir_fd=inner)
        os.close(inner)
        os.rmdir(name, dir_fd=outer)
    os.close(fds[0])


def test_a_series_1000_folders_deep_is_found(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fds = _nest(tmp_path, 1000, "d")
    try:
        for path in sorted((shared_data / HITACHI).iterdir()):
            with os.fdopen(os.open(path.name, os.O_WRONLY | os.O_CREAT, dir_fd=fds[-1]), "wb") as out:
                out.write(path.read_bytes())
        assert main(["series", str(tmp_path)]) == 0
        assert "1 series (1 image, 0 other)" in capsys.readouterr().out
    finally:
        _unnest(fds, "d")


def test_a_tree_deeper_than_the_path_limit_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fds = _nest(tmp_path, 1000, "folder_" * 2)  # 14 characters a level: 15,000 > PATH_MAX
    try:
        line = one_line_refusal(["series", str(tmp_path)], capsys)
        assert "no DICOM files found" in line and "folder cannot be listed: file name too long" in line
        assert len(line) < 600
    finally:
        _unnest(fds, "folder_" * 2)


def test_reader_errors_are_medseg_errors(shared_data: Path, tmp_path: Path) -> None:
    """Every refusal above is a MedsegError (exit code 2), never a bare ValueError/OSError."""
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    write_raw(files[0], "Rows", "")  # an empty required value
    files[1].write_bytes(b"")
    with pytest.raises(MedsegError) as caught:
        load_volume(tmp_path / "mr")
    assert caught.value.exit_code == 2
