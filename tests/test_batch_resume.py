"""``kill -9`` of a real ``medseg batch`` process, then a resume: nothing lost, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from test_batch_fakes import expected_labels, write_cases

from medseg.batch.engine import sha256_file
from medseg.batch.ledger import Ledger
from medseg.io import read_volume

SCRIPT = Path(__file__).with_name("test_batch_fakes.py")


def batch_command(inp: Path, out: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "-q",
        "batch",
        str(inp),
        "-m",
        "fake",
        "-o",
        str(out),
        "--workers",
        str(workers),
    ]


def done_count(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM cases WHERE status = 'done'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def kill_mid_run(inp: Path, out: Path, after_done: int) -> None:
    env = {**os.environ, "MEDSEG_FAKE_ENGINE": json.dumps({"delay": 0.3})}
    process = subprocess.Popen(batch_command(inp, out, 2), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while done_count(out / "ledger.sqlite") < after_done:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.05)
    time.sleep(0.15)  # inside the next cases' slow writes
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def assert_outputs_valid(out: Path, inp: Path, rows) -> None:
    for row in rows:
        assert row.status == "done", (row.case_id, row.status, row.error)
        for output in row.outputs:
            assert sha256_file(out / output.path) == output.sha256
        labels = nib.load(str(out / next(o.path for o in row.outputs if o.name == "labels")))
        expected = expected_labels(read_volume(inp / row.source))
        assert np.array_equal(np.asarray(labels.dataobj), expected)


def test_sigkill_mid_run_then_resume_finishes_every_case_exactly_once(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    write_cases(inp, 8)
    kill_mid_run(inp, out, after_done=2)
    with Ledger(out / "ledger.sqlite") as ledger:
        before = {r.case_id: r for r in ledger.rows()}
    finished = [r for r in before.values() if r.status == "done"]
    assert len(finished) >= 2 and any(r.status in ("running", "pending") for r in before.values())
    assert_outputs_valid(out, inp, finished)  # what was recorded as done survived the kill intact
    time.sleep(0.5)  # workers die with the driver (PDEATHSIG); nothing writes any more
    parts = [p for p in out.rglob("*") if ".part" in p.name]
    assert all(p.name.startswith(".") for p in parts)  # temp files are hidden, never at output names

    resumed = subprocess.run(batch_command(inp, out, 2), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    with Ledger(out / "ledger.sqlite") as ledger:
        after = ledger.rows()
    assert len(after) == 8
    assert_outputs_valid(out, inp, after)
    for row in after:
        if row.case_id in {r.case_id for r in finished}:
            assert row.attempts == 1  # finished cases were not redone
        files = sorted(p.name for p in (out / "cases" / row.case_id).iterdir())
        assert files == [f"{row.case_id}.nii.gz", f"{row.case_id}_qc.png"]
    assert not [p for p in out.rglob("*") if ".part" in p.name]
