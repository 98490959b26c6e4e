"""The batch ledger: one SQLite file in the output folder that says what happened to every case.

Written by the batch driver only (never by workers), in WAL mode with ``synchronous=FULL``, one
transaction per state change, so a ``kill -9`` or power loss at any moment loses no finished case.

Schema (``SCHEMA_VERSION`` 1):

* ``meta(key, value)``: schema version, model id/version the folder was made with, the
  pseudonymisation secret (hex) when ``--pseudonymise`` was used.
* ``cases``: one row per case id: kind, source, series UID, status (pending / running / done /
  failed / skipped), error or skip reason, attempts, run id, worker, timestamps, timings and
  stats (JSON), model id and version.
* ``outputs(case_id, name, path, sha256, bytes)``: files of done cases, paths relative to OUTDIR.
* ``runs``: one row per invocation (executor, in the column ``backend``; workers, options, start/end, counts).
* ``model_loads``: one row each time a worker loaded the model (proves "once per worker").
* ``pushes``: each DICOM result sent back to an archive (``--push-to``): case, output name and
  checksum, destination, the UIDs it has there, ``sent`` / ``present`` (the archive had it
  already) / ``failed`` with the error, seconds. Added to older ledgers when they are opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import OutputError

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed", "skipped")
LEDGER_NAME = "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    series_uid TEXT,
    modality TEXT,
    description TEXT,
    n_slices INTEGER,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'skipped')),
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER,
    worker TEXT,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    timings TEXT,
    stats TEXT,
    model_id TEXT,
    model_version TEXT
);
CREATE TABLE IF NOT EXISTS outputs (
    case_id TEXT NOT NULL REFERENCES cases(case_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (case_id, name)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    backend TEXT NOT NULL,
    workers INTEGER NOT NULL,
    options TEXT NOT NULL,
    done INTEGER,
    failed INTEGER,
    interrupted INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS pushes (
    case_id TEXT NOT NULL,
    name TEXT NOT NULL,
    destination TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    study_uid TEXT,
    series_uid TEXT,
    sop_instance_uid TEXT,
    status TEXT NOT NULL CHECK (status IN ('sent', 'present', 'failed')),
    error TEXT,
    seconds REAL,
    pushed_at REAL NOT NULL,
    PRIMARY KEY (case_id, name, destination)
);
CREATE TABLE IF NOT EXISTS model_loads (
    run_id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    seconds REAL NOT NULL,
    loaded_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutputFile:
    """One output of a done case: ``path`` is relative to the output folder."""

    name: str
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class PushRow:
    """A row of the ``pushes`` table: one DICOM result of a case and what happened when it was sent."""

    case_id: str
    name: str
    destination: str
    sha256: str
    study_uid: str | None
    series_uid: str | None
    sop_instance_uid: str | None
    status: str
    error: str | None
    seconds: float | None


@dataclass(frozen=True)
class CaseRow:
    """A row of the ``cases`` table with its outputs."""

    case_id: str
    kind: str
    source: str
    series_uid: str | None
    modality: str | None
    description: str | None
    n_slices: int | None
    status: str
    error: str | None
    attempts: int
    run_id: int | None
    worker: str | None
    seconds: float | None
    timings: dict
    stats: dict
    model_id: str | None
    model_version: str | None
    outputs: tuple[OutputFile, ...]


class Ledger:
    """Open (creating if needed) the ledger of an output folder. Use as a context manager."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            target = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self._db = sqlite3.connect(target, timeout=30.0, isolation_level=None, uri=readonly)
        except sqlite3.Error as exc:
            raise OutputError(f"cannot open the batch ledger {self.path}: {exc}; check the output folder") from None
        self._db.row_factory = sqlite3.Row
        self.wal = False
        if readonly:
            return
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        self.wal = str(mode).lower() == "wal"  # network file systems may refuse WAL
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._check_version()

    # ---------------------------------------------------------------- plumbing
    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def _tx(self) -> sqlite3.Connection:
        return _Transaction(self._db)  # type: ignore[return-value]

    def transaction(self) -> sqlite3.Connection:
        """One transaction around many changes (``with ledger.transaction(): ...``): one commit, one fsync."""
        return self._tx()

    def _check_version(self) -> None:
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise OutputError(
                f"{self.path} has ledger schema {version}, this medseg writes {SCHEMA_VERSION}; use a new output folder"
            )

    def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table, or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the ``meta`` table."""
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---------------------------------------------------------------- runs
    def begin_run(self, executor: str, workers: int, options: Mapping) -> int:
        """Record the start of an invocation; returns its run id."""
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO runs(started_at, backend, workers, options) VALUES (?, ?, ?, ?)",
                (time.time(), executor, workers, json.dumps(dict(options), default=str)),
            )
        assert cur.lastrowid is not None  # an INSERT always sets it
        return int(cur.lastrowid)

    def end_run(self, run_id: int, done: int, failed: int) -> None:
        """Record the normal end of an invocation (an interrupted run keeps ``interrupted = 1``)."""
        with self._tx():
            self._db.execute(
                "UPDATE runs SET finished_at = ?, done = ?, failed = ?, interrupted = 0 WHERE run_id = ?",
                (time.time(), done, failed, run_id),
            )

    def record_model_load(self, run_id: int, worker: str, host: str, pid: int, seconds: float) -> None:
        """Record that ``worker`` loaded the model (once per worker process or actor)."""
        with self._tx():
            self._db.execute(
                "INSERT INTO model_loads(run_id, worker, host, pid, seconds, loaded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, worker, host, pid, seconds, time.time()),
            )

    def model_loads(self, run_id: int | None = None) -> list[dict]:
        """Model loads, of one run or all runs."""
        sql = "SELECT * FROM model_loads" + (" WHERE run_id = ?" if run_id is not None else "")
        return [dict(r) for r in self._db.execute(sql, (run_id,) if run_id is not None else ())]

    # ---------------------------------------------------------------- cases
    def upsert_case(
        self,
        case_id: str,
        kind: str,
        source: str,
        series_uid: str | None = None,
        modality: str | None = None,
        description: str | None = None,
        n_slices: int | None = None,
    ) -> None:
        """Insert a case as pending, or refresh its descriptive fields (status untouched)."""
        with self._tx():
            self._db.execute(
                """INSERT INTO cases(case_id, kind, source, series_uid, modality, description, n_slices, status)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')
                   ON CONFLICT(case_id) DO UPDATE SET kind = excluded.kind, source = excluded.source,
                   series_uid = excluded.series_uid, modality = excluded.modality,
                   description = excluded.description, n_slices = excluded.n_slices""",
                (case_id, kind, source, series_uid, modality, description, n_slices),
            )

    def set_status(self, case_id: str, status: str, error: str | None = None) -> None:
        """Set a case's status (and error/skip reason) without touching its results."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._tx():
            self._db.execute("UPDATE cases SET status = ?, error = ? WHERE case_id = ?", (status, error, case_id))

    def mark_running(self, case_id: str, run_id: int, worker: str) -> None:
        """A case was handed to ``worker``: running, attempts + 1, previous outputs forgotten."""
        with self._tx():
            self._db.execute("DELETE FROM outputs WHERE case_id = ?", (case_id,))
            self._db.execute(
                """UPDATE cases SET status = 'running', error = NULL, attempts = attempts + 1, run_id = ?,
                   worker = ?, started_at = ?, finished_at = NULL, seconds = NULL WHERE case_id = ?""",
                (run_id, worker, time.time(), case_id),
            )

    def mark_done(
        self,
        case_id: str,
        outputs: Iterable[OutputFile],
        timings: Mapping,
        stats: Mapping,
        seconds: float,
        model_id: str,
        model_version: str,
    ) -> None:
        """A case finished: its outputs (with checksums), timings and stats, in one transaction."""
        with self._tx():
            self._db.execute("DELETE FROM outputs WHERE case_id = ?", (case_id,))
            self._db.executemany(
                "INSERT INTO outputs(case_id, name, path, sha256, bytes) VALUES (?, ?, ?, ?, ?)",
                [(case_id, o.name, o.path, o.sha256, o.bytes) for o in outputs],
            )
            self._db.execute(
                """UPDATE cases SET status = 'done', error = NULL, finished_at = ?, seconds = ?, timings = ?,
                   stats = ?, model_id = ?, model_version = ? WHERE case_id = ?""",
                (time.time(), seconds, _dumps(timings), _dumps(stats), model_id, model_version, case_id),
            )

    def mark_failed(
        self, case_id: str, error: str, timings: Mapping | None = None, seconds: float | None = None
    ) -> None:
        """A case failed with a one-line ``error``; the batch goes on."""
        with self._tx():
            self._db.execute("DELETE FROM outputs WHERE case_id = ?", (case_id,))
            self._db.execute(
                "UPDATE cases SET status = 'failed', error = ?, finished_at = ?, seconds = ?, timings = ? WHERE case_id = ?",
                (error, time.time(), seconds, _dumps(timings or {}), case_id),
            )

    def get(self, case_id: str) -> CaseRow | None:
        """One case with its outputs, or None."""
        rows = self.rows(where="case_id = ?", params=(case_id,))
        return rows[0] if rows else None

    def rows(self, where: str = "1", params: tuple = ()) -> list[CaseRow]:
        """Cases (ordered by id) with their outputs."""
        outputs: dict[str, list[OutputFile]] = {}
        for r in self._db.execute("SELECT * FROM outputs ORDER BY case_id, name"):
            outputs.setdefault(r["case_id"], []).append(OutputFile(r["name"], r["path"], r["sha256"], r["bytes"]))
        result = []
        for r in self._db.execute(f"SELECT * FROM cases WHERE {where} ORDER BY case_id", params):
            result.append(
                CaseRow(
                    case_id=r["case_id"],
                    kind=r["kind"],
                    source=r["source"],
                    series_uid=r["series_uid"],
                    modality=r["modality"],
                    description=r["description"],
                    n_slices=r["n_slices"],
                    status=r["status"],
                    error=r["error"],
                    attempts=r["attempts"],
                    run_id=r["run_id"],
                    worker=r["worker"],
                    seconds=r["seconds"],
                    timings=_loads(r["timings"]),
                    stats=_loads(r["stats"]),
                    model_id=r["model_id"],
                    model_version=r["model_version"],
                    outputs=tuple(outputs.get(r["case_id"], ())),
                )
            )
        return result

    # ---------------------------------------------------------------- pushes
    def record_push(self, row: PushRow) -> None:
        """Record (or replace) what happened to one result sent to one destination."""
        with self._tx():
            self._db.execute(
                """INSERT OR REPLACE INTO pushes(case_id, name, destination, sha256, study_uid, series_uid,
                   sop_instance_uid, status, error, seconds, pushed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    row.case_id,
                    row.name,
                    row.destination,
                    row.sha256,
                    row.study_uid,
                    row.series_uid,
                    row.sop_instance_uid,
                    row.status,
                    row.error,
                    row.seconds,
                    time.time(),
                ),
            )

    def pushes(self, destination: str | None = None) -> list[PushRow]:
        """Recorded pushes (to one destination, or all), ordered by case and output name."""
        sql = "SELECT * FROM pushes" + (" WHERE destination = ?" if destination else "") + " ORDER BY case_id, name"
        rows = self._db.execute(sql, (destination,) if destination else ())
        return [
            PushRow(
                r["case_id"],
                r["name"],
                r["destination"],
                r["sha256"],
                r["study_uid"],
                r["series_uid"],
                r["sop_instance_uid"],
                r["status"],
                r["error"],
                r["seconds"],
            )
            for r in rows
        ]

    def counts(self) -> dict[str, int]:
        """Number of cases per status."""
        counts = {s: 0 for s in STATUSES}
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM cases GROUP BY status"):
            counts[status] = n
        return counts


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); inside another one, part of it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._outer = False

    def __enter__(self) -> sqlite3.Connection:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._outer = True
        return self._db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._outer:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _dumps(value: Mapping) -> str:
    return json.dumps(dict(value), default=_json_default, sort_keys=True)


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _loads(text: str | None) -> dict:
    return json.loads(text) if text else {}
