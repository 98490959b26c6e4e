"""Series discovery on a realistic export: nested folders, DICOMDIR, junk files, no-preamble files."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import GeometryError
from medseg.io.dicom import discover_series, format_series_table, load_series, load_volume, select_series

D2N = "dicom_dicom2nifti_testdata/tests/data"
HITACHI = f"{D2N}/hitachi/anatomical/001"
SIEMENS = f"{D2N}/siemens/anatomical/001"
XA10 = "dicom_dcm_qa_enh/dicom/Siemens_XA10"
RTSTRUCT = "dicom_seg_rtstruct_examples/pydicom_testfiles/rtstruct.dcm"


@pytest.fixture(scope="module")
def export(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scanner-export-like tree: a DICOMDIR file-set, nested series, an RTSTRUCT and junk."""
    from pydicom.fileset import FileSet

    root = tmp_path_factory.mktemp("export")
    file_set = FileSet()
    for path in sorted((shared_data / HITACHI).iterdir()):
        file_set.add(pydicom.dcmread(path))
    file_set.write(root)  # DICOMDIR + PT000000/ST000000/SE000000/IM00000x (no extensions)
    shutil.copytree(shared_data / SIEMENS, root / "more" / "deep" / "siemens")
    shutil.copytree(shared_data / XA10, root / "more" / "xa10")
    (root / "rt").mkdir()
    shutil.copy(shared_data / RTSTRUCT, root / "rt" / "rtstruct")  # no preamble, no file meta
    junk = root / "more" / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("scanner export notes\n")
    (junk / "sidecar.json").write_text('{"SeriesDescription": "not dicom"}\n')
    (junk / "empty.dcm").write_bytes(b"")
    shutil.copy(shared_data / f"{HITACHI}_ground_truth.nii.gz", junk / "volume.nii.gz")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def test_every_series_of_a_nested_export_is_found(export: Path) -> None:
    infos = discover_series(export)
    by_modality = {(info.modality, info.n_slices, info.n_frames, info.is_image) for info in infos}
    assert by_modality == {("MR", 4, 1, True), ("MR", 6, 4, True), ("RTSTRUCT", 1, 1, False)} and len(infos) == 4
    assert [info.index for info in infos] == [1, 2, 3, 4]
    files = {path.name for info in infos for path in info.files}
    assert "DICOMDIR" not in files and not files & {"notes.txt", "sidecar.json", "empty.dcm", "volume.nii.gz"}
    hitachi = next(info for info in infos if info.matrix == (64, 64) and info.n_frames == 1)
    assert hitachi.orientation == "PIR" and not hitachi.multiframe
    np.testing.assert_allclose(hitachi.spacing, (2.34375, 2.34375, 4.0), atol=1e-4)
    xa10 = next(info for info in infos if info.n_frames == 4)
    assert xa10.multiframe and len(xa10.files) == 4 and xa10.description == "REST1 w SMS PF7-8"


def test_discovery_reads_headers_only(export: Path) -> None:
    for info in discover_series(export):
        assert all("PixelData" not in frame.header.dataset for frame in info.frames)


def test_index_order_is_study_then_series_number(shared_data: Path) -> None:
    infos = discover_series(shared_data / "dicom_dcm_qa_decubitus")
    keys = [(info.study_uid, info.series_number, info.uid) for info in infos]
    assert keys == sorted(keys) and [info.index for info in infos] == [1, 2, 3, 4]
    assert discover_series(shared_data / "dicom_dcm_qa_decubitus") == infos  # stable


def test_series_in_a_dicomdir_file_set_loads(export: Path, shared_data: Path) -> None:
    infos = discover_series(export / "PT000000")
    volume = load_series(select_series(infos, None)).volume
    original = load_volume(shared_data / HITACHI)
    assert volume.same_grid(original, atol=1e-6)
    np.testing.assert_array_equal(volume.array, original.array)


def test_a_single_file_can_be_discovered_and_loaded(shared_data: Path) -> None:
    path = shared_data / f"{D2N}/hyperfine/anatomical/001/001.dcm"
    (info,) = discover_series(path)
    assert info.files == (path,) and info.n_slices == 8
    assert load_volume(path).shape == (112, 138, 8)


def test_files_without_preamble_or_file_meta_are_read(shared_data: Path, tmp_path: Path) -> None:
    """Files written as a bare implicit-VR dataset need ``force=True``; the volume is unchanged."""
    for path in sorted((shared_data / SIEMENS).iterdir()):
        dataset = pydicom.dcmread(path)
        del dataset.file_meta
        dataset.preamble = None
        dataset.save_as(tmp_path / path.stem, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (tmp_path / "IM-0001-0112-0001").read_bytes()[128:132] != b"DICM"
    volume = load_volume(tmp_path)
    original = load_volume(shared_data / SIEMENS)
    assert volume.same_grid(original, atol=1e-6)
    np.testing.assert_array_equal(volume.array, original.array)


def test_a_series_mixing_orientations_is_split(shared_data: Path) -> None:
    infos = discover_series(shared_data / f"{D2N}/failing/sliceorientation/001")
    assert len(infos) == 2
    base = infos[0].series_instance_uid
    assert {info.uid for info in infos} == {f"{base}.1", f"{base}.2"}
    assert all("mixed orientations" in info.notes[0] for info in infos)
    assert {info.orientation for info in infos} == {"PIR", "LPS"}
    whole = replace(infos[0], files=infos[0].files + infos[1].files, frames=())
    with pytest.raises(GeometryError, match="mixed orientation"):
        load_series(whole)


def test_series_table_lists_images_and_marks_other_objects(export: Path) -> None:
    infos = discover_series(export)
    table = format_series_table(infos)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["#", "UID", "modality", "description"]
    assert len(lines) == 1 + len(infos)
    assert all(info.uid in table for info in infos)
    assert "not an image (RTSTRUCT)" in table and "6x4" in table and "2.344 x 2.344 x 4" in table
    detailed = format_series_table(infos, details=True)
    assert "folder" in detailed.splitlines()[0] and "siemens" in detailed


def test_series_of_datasets_in_memory_match_the_files(sample_data):
    """Headers held in memory (an archive's metadata) give the same series as the files they came from."""
    from medseg.io.dicom import series_of_datasets

    files = sorted((sample_data / "dicom").rglob("*.dcm"))
    in_memory = series_of_datasets([pydicom.dcmread(f, stop_before_pixels=True) for f in files])
    on_disk = discover_series(sample_data / "dicom")
    keys = ("index", "uid", "description", "n_slices", "matrix", "spacing", "orientation", "is_image")
    assert [[getattr(i, k) for k in keys] for i in in_memory] == [[getattr(i, k) for k in keys] for i in on_disk]
    assert all(f.name.endswith(".dcm") and not f.exists() for i in in_memory for f in i.files)  # placeholders
