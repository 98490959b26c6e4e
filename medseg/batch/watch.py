"""``medseg watch`` and ``medseg listen``: a batch that never ends.

Both keep the output folder locked and its ledger open, and repeat one cycle: find series that are
complete and not yet handled, run them exactly as ``medseg batch`` runs cases (same rules, names,
ledger, workers, report), push the results (``--push-to``), sleep. What is done is in the ledger,
so a ``kill -9`` loses nothing and a restart does nothing twice:

* **watch** polls an archive (QIDO-RS or C-FIND). A series is complete once its instance count has
  not changed for the settle time (:class:`medseg.pacs.settle.SettleTracker`). An archive that
  stays down longer than the back-off budget is polled again on the next cycle; the watch goes on.
* **listen** is a C-STORE SCP (:class:`medseg.pacs.scp.StorageServer`) filing what it receives
  under ``OUTDIR/.incoming``; a series folder is complete once no instance arrived for the settle
  time. An instance is acknowledged only once it is on disk, so a restart finds every one of them.
  A folder is removed when all its cases are done (kept for a retry when one failed).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.batch.engine import Engine, ModelIdentity, remove_part_files
from medseg.batch.ledger import LEDGER_NAME, Ledger
from medseg.batch.report import write_pseudonym_map, write_reports
from medseg.batch.runner import BatchOptions, locked_outdir, run_batch
from medseg.batch.session import (
    MAPPING_NAME,
    ArchiveOptions,
    clear_cache,
    mapping_items,
    naming,
    push_to,
    session_engine,
)
from medseg.cases import Discovery, Namer, SelectionRules
from medseg.cases.privacy import redacting_logs
from medseg.errors import ArchiveDownError, MedsegError

if TYPE_CHECKING:
    from medseg.cases import InputCase, Skipped
    from medseg.pacs import Archive, ArchiveSource
    from medseg.pacs.settle import SettleTracker

log = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"
#: ledger statuses after which a series is not looked at again (failed ones too, unless --retry-failed)
_SETTLED = ("done", "skipped")


@dataclass(frozen=True)
class WatchOptions:
    """``interval``: seconds between cycles; ``settle``: seconds a series must stop growing;
    ``cycles``: stop after this many (None: until interrupted)."""

    interval: float = 30.0
    settle: float = 60.0
    cycles: int | None = None


@dataclass(frozen=True)
class Session:
    """What every cycle needs: the (wrapped) engine and its identity, options, rules, naming."""

    engine: Engine
    identity: ModelIdentity
    options: BatchOptions
    rules: SelectionRules
    archive: ArchiveOptions
    series: str | None = None
    pseudonymise: bool = False
    mapping: Path | None = None


# ----------------------------------------------------------------------------- watch
def watch(
    source: ArchiveSource,
    make_engine: Callable[[], Engine],
    options: BatchOptions,
    rules: SelectionRules,
    every: WatchOptions,
    archive: ArchiveOptions | None = None,
    series: str | None = None,
    pseudonymise: bool = False,
    mapping: Path | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Poll ``source`` and process every complete new series once; returns the number of cycles run.

    Runs until ``stop()`` is true, ``every.cycles`` cycles are done, or the process is interrupted.
    """
    from medseg.pacs.settle import SettleTracker

    archive = archive or ArchiveOptions()
    session = _session(make_engine, source, options, rules, archive, series, pseudonymise, mapping)
    tracker = SettleTracker(every.settle)
    with _open(session) as (ledger, namer):
        connection = source.open()
        try:
            return _loop(every, stop, lambda: _watch_cycle(session, ledger, namer, connection, source, tracker))
        finally:
            connection.close()


def _watch_cycle(
    session: Session, ledger: Ledger, namer: Namer, archive: Archive, source: ArchiveSource, tracker: SettleTracker
) -> None:
    """One poll: query, keep the complete and unhandled series, run them, push. An archive that stays
    down for the whole back-off budget ends the cycle (the next one tries again); other archive
    errors (refused credentials, unknown AE title) stop the watch."""
    from medseg.cases.archive import archive_discovery

    try:
        found = archive.find_series(source.wanted)
        handled = _handled_sources(ledger, session.options.retry_failed)
        ready = [
            s for s in tracker.ready(found) if archive.address.series_location(s.study_uid, s.series_uid) not in handled
        ]
        if ready:
            log.info("%d new complete series in %s", len(ready), source)
            discovery = archive_discovery(
                archive, ready, session.rules, namer, session.series, session.engine.in_channels()
            )
            _run(session, ledger, namer, discovery)
    except ArchiveDownError as exc:
        log.warning("%s; polling again next cycle", exc)
    _push(session, ledger)


def _handled_sources(ledger: Ledger, retry_failed: bool) -> set[str]:
    """Sources (archive series locations) whose every case the ledger has settled: done or skipped,
    and failed unless ``retry_failed`` (a series split into parts is handled when all parts are)."""
    settled = _SETTLED if retry_failed else (*_SETTLED, "failed")
    by_source: dict[str, list[str]] = {}
    for row in ledger.rows():
        by_source.setdefault(row.source, []).append(row.status)
    return {source for source, statuses in by_source.items() if all(s in settled for s in statuses)}


# ----------------------------------------------------------------------------- listen
@dataclass(frozen=True)
class ListenOptions:
    """The storage SCP: our AE title, where to listen, which calling AE titles may send (any when empty)."""

    ae_title: str = "MEDSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed: tuple[str, ...] = ()


def listen(
    server: ListenOptions,
    make_engine: Callable[[], Engine],
    options: BatchOptions,
    rules: SelectionRules,
    every: WatchOptions,
    archive: ArchiveOptions | None = None,
    series: str | None = None,
    pseudonymise: bool = False,
    mapping: Path | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Receive series as a C-STORE SCP and process each complete one once; returns the cycles run."""
    from medseg.pacs.scp import StorageServer

    archive = archive or ArchiveOptions()
    session = _session(make_engine, None, options, rules, archive, series, pseudonymise, mapping)
    spool = Path(options.outdir) / INCOMING_DIR
    with _open(session) as (ledger, namer):
        remove_part_files(spool)  # instances a killed run was still writing were never acknowledged
        scp = StorageServer(spool, server.ae_title, server.host, server.port, server.allowed)
        scp.start()
        try:
            unreadable: dict[Path, float] = {}
            return _loop(every, stop, lambda: _listen_cycle(session, ledger, namer, spool, every.settle, unreadable))
        finally:
            scp.stop()


def _listen_cycle(
    session: Session, ledger: Ledger, namer: Namer, spool: Path, settle: float, unreadable: dict[Path, float]
) -> None:
    """Run every complete series folder of the spool; remove the folders whose cases are all settled.

    A folder that cannot be read as input is reported once and left alone until it changes
    (``unreadable`` maps it to its newest file time).
    """
    from medseg.pacs.settle import newest_change, stable_folders

    for folder in stable_folders(spool, settle):
        changed = newest_change(folder)
        if changed is None or unreadable.get(folder) == changed:
            continue
        try:
            discovery = _folder_discovery(session, namer, folder)
        except MedsegError as exc:
            log.warning("received series %s cannot be run: %s", folder.relative_to(spool).as_posix(), exc)
            unreadable[folder] = changed
            continue
        _run(session, ledger, namer, discovery)
        if not session.archive.keep_cache and _all_done(ledger, discovery):
            shutil.rmtree(folder, ignore_errors=True)
            _remove_empty_parent(folder)
    _push(session, ledger)


def _folder_discovery(session: Session, namer: Namer, folder: Path) -> Discovery:
    """The cases of one received series folder, with sources relative to OUTDIR."""
    from medseg.cases import discover_cases

    discovery = discover_cases(
        folder, session.rules, namer, series=session.series, channels=session.engine.in_channels()
    )
    return _relocated(discovery, folder, Path(session.options.outdir))


def _relocated(discovery: Discovery, folder: Path, outdir: Path) -> Discovery:
    """Sources as ``.incoming/<study>/<series>`` (relative to OUTDIR) instead of ``.``."""
    where = folder.relative_to(outdir).as_posix()
    return Discovery(
        tuple(replace(c, source=where) for c in discovery.cases),
        tuple(replace(s, source=where) for s in discovery.skipped),
    )


def _all_done(ledger: Ledger, discovery: Discovery) -> bool:
    ids = [c.case_id for c in discovery.cases] + [s.case_id for s in discovery.skipped]
    statuses = {row.case_id: row.status for row in ledger.rows()}
    return all(statuses.get(i) in _SETTLED for i in ids)


def _remove_empty_parent(folder: Path) -> None:
    with suppress(OSError):  # other series of the study are still there
        folder.parent.rmdir()


# ----------------------------------------------------------------------------- shared
def _session(
    make_engine: Callable[[], Engine],
    source: ArchiveSource | None,
    options: BatchOptions,
    rules: SelectionRules,
    archive: ArchiveOptions,
    series: str | None,
    pseudonymise: bool,
    mapping: Path | None,
) -> Session:
    outdir = Path(options.outdir)
    engine = session_engine(make_engine(), source if source is not None else outdir, outdir, archive)
    return Session(engine, engine.identity(), options, rules, archive, series, pseudonymise, mapping)


@contextmanager
def _open(session: Session) -> Iterator[tuple[Ledger, Namer]]:
    """Lock OUTDIR, open its ledger, check the naming mode, clear the run cache; yields (ledger, namer)."""
    outdir = Path(session.options.outdir)
    with locked_outdir(outdir), Ledger(outdir / LEDGER_NAME) as ledger:
        namer = naming(ledger, session.pseudonymise)
        if not session.archive.keep_cache:
            clear_cache(outdir)
        yield ledger, namer


def _loop(every: WatchOptions, stop: Callable[[], bool], cycle: Callable[[], None]) -> int:
    """Run ``cycle`` every ``every.interval`` seconds until ``stop()`` or ``every.cycles``; returns the count."""
    count = 0
    while not stop() and (every.cycles is None or count < every.cycles):
        cycle()
        count += 1
        if every.cycles is not None and count >= every.cycles:
            break
        for _tick in _ticks(every.interval):
            if stop():
                break
    return count


def _ticks(seconds: float) -> Iterator[None]:
    """Sleep ``seconds`` in steps of at most 0.5 s, yielding between them (so a stop is seen soon)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        yield


def _run(session: Session, ledger: Ledger, namer: Namer, discovery: Discovery) -> None:
    """Run the cases of one cycle as a batch does, then refresh the reports (and pseudonym map)."""
    discovery = _distinct_ids(discovery, ledger, namer)
    outdir = Path(session.options.outdir)
    with redacting_logs(discovery.redact_terms()):
        run_batch(discovery, session.engine, session.identity, session.options, ledger)
    write_reports(ledger, outdir, session.pseudonymise)
    if session.pseudonymise:
        write_pseudonym_map(session.mapping or outdir / MAPPING_NAME, mapping_items(discovery))


def _distinct_ids(discovery: Discovery, ledger: Ledger, namer: Namer) -> Discovery:
    """Cases of this cycle whose id an earlier cycle gave to another series get a stable suffix
    (a batch sees every series at once and does this in discovery; a watch sees them one cycle at a time)."""
    taken = {row.case_id: row.series_uid for row in ledger.rows()}

    def fix(item: InputCase | Skipped) -> InputCase | Skipped:
        owner = taken.get(item.case_id)
        if owner is not None and item.series_uid and owner != item.series_uid:
            return replace(item, case_id=namer.disambiguate(item.case_id, item.key))
        return item

    return Discovery(tuple(fix(c) for c in discovery.cases), tuple(fix(s) for s in discovery.skipped))  # type: ignore[misc]


def _push(session: Session, ledger: Ledger) -> None:
    if session.archive.push_to is None:
        return
    summary = push_to(ledger, Path(session.options.outdir), session.archive.push_to)
    if summary.sent or summary.present or summary.failed:
        log.info("%s", summary.line())
