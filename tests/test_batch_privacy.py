"""Patient names never reach logs, reports or the ledger; hostile IDs never leave OUTDIR; pseudonyms."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.cases import Namer, SelectionRules, discover_cases
from medseg.cases.privacy import held_logs, redact, redacting_logs

SCRIPT = Path(__file__).with_name("test_batch_fakes.py")
NAME = "Doe^Jane"
PATIENT_ID = "../../etc"


def write_series(folder: Path, description: str, n: int, series_number: int, study_uid: str, corrupt: bool = False) -> None:
    """A small axial CT series written with pydicom (real DICOM files)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    rng = np.random.default_rng(series_number)
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.Modality = NAME, PATIENT_ID, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = series_number, k + 1, description
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.0 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.0
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        pixels = rng.integers(-100, 100, size=(8, 8)).astype(np.int16)
        ds.PixelData = pixels.tobytes()[: 20 if corrupt else None]
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    """One study of a patient whose name is also the export folder's name (as PACS exports do)."""
    from pydicom.uid import generate_uid

    root = tmp_path / "export"
    study = root / "DOE_JANE" / "study1"
    uid = generate_uid()
    write_series(study / "ct", "Abdomen 2mm", 5, 2, uid)
    write_series(study / "loc", "Localizer", 1, 1, uid)
    write_series(study / "bad", "Abdomen broken", 4, 3, uid, corrupt=True)
    return root


def run_cli(export: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDSEG_FAKE_ENGINE": json.dumps({})}
    command = [sys.executable, str(SCRIPT), "batch", str(export), "-m", "fake", "-o", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def everything_written(out: Path, result: subprocess.CompletedProcess, skip: tuple[str, ...] = ()) -> str:
    """All logs and every file under ``out`` (names and bytes) as one lower-case text."""
    parts = [result.stdout, result.stderr]
    for path in out.rglob("*"):
        parts.append(str(path.relative_to(out)))
        if path.is_file() and path.name not in skip:
            parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts).lower()


def test_patient_name_appears_in_no_log_report_or_ledger(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(export, out, "--workers", "2")
    assert result.returncode == 3, result.stderr  # the corrupt series failed, the batch went on
    with open(out / "summary.csv") as handle:
        rows = {r["description"]: r for r in csv.DictReader(handle)}
    assert rows["Abdomen 2mm"]["status"] == "done" and rows["Abdomen broken"]["status"] == "failed"
    assert rows["Localizer"]["status"] == "skipped"
    assert "[redacted]" in rows["Abdomen broken"]["source"]
    text = everything_written(out, result)
    for part in ("doe", "jane"):
        assert part not in text
    # the hostile PatientID became a plain folder name inside OUTDIR/cases
    folders = [p.name for p in (out / "cases").iterdir()]
    assert folders and all(f.startswith("etc_") for f in folders)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "out"]


def test_pseudonymised_names_and_a_separate_mapping(export: Path, tmp_path: Path) -> None:
    out, mapping = tmp_path / "out", tmp_path / "private" / "map.csv"
    result = run_cli(export, out, "--pseudonymise", "--mapping", str(mapping))
    assert result.returncode == 3, result.stderr
    text = everything_written(out, result, skip=("ledger.sqlite",))
    assert "etc_" not in text and "abdomen" not in text and "doe" not in text
    with open(mapping) as handle:
        entries = list(csv.DictReader(handle))
    assert {e["patient_id"] for e in entries} == {PATIENT_ID} and len(entries) == 2
    assert {p.name for p in (out / "cases").iterdir()} <= {e["case"] for e in entries}
    assert all(e["case"].startswith("P") for e in entries)
    again = run_cli(export, out, "--pseudonymise", "--mapping", str(mapping), "--retry-failed")
    assert again.returncode == 3  # the corrupt series still fails; the good one is kept under its name
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(e["case"] for e in entries)
    mixed = run_cli(export, out)
    assert mixed.returncode == 2 and "pass --pseudonymise again" in mixed.stderr


def test_discovery_selects_series_and_knows_the_name_parts(export: Path) -> None:
    found = discover_cases(export, SelectionRules(), Namer())
    assert sorted(c.description for c in found.cases) == ["Abdomen 2mm", "Abdomen broken"]
    assert [s.description for s in found.skipped] == ["Localizer"]
    assert found.cases[0].redact == ("Doe^Jane", "Jane", "Doe")
    assert "Jane" not in repr(found.cases[0])


def test_redaction_of_text_and_log_records(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    terms = ("Doe^Jane", "Jane", "Doe")
    assert redact("/exports/DOE_JANE/x: Doe^Jane doesn't", terms) == "/exports/[redacted]_[redacted]/x: [redacted] doesn't"
    log = logging.getLogger("medseg.test")
    with caplog.at_level(logging.INFO), redacting_logs(terms):
        log.info("reading %s", "/data/jane/1.dcm")
    found: list[str] = []
    with caplog.at_level(logging.INFO), held_logs(lambda: found):
        log.warning("skipping /data/DOE/2.dcm")
        found.append("DOE")
    assert "jane" not in caplog.text.lower() and "doe" not in caplog.text.lower()
    assert "[redacted]/1.dcm" in caplog.text
