"""The batch driver with real worker processes: loading once per worker, isolation, resume, reports."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_batch_fakes import FakeEngine, expected_labels, write_cases

from medseg.batch.engine import sha256_file
from medseg.batch.ledger import Ledger
from medseg.batch.runner import BatchOptions, locked_outdir
from medseg.batch.session import dry_run, run_session
from medseg.cases import SelectionRules
from medseg.cli import main
from medseg.errors import ConfigError, OutputError
from medseg.io import read_volume


def run(inp: Path, out: Path, engine: FakeEngine, **options):
    opts = BatchOptions(outdir=out, progress=False, threads=1, **options)
    return run_session(inp, lambda: engine, opts, SelectionRules())


def ledger_rows(out: Path) -> dict:
    with Ledger(out / "ledger.sqlite") as ledger:
        return {r.case_id: r for r in ledger.rows()}


def test_two_workers_load_the_model_once_each_and_finish_every_case(tmp_path: Path) -> None:
    inputs = write_cases(tmp_path / "in", 6)
    log = tmp_path / "loads.txt"
    result = run(tmp_path / "in", tmp_path / "out", FakeEngine(load_log=str(log)), workers=2)
    assert result.summary.exit_code == 0 and result.summary.done == 6
    pids = log.read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 2  # once per worker, never per case
    with Ledger(tmp_path / "out" / "ledger.sqlite") as ledger:
        loads = ledger.model_loads(result.summary.run_id)
        rows = ledger.rows()
    assert sorted(str(l["pid"]) for l in loads) == sorted(pids)
    assert {r.worker for r in rows} <= {l["worker"] for l in loads}
    for row, source in zip(rows, inputs):
        assert row.status == "done" and row.attempts == 1 and row.model_id == "fake"
        labels = tmp_path / "out" / next(o.path for o in row.outputs if o.name == "labels")
        assert sha256_file(labels) == next(o.sha256 for o in row.outputs if o.name == "labels")
        image = read_volume(source)
        written = nib.load(str(labels))
        assert np.array_equal(np.asarray(written.dataobj), expected_labels(image))
        assert np.allclose(written.affine, image.affine)


def test_bad_cases_are_recorded_and_the_batch_goes_on(tmp_path: Path) -> None:
    write_cases(tmp_path / "in", 5)
    engine = FakeEngine(fail_on=("case_001",), error_on=("case_002",), crash_on=("case_003",))
    result = run(tmp_path / "in", tmp_path / "out", engine, workers=2)
    rows = ledger_rows(tmp_path / "out")
    assert result.summary.exit_code == 3 and result.summary.done == 2 and result.summary.failed == 3
    assert rows["case_001"].error.endswith("cannot be read: the file is truncated")
    assert rows["case_002"].error.startswith("ValueError: something broke inside the model (at test_batch_fakes.py:")
    assert "worker process exited with code 9" in rows["case_003"].error
    assert rows["case_000"].status == rows["case_004"].status == "done"
    assert all(not r.outputs for r in rows.values() if r.status == "failed")
    with open(result.summary_csv) as handle:
        table = {r["case"]: r for r in csv.DictReader(handle)}
    assert table["case_001"]["status"] == "failed" and "truncated" in table["case_001"]["error"]
    assert float(table["case_000"]["volume_ml_bright"]) > 0
    page = result.report_html.read_text()
    assert "the file is truncated" in page and 'src="cases/case_000/case_000_qc.png"' in page


def test_a_hanging_case_times_out_and_its_worker_is_replaced(tmp_path: Path) -> None:
    write_cases(tmp_path / "in", 3)
    log = tmp_path / "loads.txt"
    result = run(tmp_path / "in", tmp_path / "out", FakeEngine(hang_on=("case_000",), load_log=str(log)), timeout=1.5)
    rows = ledger_rows(tmp_path / "out")
    assert "timed out after 1.5 s" in rows["case_000"].error
    assert rows["case_001"].status == rows["case_002"].status == "done" and result.summary.exit_code == 3
    assert len(log.read_text().split()) == 2  # the replacement worker loaded the model once


def test_rerun_resumes_retries_verifies_and_forces(tmp_path: Path) -> None:
    write_cases(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert run(tmp_path / "in", out, FakeEngine(fail_on=("case_002",))).summary.exit_code == 3
    again = run(tmp_path / "in", out, FakeEngine()).summary
    assert (again.ran, again.skipped_done, again.kept_failed, again.exit_code) == (0, 2, 1, 3)
    retried = run(tmp_path / "in", out, FakeEngine(), retry_failed=True).summary
    assert (retried.ran, retried.exit_code) == (1, 0)
    # an output changed on disk is redone; intact ones are kept
    changed = out / "cases" / "case_000" / "case_000.nii.gz"
    changed.write_bytes(changed.read_bytes() + b"x")
    (out / "cases" / "case_001" / ".case_001.nii.gz.abc123.part.nii.gz").write_bytes(b"half")
    (out / ".report.html.xyz.part.html").write_bytes(b"<html")
    redo = run(tmp_path / "in", out, FakeEngine()).summary
    assert (redo.ran, redo.skipped_done) == (1, 2)
    rows = ledger_rows(out)
    assert rows["case_000"].attempts == 2 and sha256_file(changed) == rows["case_000"].outputs[0].sha256
    assert not list(out.rglob("*.part*"))
    assert run(tmp_path / "in", out, FakeEngine(), force=True).summary.ran == 3


def test_another_model_needs_another_folder_or_force(tmp_path: Path) -> None:
    write_cases(tmp_path / "in", 1)
    run(tmp_path / "in", tmp_path / "out", FakeEngine())
    with pytest.raises(ConfigError, match="holds results of model fake"):
        run(tmp_path / "in", tmp_path / "out", FakeEngine(version="fake-2"))
    forced = run(tmp_path / "in", tmp_path / "out", FakeEngine(version="fake-2"), force=True).summary
    assert forced.ran == 1 and ledger_rows(tmp_path / "out")["case_000"].model_version == "fake-2"


def test_one_batch_per_output_folder_and_never_inside_the_input(tmp_path: Path) -> None:
    write_cases(tmp_path / "in", 1)
    with locked_outdir(tmp_path / "out"), pytest.raises(OutputError, match="another `medseg batch` is writing"):
        run(tmp_path / "in", tmp_path / "out", FakeEngine())
    with pytest.raises(ConfigError, match="inside the input"):
        run(tmp_path / "in", tmp_path / "in" / "out", FakeEngine())


def test_dry_run_says_what_would_happen_and_writes_nothing(tmp_path: Path) -> None:
    write_cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert {a for _, a, _ in dry_run(tmp_path / "in", out, SelectionRules(), False, False, False)} == {"run"}
    assert not out.exists()
    run(tmp_path / "in", out, FakeEngine(fail_on=("case_001",)))
    lines = {c: (a, r) for c, a, r in dry_run(tmp_path / "in", out, SelectionRules(), False, False, False)}
    assert lines == {"case_000": ("keep", "done"), "case_001": ("keep", "failed before (use --retry-failed)")}


def test_ray_executor_without_ray_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    write_cases(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"needs Ray: pip install 'medseg\[distributed\]'"):
        run(tmp_path / "in", tmp_path / "out", FakeEngine(), executor="ray")
    assert ledger_rows(tmp_path / "out")["case_000"].status == "pending"


def test_cli_exit_codes_and_dry_run_listing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_cases(tmp_path / "in", 2)
    assert main(["batch", str(tmp_path / "nope"), "-m", "x", "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 2
    assert "give the model folder with -m MODEL" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "in"), "-m", "x", "-o", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "in"), "-m", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "case_000  run" in listing and "2 to run, 0 kept" in listing


def test_cases_that_fail_before_running_count_as_failed_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medseg.cli.batch as batch_cli

    write_cases(tmp_path / "in", 1)
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case,image\ngood,in/case_000.nii.gz\nlost,in/missing.nii.gz\n")
    monkeypatch.setattr(batch_cli, "make_engine", lambda args: FakeEngine())
    code = main(["batch", str(manifest), "-m", "fake", "-o", str(tmp_path / "out"), "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 3 and "batch: 1 done, 1 failed in this run;" in printed, printed
    rows = ledger_rows(tmp_path / "out")
    assert rows["lost"].status == "failed" and "input not found" in rows["lost"].error
    with Ledger(tmp_path / "out" / "ledger.sqlite") as ledger:
        (run,) = ledger._db.execute("SELECT done, failed FROM runs").fetchall()
    assert tuple(run) == (1, 1)


def test_a_model_that_fails_to_load_does_not_claim_the_output_folder(tmp_path: Path) -> None:
    from medseg.errors import MedsegError

    write_cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    with pytest.raises(MedsegError, match=r"could not load the model: weights\.safetensors is truncated"):
        run(tmp_path / "in", out, FakeEngine(version="broken", load_error="weights.safetensors is truncated"))
    with Ledger(out / "ledger.sqlite") as ledger:
        assert ledger.get_meta("model_version") is None
    working = run(tmp_path / "in", out, FakeEngine()).summary
    assert (working.done, working.exit_code) == (2, 0)
    with Ledger(out / "ledger.sqlite") as ledger:
        assert (ledger.get_meta("model_id"), ledger.get_meta("model_version")) == ("fake", "fake-1")
    with pytest.raises(ConfigError, match="holds results of model fake"):  # now it is tied to the working one
        run(tmp_path / "in", out, FakeEngine(version="fake-2"))


def test_timed_out_and_crashed_writers_leave_no_part_files(tmp_path: Path) -> None:
    write_cases(tmp_path / "in", 3)
    out = tmp_path / "out"
    engine = FakeEngine(hang_writing_on=("case_000",), crash_writing_on=("case_001",))
    result = run(tmp_path / "in", out, engine, timeout=2.0)
    rows = ledger_rows(out)
    assert "timed out after 2 s" in rows["case_000"].error and "exited with code 9" in rows["case_001"].error
    assert rows["case_002"].status == "done" and result.summary.exit_code == 3
    assert (out / "cases" / "case_000").is_dir() and (out / "cases" / "case_001").is_dir()
    assert not [p.name for p in out.rglob("*") if ".part" in p.name]
