"""Long-running archive work against a real Orthanc, through the real command in its own process:
Orthanc stopped in the middle of a batch, ``medseg watch`` picking up an upload and surviving
``kill -9``, ``medseg listen`` receiving a series. Nothing lost, nothing done or pushed twice.
Skips with the reason when Orthanc is not installed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dicom_factory import write_crop_export, write_mr_series
from tests.orthanc import Orthanc, free_port

MEDSEG = (sys.executable, "-m", "medseg")


@pytest.fixture
def start(tmp_path: Path):
    """``start(name, *args)``: ``medseg ARGS`` in its own process, output to ``tmp_path/name.log``.
    Processes still running when the test ends (a failed assertion) are killed."""
    started: list[subprocess.Popen] = []

    def launch(name: str, *args: object) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(tmp_path / f"{name}.log", "ab") as log:
            process = subprocess.Popen([*MEDSEG, *map(str, args)], stdout=log, stderr=subprocess.STDOUT, env=env)
        started.append(process)
        return process

    yield launch
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def query(out: Path, sql: str) -> list[tuple]:
    """Rows of the ledger, or [] while it does not exist yet or is busy."""
    if not (out / "ledger.sqlite").exists():
        return []
    try:
        with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def wait_until(check: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"medseg exited ({process.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def done(out: Path) -> int:
    return len(query(out, "SELECT 1 FROM cases WHERE status = 'done'"))


def segs_per_source(orthanc: Orthanc, folder: Path) -> dict[str, int]:
    """How many SEGs in Orthanc reference each source series."""
    import pydicom

    counts: dict[str, int] = {}
    for _, path in orthanc.seg_files(folder):
        uid = str(pydicom.dcmread(path).ReferencedSeriesSequence[0].SeriesInstanceUID)
        counts[uid] = counts.get(uid, 0) + 1
    return counts


def finish(process: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_orthanc_stopped_mid_run_is_waited_for_and_nothing_runs_twice(orthanc, sample_data, tmp_path, start):
    rows = [
        (f"hippocampus_{n}", "Doe^Jane", "P1", "a", i + 1, f"crop {n}", None)
        for i, n in enumerate(("020", "107", "217", "020", "107"))
    ]
    folders = write_crop_export(tmp_path / "export", sample_data, tuple(rows))
    orthanc.upload(sorted((tmp_path / "export").rglob("*.dcm")))
    out, url = tmp_path / "out", orthanc.dicomweb_url
    run = start(
        "batch", "batch", url, "-m", "hippocampus", "-o", out, "--push-to", url, "--threads", "1", "--max-wait", "120"
    )
    wait_until(lambda: done(out) >= 1, 120, "the first case", run)
    orthanc.stop()
    time.sleep(6)
    assert run.poll() is None  # still there, waiting
    orthanc.start()
    assert finish(run, 180) == 0
    log = (tmp_path / "batch.log").read_text()
    assert "archive unreachable" in log and "retrying in" in log
    assert query(out, "SELECT status, COUNT(*), MAX(attempts) FROM cases GROUP BY status") == [("done", 5, 1)]
    assert query(out, "SELECT status, COUNT(*) FROM pushes GROUP BY status") == [("sent", 5)]
    assert segs_per_source(orthanc, tmp_path / "segs") == {uid: 1 for uid in folders}


def test_watch_picks_up_new_series_and_survives_kill_9(orthanc, sample_data, tmp_path, start):
    first = tmp_path / "first"
    write_mr_series(
        sample_data / "hippocampus/imagesTs/hippocampus_020.nii.gz",
        first,
        patient_name="Doe^Jane",
        patient_id="P1",
        series_number=1,
    )
    orthanc.upload(sorted(first.iterdir()))
    out, url = tmp_path / "out", orthanc.dicomweb_url
    args = (
        "watch",
        url,
        "-m",
        "hippocampus",
        "-o",
        out,
        "--push-to",
        url,
        "--interval",
        "1",
        "--settle",
        "1",
        "--threads",
        "1",
    )
    watcher = start("watch1", *args)
    wait_until(
        lambda: len(query(out, "SELECT 1 FROM pushes WHERE status = 'sent'")) == 1, 120, "the first SEG", watcher
    )

    later = write_crop_export(
        tmp_path / "later",
        sample_data,
        (
            ("hippocampus_107", "Roe^Richard", "P2", "b", 1, "crop 107", None),
            ("hippocampus_217", "Roe^Richard", "P2", "b", 2, "crop 217", None),
        ),
    )
    orthanc.upload(sorted((tmp_path / "later").rglob("*.dcm")))  # while the watch runs
    wait_until(lambda: done(out) >= 2, 120, "a series uploaded while watching", watcher)
    before = dict(query(out, "SELECT case_id, attempts FROM cases WHERE status = 'done'"))
    watcher.send_signal(signal.SIGKILL)
    watcher.wait()

    restarted = start("watch2", *args)
    wait_until(
        lambda: len(query(out, "SELECT 1 FROM pushes WHERE status IN ('sent', 'present')")) == 3,
        120,
        "every SEG after the restart",
        restarted,
    )
    restarted.send_signal(signal.SIGINT)
    assert finish(restarted) == 130
    after = dict(query(out, "SELECT case_id, attempts FROM cases WHERE status = 'done'"))
    assert len(after) == 3 and all(after[case] == attempts for case, attempts in before.items())  # none redone
    sources = {**{uid: None for uid in later}, **{str(s): None for s in _series_uids(first)}}
    assert segs_per_source(orthanc, tmp_path / "segs") == {uid: 1 for uid in sources}


def test_listen_receives_a_series_and_pushes_its_seg(orthanc, sample_data, tmp_path, start):
    from medseg.pacs import load_settings, open_archive

    series = tmp_path / "series"
    write_mr_series(
        sample_data / "hippocampus/imagesTs/hippocampus_107.nii.gz", series, patient_name="Doe^Jane", patient_id="P1"
    )
    orthanc.upload(sorted(series.iterdir()))  # the source study is in the archive the SEG goes to
    out, port = tmp_path / "out", free_port()
    listener = start(
        "listen",
        "listen",
        "--port",
        port,
        "-m",
        "hippocampus",
        "-o",
        out,
        "--push-to",
        orthanc.dicomweb_url,
        "--settle",
        "1",
        "--interval",
        "1",
        "--threads",
        "1",
    )
    sender = open_archive(load_settings(f"dimse://MEDSEG@127.0.0.1:{port}", env={}, max_wait=60))
    sender.store(sorted(series.iterdir()))  # waits (back-off) until the listener is up
    wait_until(
        lambda: len(query(out, "SELECT 1 FROM pushes WHERE status = 'sent'")) == 1, 120, "the pushed SEG", listener
    )
    listener.send_signal(signal.SIGINT)
    assert finish(listener) == 130
    assert query(out, "SELECT status, attempts FROM cases") == [("done", 1)]
    assert not list((out / ".incoming").rglob("*.dcm"))  # received files go once their case is done
    assert list(segs_per_source(orthanc, tmp_path / "segs").values()) == [1]
    assert "jane" not in (tmp_path / "listen.log").read_text().lower()


def _series_uids(folder: Path) -> set[str]:
    import pydicom

    return {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in folder.iterdir()}


def test_a_watch_cycle_skips_settled_series_and_keeps_case_ids_apart(tmp_path):
    """What the ledger says decides: done/skipped (and failed, unless retried) series are not taken
    again, a split series only once all parts are settled, and a new series whose readable id an
    earlier cycle gave to another series gets a stable suffix."""
    from medseg.batch.ledger import Ledger
    from medseg.batch.watch import _distinct_ids, _handled_sources
    from medseg.cases import Discovery, InputCase, Namer

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for case_id, source, uid, status in (
            ("a1", "A", "1.1", "done"),
            ("a2", "A", "1.2", "running"),
            ("b", "B", "2", "failed"),
            ("c", "C", "3", "skipped"),
            ("P1_x_S1_t1", "D", "4", "done"),
        ):
            ledger.upsert_case(case_id, "dicom", source, uid)
            ledger.set_status(case_id, status)
        assert _handled_sources(ledger, retry_failed=False) == {"B", "C", "D"}
        assert _handled_sources(ledger, retry_failed=True) == {"C", "D"}
        namer = Namer()
        same = InputCase("P1_x_S1_t1", "dicom", "D", series_uid="4")
        other = InputCase("P1_x_S1_t1", "dicom", "E", series_uid="5")
        fixed = _distinct_ids(Discovery((same, other), ()), ledger, namer).cases
    assert fixed[0].case_id == "P1_x_S1_t1"
    assert fixed[1].case_id == namer.disambiguate("P1_x_S1_t1", "5") != "P1_x_S1_t1"
