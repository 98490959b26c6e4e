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
from tests.output_text import written_texts

SCRIPT = Path(__file__).with_name("test_batch_fakes.py")
NAME = "Doe^Jane"
PATIENT_ID = "../../etc"


def write_series(
    folder: Path, description: str, n: int, series_number: int, study_uid: str, corrupt: bool = False
) -> None:
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
    """All logs and everything under ``out`` (names and words, tests/output_text.py) as one lower-case text."""
    return "\n".join([result.stdout, result.stderr, *written_texts(out, skip).values()]).lower()


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
    assert found.cases[0].redact == ("Doe^Jane", "Jane Doe", "Jane", "Doe")
    assert "Jane" not in repr(found.cases[0])


def test_redaction_of_text_and_log_records(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    terms = ("Doe^Jane", "Jane", "Doe")
    assert redact("/exports/DOE_JANE/x: Doe^Jane doesn't", terms) == "/exports/[redacted]/x: [redacted] doesn't"
    log = logging.getLogger("medseg.test")
    with caplog.at_level(logging.INFO), redacting_logs(terms):
        log.info("reading %s", "/data/jane/1.dcm")
    found: list[str] = []
    with caplog.at_level(logging.INFO), held_logs(lambda: found):
        log.warning("skipping /data/DOE/2.dcm")
        found.append("DOE")
    assert "jane" not in caplog.text.lower() and "doe" not in caplog.text.lower()
    assert "[redacted]/1.dcm" in caplog.text


# ----------------------------------------------------------------------------- names in every output
#: Two patients of real MR series whose names also stand in their PatientID and descriptions; with
#: regex metacharacters (^ ' -) and non-ASCII letters on purpose.
ZOE, HANS = "O'Brien^Zoë", "Müller-Lüdenscheidt^Hans"
#: Every name part, as written and as exports and sanitised names spell it; none may appear anywhere.
NEEDLES = (
    "brien",
    "zoë",
    "zoe",
    "müller",
    "muller",
    "mueller",
    "lüdenscheidt",
    "ludenscheidt",
    "luedenscheidt",
    "hans",
)


def shift_one_slice(ds, millimetres: float) -> None:
    """Move a slice along the slice normal (the series then has uneven spacing: the reader refuses it)."""
    row, column = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    ds.ImagePositionPatient = [
        float(v) for v in np.asarray(ds.ImagePositionPatient, float) + millimetres * np.cross(row, column)
    ]


def named_export(sample_data: Path, root: Path) -> Path:
    """The shipped MR series rewritten with pydicom as two patients in folders named after them:
    Zoë (PatientID = her name, name in the description) with one series and a NIfTI file named
    after her, Hans (PatientID = his family name, name in the descriptions) with one good series
    and one the reader refuses."""
    import shutil

    import pydicom
    from pydicom.uid import generate_uid

    t1, flair = sorted((sample_data / "dicom" / "PGBM-003").iterdir())
    plan = [
        (t1, "OBRIEN_ZOE/t1", ZOE, ZOE, "T1post ZOË O'BRIEN", False),
        (flair, "Mueller-Luedenscheidt/flair", HANS, "Müller-Lüdenscheidt", "Hans Müller-Lüdenscheidt FLAIR", False),
        (t1, "Mueller-Luedenscheidt/t1", HANS, "Müller-Lüdenscheidt", "T1 Müller-Lüdenscheidt", True),
    ]
    studies = {ZOE: generate_uid(), HANS: generate_uid()}
    for source, folder, name, patient_id, description, broken in plan:
        series_uid = generate_uid()
        (root / folder).mkdir(parents=True)
        for k, path in enumerate(sorted(source.iterdir())):
            ds = pydicom.dcmread(path)
            ds.PatientName, ds.PatientID, ds.SeriesDescription = name, patient_id, description
            ds.StudyInstanceUID, ds.SeriesInstanceUID = studies[name], series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            if broken and k == 10:
                shift_one_slice(ds, 2.0)
            ds.save_as(root / folder / path.name)
    shutil.copy(
        sample_data / "hippocampus" / "imagesTs" / "hippocampus_020.nii.gz", root / "OBRIEN_ZOE" / "zoe_t1.nii.gz"
    )
    return root


@pytest.fixture()
def named(sample_data: Path, tmp_path: Path) -> Path:
    return named_export(sample_data, tmp_path / "export")


def name_leaks(out: Path, *logs: str) -> list[tuple[str, str]]:
    """(where, name part) for every name part found in a file name or file below ``out`` (see
    tests/output_text.py for how files are read; any letter case) or in ``logs``."""
    texts = {f"log {n}": text for n, text in enumerate(logs)}
    texts.update(written_texts(out))
    return [(where, needle) for where, text in texts.items() for needle in NEEDLES if needle in text.casefold()]


def test_patient_names_reach_no_output_name_file_or_log_of_a_batch(named: Path, tmp_path: Path) -> None:
    readable, pseudonymised = tmp_path / "readable", tmp_path / "pseudonymised"
    first = run_cli(named, readable, "--workers", "2")
    assert first.returncode == 3, first.stderr  # the uneven series failed with the reader's message
    rows = ledger_rows(readable)
    assert sorted((r.kind, r.status) for r in rows) == [
        ("dicom", "done"),
        ("dicom", "done"),
        ("dicom", "failed"),
        ("file", "done"),
    ]
    (failed,) = [r for r in rows if r.status == "failed"]
    assert "[redacted]" in failed.error and "inconsistent slice increment" in failed.error
    assert all("[redacted]" in r.description and "[redacted]" in r.source for r in rows if r.kind == "dicom")
    folders = sorted(p.name for p in (readable / "cases").iterdir())
    assert len(folders) == 4 and "redacted_redacted_t1" in folders  # the NIfTI file beside the series
    assert sum(f.startswith("H") for f in folders) == 3  # both PatientIDs hold the name
    assert any(f.endswith("_T1post_redacted") for f in folders)
    assert first.stderr.count("holds (a part of) the patient's name; their case ids start with a hash") == 1
    listing = subprocess.run(
        [sys.executable, str(SCRIPT), "batch", str(named), "-o", str(readable), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0 and "0 to run, 4 kept from earlier runs" in listing.stdout, listing.stderr

    second = run_cli(named, pseudonymised, "--pseudonymise")
    assert second.returncode == 3, second.stderr
    with open(pseudonymised / "pseudonym_map.csv", encoding="utf-8") as handle:
        mapping = list(csv.DictReader(handle))
    series = [m for m in mapping if m["series_uid"]]  # the UIDs lead back; a PatientID that is the name does not
    assert (
        len(series) == 3 and {m["patient_id"] for m in series} == {"[redacted]"} and all(m["study_uid"] for m in series)
    )
    for result, out in ((first, readable), (second, pseudonymised)):
        assert name_leaks(out, result.stdout, result.stderr) == []
    assert name_leaks(tmp_path / "nothing", listing.stdout, listing.stderr) == []


def ledger_rows(out: Path) -> list:
    from medseg.batch.ledger import Ledger

    with Ledger(out / "ledger.sqlite") as ledger:
        return ledger.rows()


def test_predict_writes_no_patient_name(
    named: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    import logging

    from medseg.cli import main
    from tests.inference_stubs import make_plan, save_random_model

    model = save_random_model(tmp_path / "model", make_plan(spacing=(2.75, 2.75, 6.5), patch=(32, 32, 8)))
    out, patient = tmp_path / "predicted", named / "Mueller-Luedenscheidt"
    with caplog.at_level(logging.INFO):
        code = main(
            [
                "predict",
                "-m",
                str(model),
                "-i",
                str(patient),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--threads",
                "1",
                "--backend",
                "torch",
                "--no-seg",
            ]
        )
    printed = capsys.readouterr()
    assert code == 3  # one of the two series is refused by the reader
    manifest = json.loads((out / "medseg_run.json").read_text())
    (done,), (failed,) = manifest["cases"], manifest["failures"]
    assert done["case_id"].startswith("H") and done["case_id"].endswith("_redacted_FLAIR")
    assert "[redacted]" in failed["error"] and manifest["inputs"] == [str(named / "[redacted]")]
    assert {p.name for p in out.iterdir()} >= {f"{done['case_id']}_stats.json", f"{done['case_id']}_qc.png"}
    assert name_leaks(out, caplog.text, printed.out, printed.err) == []


@pytest.mark.slow  # worker start-up (torch, MONAI, model) dominates
def test_real_batch_outputs_carry_no_patient_name(named: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from medseg.cli import main
    from tests.inference_stubs import make_plan, save_random_model

    model = save_random_model(tmp_path / "model", make_plan(spacing=(2.75, 2.75, 6.5), patch=(32, 32, 8)))
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(named),
            "-m",
            str(model),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--no-seg",
            "--save-probabilities",
        ]
    )
    printed = capsys.readouterr()
    assert code == 3 and "3 done, 1 failed in this run" in printed.out
    assert len(list(out.rglob("*_stats.csv"))) == 3
    assert [(w, n) for w, n in name_leaks(out, printed.out, printed.err) if "probabilities" not in w] == []


def test_every_temporary_file_the_writers_make_is_removed_by_the_batch_cleanup(
    sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every writer of a case (labels, names, SEG, probabilities, statistics, QC), of the reports and of
    the pseudonym map leaves its temporary file behind, as a kill before the rename would; the
    cleanup of the next run finds each of them, and nothing else."""
    import shutil

    import medseg.io.atomic as atomic
    from medseg.batch.engine import remove_part_files
    from medseg.batch.ledger import Ledger
    from medseg.batch.report import write_pseudonym_map, write_reports
    from medseg.inference import OutputOptions, PredictOptions, Predictor, predict_case
    from tests.inference_stubs import make_plan, save_random_model

    class KeepTemporary:  # os for medseg.io.atomic, with a rename that leaves the temporary file
        replace = staticmethod(shutil.copyfile)

        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

    model = save_random_model(tmp_path / "model", make_plan(spacing=(2.75, 2.75, 6.5), patch=(32, 32, 8)))
    series = sorted((sample_data / "dicom" / "PGBM-003").iterdir())[0]
    (case,) = discover_cases(series, SelectionRules(), Namer()).cases
    out = tmp_path / "out"
    monkeypatch.setattr(atomic, "os", KeepTemporary())
    with Predictor.from_folders([model], PredictOptions(device="cpu", backend="torch", threads=1)) as predictor:
        result = predict_case(predictor, case, out / "cases" / case.case_id, OutputOptions(probabilities=True))
    with Ledger(out / "ledger.sqlite") as ledger:
        write_reports(ledger, out, pseudonymised=False)
    write_pseudonym_map(out / "pseudonym_map.csv", [(case.case_id, "pid", "study", "series", "source")])
    monkeypatch.undo()
    assert set(result.outputs) >= {"labels", "label_names", "seg", "probabilities", "stats_json", "stats_csv", "qc"}
    temporary = {p for p in out.rglob("*") if p.name.startswith(".") and ".part" in p.name}
    assets = [p for p in out.rglob("viewer_assets/*") if not p.name.startswith(".")]  # the viewer's shared files
    assert len(temporary) == len(result.outputs) + 3 + len(assets)  # + summary.csv, report.html, pseudonym_map.csv
    everything = set(out.rglob("*"))
    assert remove_part_files(out) == len(temporary)
    assert set(out.rglob("*")) == everything - temporary
