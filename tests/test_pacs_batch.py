"""``medseg batch`` with a real Orthanc as input and as ``--push-to`` (DICOMweb and DIMSE), with the
shipped hippocampus model: the same cases as the export folder, one SEG per series in the source
study that reads back equal to the local label map, nothing pushed twice, no patient name written.
Skips with the reason when Orthanc is not installed."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.cli import main
from medseg.io import read_volume
from medseg.io.dicom import discover_series, load_series
from medseg.io.seg import read_seg
from tests.dicom_factory import write_crop_export
from tests.orthanc import Orthanc

NAMES = ("doe", "jane", "roe", "richard", "dumbledore", "albus")


@pytest.fixture
def crops(orthanc: Orthanc, sample_data: Path, tmp_path: Path) -> dict[str, Path]:
    """Orthanc holding the crop export (3 image series of 2 patients + a localizer); folders by series UID."""
    folders = write_crop_export(tmp_path / "export", sample_data)
    orthanc.upload(sorted((tmp_path / "export").rglob("*.dcm")))
    return folders


def batch(*args: str) -> int:
    """``medseg batch ...`` in this process (workers are still separate processes)."""
    return main(["batch", *map(str, args), "-m", "hippocampus", "--threads", "1"])


def ledger(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        return db.execute(sql).fetchall()


def check_segs_read_back(orthanc: Orthanc, out: Path, sources: dict[str, Path], tmp_path: Path) -> int:
    """Every SEG in Orthanc lies in its source study, references one source series, and reads back equal
    to the label map medseg wrote for that series. Returns how many SEGs there are."""
    cases = {row[0]: row[1] for row in ledger(out, "SELECT series_uid, case_id FROM cases WHERE status = 'done'")}
    segs = orthanc.seg_files(tmp_path / "from-orthanc")
    for study_uid, path in segs:
        seg = pydicom.dcmread(path)
        source_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
        assert study_uid == str(seg.StudyInstanceUID)
        reference = load_series(discover_series(sources[source_uid])[0])
        assert str(reference.datasets[0].StudyInstanceUID) == study_uid  # the source study
        case = cases[source_uid]
        local = read_volume(out / "cases" / case / f"{case}.nii.gz")
        archived = read_seg(path, reference)
        assert archived.same_grid(local)
        assert np.array_equal(np.asarray(archived.array), np.asarray(local.array))
        assert np.asarray(local.array).any()  # the model found the hippocampus
    return len(segs)


def everything_written(out: Path, text: str) -> str:
    """Logs and everything under ``out`` (names and words, tests/output_text.py) as one lower-case
    text; the SEG files are left out (a SEG carries the patient module by design)."""
    from tests.output_text import written_texts

    return "\n".join([text, *written_texts(out, skip=(".dcm",)).values()]).lower()


def test_batch_from_dicomweb_leaves_one_seg_per_series_after_two_runs(orthanc, crops, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    out, url = tmp_path / "out", orthanc.dicomweb_url
    assert batch(url, "-o", out, "--push-to", url) == 0
    assert sorted(ledger(out, "SELECT status, COUNT(*) FROM cases GROUP BY status")) == [("done", 3), ("skipped", 1)]
    assert ledger(out, "SELECT status, COUNT(*) FROM pushes") == [("sent", 3)]
    assert batch(url, "-o", out, "--push-to", url) == 0  # the rerun finds everything done and pushed
    assert "0 sent, 0 already there, 3 pushed before, 0 failed" in capsys.readouterr().out
    assert ledger(out, "SELECT MAX(attempts) FROM cases") == [(1,)]
    assert check_segs_read_back(orthanc, out, crops, tmp_path) == 3
    assert not (out / ".archive-cache").exists() or not any((out / ".archive-cache").iterdir())
    written = everything_written(out, caplog.text + capsys.readouterr().out)
    assert "p1_" in written and "retrieve" in written  # the text checked is the real output
    assert not [name for name in NAMES if name in written]


def test_batch_from_dimse_pushes_with_c_store(orthanc, crops, tmp_path):
    out, url = tmp_path / "out", orthanc.dimse_url
    assert batch(url, "-o", out, "--push-to", url, "--workers", "2") == 0
    assert ledger(out, "SELECT status, COUNT(*) FROM pushes") == [("sent", 3)]
    assert check_segs_read_back(orthanc, out, crops, tmp_path) == 3
    assert batch(url, "-o", out, "--push-to", url) == 0
    assert len(orthanc.segs()) == 3


def test_archive_input_gives_the_cases_and_reasons_of_the_same_export_folder(orthanc, crops, tmp_path, capsys):
    assert batch(tmp_path / "export", "-o", tmp_path / "a", "--dry-run") == 0
    from_folder = capsys.readouterr().out.splitlines()
    for url in (orthanc.dicomweb_url, orthanc.dimse_url):
        assert batch(url, "-o", tmp_path / "b", "--dry-run") == 0
        assert capsys.readouterr().out.splitlines() == from_folder
    assert any("skip" in line and "Localizer" in line for line in from_folder)
    assert (
        batch(
            orthanc.dicomweb_url,
            "-o",
            tmp_path / "c",
            "--dry-run",
            "--patient-id",
            "P2",
            "--series-description",
            "repeat",
        )
        == 0
    )
    chosen = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert len(chosen) == 1 and chosen[0].startswith("P2_") and "repeat" in chosen[0]


def test_filters_need_an_archive_and_bad_addresses_are_one_line(tmp_path, capsys):
    assert batch(tmp_path, "-o", tmp_path / "out", "--patient-id", "P1", "--dry-run") == 2
    assert "--patient-id filter(s) archive series" in capsys.readouterr().err
    assert batch("https://user:pw@pacs/dicom-web", "-o", tmp_path / "out", "--dry-run") == 2
    err = capsys.readouterr().err
    assert "do not put credentials in the archive URL" in err and "pw" not in err.replace("pacs", "")


def test_the_shipped_export_over_dicomweb(orthanc, sample_data, tmp_path, caplog):
    """The real TCIA export (oblique MR, 22 slices of 320 x 280): the T1 series, segmented from the archive."""
    caplog.set_level(logging.INFO)
    orthanc.upload(sorted((sample_data / "dicom").rglob("*.dcm")))
    out, url = tmp_path / "out", orthanc.dicomweb_url
    assert batch(url, "-o", out, "--push-to", url, "--series-description", "^T1post$") == 0
    sources = {str(i.uid): i.files[0].parent for i in discover_series(sample_data / "dicom")}
    assert check_segs_read_back(orthanc, out, sources, tmp_path) == 1
    assert ledger(out, "SELECT case_id FROM cases") == [("PGBM-003_a4c82d_S11_T1post",)]
    timings = ledger(out, "SELECT timings FROM cases")[0][0]
    assert '"retrieve"' in timings
    written = everything_written(out, caplog.text)
    assert "pgbm-003" in written and "dumbledore" not in written and "albus" not in written


@pytest.mark.slow
def test_the_shipped_export_over_dimse(orthanc, sample_data, tmp_path):
    """Both real series over C-FIND/C-GET, pushed with C-STORE (slow: about 15-30 s per series on 2 CPUs)."""
    orthanc.upload(sorted((sample_data / "dicom").rglob("*.dcm")))
    out, url = tmp_path / "out", orthanc.dimse_url
    assert batch(url, "-o", out, "--push-to", url) == 0
    sources = {str(i.uid): i.files[0].parent for i in discover_series(sample_data / "dicom")}
    assert check_segs_read_back(orthanc, out, sources, tmp_path) == 2


def test_an_archive_address_given_as_a_path_says_which_commands_read_archives():
    from medseg.cases import discover_cases
    from medseg.errors import InputError

    with pytest.raises(InputError, match="is an archive address; 'medseg batch' and 'medseg watch' read archives"):
        discover_cases("http://127.0.0.1:1/dicom-web")
