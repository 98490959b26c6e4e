"""The batch driver: decide what to run, hand cases to workers, record everything in the ledger.

Resume rules (per case, see :func:`decide`):

* done: skipped while every recorded output still exists with its SHA-256; redone when an
  output is missing or changed, or with ``force``;
* failed: kept unless ``retry_failed``;
* running (the previous run was interrupted) and pending: run;
* a case with a problem found before running (missing input file): recorded as failed (and
  counted among this run's failures).

The model identity is recorded in the ledger once a worker has loaded the model, so a model that
fails to load never claims the output folder. Every text stored about a case (source,
description, error) has the patient's name redacted.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from medseg.batch.engine import CASES_DIR, Engine, ModelIdentity, case_dir, remove_part_files, sha256_file
from medseg.batch.executor import Event, Executor, Loaded, Lost, StartFailed
from medseg.batch.ledger import LEDGER_NAME, CaseRow, Ledger
from medseg.cases import Discovery, InputCase, Skipped
from medseg.cases.privacy import redact
from medseg.choices import EXECUTORS
from medseg.errors import ConfigError, MedsegError, OutputError
from medseg.io.atomic import ensure_writable_dir

log = logging.getLogger(__name__)

EXIT_OK, EXIT_USER_ERROR, EXIT_SOME_FAILED = 0, 2, 3
LOCK_NAME = ".medseg-batch.lock"
SECRET_KEY = "pseudonym_secret"


@dataclass(frozen=True)
class BatchOptions:
    """How to run: executor (``local`` processes or ``ray`` actors), workers, resume flags, per-case
    timeout, CPU threads per worker, progress bar."""

    outdir: Path
    workers: int = 1
    executor: str = "local"
    force: bool = False
    retry_failed: bool = False
    timeout: float | None = None
    threads: int | None = None
    progress: bool = True
    ray_address: str | None = None
    gpus_per_worker: float = 0.0
    extra: dict = field(default_factory=dict)

    def threads_per_worker(self) -> int:
        """CPU threads of each worker (a predicting process): the given value, else the usable CPUs
        (:func:`medseg.model.runtime.default_threads`, as ``medseg predict``) shared among the workers."""
        from medseg.model.runtime import default_threads

        return self.threads or max(1, default_threads() // max(1, self.workers))


@dataclass(frozen=True)
class BatchSummary:
    """What one invocation did, and the exit code it implies (0 all done, 3 some failed)."""

    run_id: int
    ran: int
    done: int
    failed: int
    skipped_done: int
    kept_failed: int
    not_selected: int
    exit_code: int


# ----------------------------------------------------------------------------- decisions
def verify_outputs(row: CaseRow, outdir: Path) -> str | None:
    """None when every output of a done case exists with its recorded checksum, else what is wrong."""
    if not row.outputs:
        return "no outputs recorded"
    for output in row.outputs:
        path = outdir / output.path
        if not path.is_file():
            return f"output {output.path} is missing"
        if path.stat().st_size != output.bytes or sha256_file(path) != output.sha256:
            return f"output {output.path} has changed since it was written"
    return None


def decide(case: InputCase, row: CaseRow | None, outdir: Path, force: bool, retry_failed: bool) -> tuple[bool, str]:
    """Whether ``case`` runs now, and why (one short phrase)."""
    status = row.status if row else None
    if case.problem:
        return False, f"fails: {case.problem}"
    if status == "done":
        if force:
            return True, "done before; --force"
        problem = verify_outputs(row, outdir)  # type: ignore[arg-type]
        return (True, f"done before but {problem}") if problem else (False, "done")
    if status == "failed":
        return (
            (True, "failed before; --retry-failed") if retry_failed else (False, "failed before (use --retry-failed)")
        )
    if status == "running":
        return True, "interrupted before"
    return True, "new" if row is None or status == "skipped" else "pending"


# ----------------------------------------------------------------------------- output folder
@contextmanager
def locked_outdir(outdir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``outdir`` (released by the OS even on ``kill -9``)."""
    ensure_writable_dir(outdir)
    handle = open(outdir / LOCK_NAME, "a+")  # noqa: SIM115 (held open for the whole run, closed below)
    try:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock on this platform: run unlocked
            pass
        except OSError:
            raise OutputError(
                f"another `medseg batch` is writing to {outdir}; wait for it or choose another output folder"
            ) from None
        yield
    finally:
        handle.close()


def check_model(ledger: Ledger, identity: ModelIdentity, force: bool) -> None:
    """Refuse to mix models in one output folder (unless ``force``, which redoes every case).

    Only checks: :func:`record_model` ties the folder to a model once a worker has loaded it.
    """
    previous = ledger.get_meta("model_version")
    if previous and previous != identity.version and not force:
        raise ConfigError(
            f"{ledger.path.parent} holds results of model {ledger.get_meta('model_id')} ({previous}), not "
            f"{identity.id} ({identity.version}); use another output folder, or --force to redo every case"
        )


def record_model(ledger: Ledger, identity: ModelIdentity) -> None:
    """Tie the output folder to ``identity`` (after a worker loaded it, or a case finished with it)."""
    if ledger.get_meta("model_version") != identity.version or ledger.get_meta("model_id") != identity.id:
        with ledger.transaction():
            ledger.set_meta("model_id", identity.id)
            ledger.set_meta("model_version", identity.version)


def pseudonym_secret(ledger: Ledger) -> bytes:
    """The output folder's pseudonymisation secret, created on first use and kept in the ledger."""
    value = ledger.get_meta(SECRET_KEY)
    if value is None:
        value = secrets.token_hex(32)
        ledger.set_meta(SECRET_KEY, value)
    return bytes.fromhex(value)


def sync_ledger(ledger: Ledger, discovery: Discovery) -> None:
    """Add new cases as pending and record skipped series with their reason (done cases stay done).

    Source paths and descriptions are stored with patient name parts redacted.
    """
    rows = {r.case_id: r for r in ledger.rows()}
    with ledger.transaction():
        _sync_items(ledger, discovery, rows)


def _sync_items(ledger: Ledger, discovery: Discovery, rows: dict[str, CaseRow]) -> None:
    items: tuple[InputCase | Skipped, ...] = (*discovery.cases, *discovery.skipped)
    for item in items:
        kind = getattr(item, "kind", "dicom")
        ledger.upsert_case(
            item.case_id,
            kind,
            redact(item.source, item.redact),
            item.series_uid,
            item.modality,
            redact(item.description, item.redact) if item.description else item.description,
            item.n_slices,
        )
        previous = rows.get(item.case_id)
        if isinstance(item, Skipped):
            if not previous or previous.status != "done":
                ledger.set_status(item.case_id, "skipped", redact(item.reason, item.redact))
        elif previous and previous.status == "skipped":
            ledger.set_status(item.case_id, "pending")


# ----------------------------------------------------------------------------- the run
def run_batch(
    discovery: Discovery, engine: Engine, identity: ModelIdentity, options: BatchOptions, ledger: Ledger
) -> BatchSummary:
    """Run every case of ``discovery`` that :func:`decide` selects; the ledger records each step.

    Needs the output folder locked (:func:`locked_outdir`) and ``ledger`` open in it.
    """
    outdir = Path(options.outdir)
    check_model(ledger, identity, options.force)
    sync_ledger(ledger, discovery)
    stale = remove_part_files(outdir)  # temp files of a killed run (cases, report, summary)
    if stale:
        log.info("removed %d unfinished temporary file(s) left by an interrupted run", stale)
    rows = {r.case_id: r for r in ledger.rows()}
    queue: deque[InputCase] = deque()
    skipped_done = kept_failed = unrunnable = 0
    for case in discovery.cases:
        run, why = decide(case, rows.get(case.case_id), outdir, options.force, options.retry_failed)
        if run:
            log.debug("%s: will run (%s)", case.case_id, why)
            queue.append(case)
        elif case.problem:
            ledger.mark_failed(case.case_id, redact(case.problem, case.redact))
            log.warning("%s failed: %s", case.case_id, redact(case.problem, case.redact))
            unrunnable += 1
        elif why == "done":
            skipped_done += 1
        else:
            kept_failed += 1
    run_id = ledger.begin_run(
        options.executor,
        options.workers,
        {"force": options.force, "retry_failed": options.retry_failed, **options.extra},
    )
    log.info(
        "%d case(s) to run, %d already done, %d failed before, %d series not selected",
        len(queue),
        skipped_done,
        kept_failed,
        len(discovery.skipped),
    )
    done, failed = 0, unrunnable
    if queue:
        executor = make_executor(engine, options)
        ran_done, ran_failed = drive(executor, queue, ledger, run_id, identity, options.progress)
        done, failed = ran_done, failed + ran_failed
    ledger.end_run(run_id, done, failed)
    statuses = {r.case_id: r.status for r in ledger.rows()}
    any_failed = any(statuses.get(c.case_id) == "failed" for c in discovery.cases)
    return BatchSummary(
        run_id,
        done + failed,
        done,
        failed,
        skipped_done,
        kept_failed,
        len(discovery.skipped),
        EXIT_SOME_FAILED if any_failed else EXIT_OK,
    )


def make_executor(engine: Engine, options: BatchOptions) -> Executor:
    """The executor named in ``options`` (``local`` or ``ray``)."""
    if options.executor == "local":
        from medseg.batch.local import LocalExecutor

        return LocalExecutor(engine, options.outdir, options.workers, options.threads_per_worker(), options.timeout)
    if options.executor == "ray":
        from medseg.batch.ray_executor import RayExecutor

        return RayExecutor(
            engine,
            options.outdir,
            options.workers,
            options.threads_per_worker(),
            options.timeout,
            address=options.ray_address,
            gpus_per_worker=options.gpus_per_worker,
        )
    raise ConfigError(f"unknown executor {options.executor!r}; choose one of {', '.join(EXECUTORS)}")


@dataclass
class _Tally:
    """What :func:`drive` has seen: counts, each queued case's name terms, whether the model is recorded."""

    terms: dict[str, tuple[str, ...]]
    done: int = 0
    failed: int = 0
    model_recorded: bool = False


def drive(
    executor: Executor, queue: deque[InputCase], ledger: Ledger, run_id: int, identity: ModelIdentity, progress: bool
) -> tuple[int, int]:
    """Feed ``queue`` to ``executor`` and record every event; returns (done, failed) counts.

    The temporary files of a case whose worker was lost (killed, timed out) are removed at once,
    and those of every case once the workers are stopped (also when the run is aborted).
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    tally = _Tally({case.case_id: case.redact for case in queue})
    bar = tqdm(total=len(queue), unit="case", desc="batch", disable=None if progress else True, dynamic_ncols=True)
    executor.start()
    aborted = True
    try:
        with logging_redirect_tqdm():
            while queue or executor.busy():
                for worker in executor.free_workers():
                    if not queue:
                        break
                    case = queue.popleft()
                    ledger.mark_running(case.case_id, run_id, worker)
                    executor.submit(worker, case)
                for event in executor.poll(0.5):
                    if _record(event, ledger, run_id, identity, tally):
                        bar.update(1)
                        bar.set_postfix(failed=tally.failed, refresh=False)
        aborted = False
    finally:
        executor.stop(abort=aborted)
        bar.close()
        remove_part_files(ledger.path.parent / CASES_DIR)  # no worker writes any more
    return tally.done, tally.failed


def _record(event: Event, ledger: Ledger, run_id: int, identity: ModelIdentity, tally: _Tally) -> bool:
    """Write one event to the ledger (texts with the case's patient name redacted); True when a case finished."""
    if isinstance(event, Loaded):
        ledger.record_model_load(run_id, event.worker, event.host, event.pid, event.seconds)
        _record_model_once(ledger, identity, tally)
        log.debug("worker %s loaded the model in %.1f s", event.worker, event.seconds)
        return False
    if isinstance(event, StartFailed):
        message = f"a batch worker could not load the model: {event.message}"
        raise MedsegError(message) if event.user_error else RuntimeError(message)
    if isinstance(event, Lost):
        reason = redact(event.reason, tally.terms.get(event.case_id, ()))
        ledger.mark_failed(event.case_id, reason)
        tally.failed += 1
        remove_part_files(case_dir(ledger.path.parent, event.case_id))  # what the lost worker was writing
        log.warning("%s failed: %s", event.case_id, reason)
        return True
    outcome = event.outcome  # Finished
    if outcome.ok:
        _record_model_once(ledger, identity, tally)
        ledger.mark_done(
            outcome.case_id,
            outcome.outputs,
            outcome.timings,
            outcome.stats,
            outcome.seconds,
            identity.id,
            identity.version,
        )
        tally.done += 1
        log.info("%s done in %.1f s", outcome.case_id, outcome.seconds)
    else:
        error = redact(outcome.error or "failed", tally.terms.get(outcome.case_id, ()))
        ledger.mark_failed(outcome.case_id, error, outcome.timings, outcome.seconds)
        tally.failed += 1
        log.warning("%s failed: %s", outcome.case_id, error)
    return True


def _record_model_once(ledger: Ledger, identity: ModelIdentity, tally: _Tally) -> None:
    if not tally.model_recorded:
        record_model(ledger, identity)
        tally.model_recorded = True


def dry_run_lines(discovery: Discovery, outdir: Path, force: bool, retry_failed: bool) -> list[tuple[str, str, str]]:
    """``(case_id, action, reason)`` for every case and skipped series, without writing anything."""
    ledger_path = Path(outdir) / LEDGER_NAME
    rows: dict[str, CaseRow] = {}
    if ledger_path.exists():
        with Ledger(ledger_path, readonly=True) as ledger:
            rows = {r.case_id: r for r in ledger.rows()}
    lines = []
    for case in discovery.cases:
        run, why = decide(case, rows.get(case.case_id), Path(outdir), force, retry_failed)
        lines.append((case.case_id, "run" if run else "keep" if not case.problem else "fail", redact(why, case.redact)))
    for item in discovery.skipped:
        lines.append((item.case_id, "skip", redact(item.reason, item.redact)))
    return lines


__all__ = [
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_USER_ERROR",
    "BatchOptions",
    "BatchSummary",
    "check_model",
    "decide",
    "drive",
    "dry_run_lines",
    "locked_outdir",
    "pseudonym_secret",
    "record_model",
    "run_batch",
    "sync_ledger",
    "verify_outputs",
]
