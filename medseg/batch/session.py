"""One ``medseg batch`` invocation from start to end: lock, ledger, discovery, run, reports.

:func:`run_session` is what the CLI calls; :func:`dry_run` lists what would happen without
writing anything.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.batch.archive_engine import CACHE_DIR, ArchiveEngine, clear_cache
from medseg.batch.engine import Engine, case_dir
from medseg.batch.ledger import LEDGER_NAME, Ledger
from medseg.batch.report import write_pseudonym_map, write_reports
from medseg.batch.runner import (
    SECRET_KEY,
    BatchOptions,
    BatchSummary,
    dry_run_lines,
    locked_outdir,
    pseudonym_secret,
    run_batch,
)
from medseg.cases import (
    Discovery,
    Namer,
    SelectionRules,
    check_output_outside_input,
    check_planned_outputs,
    discover_cases,
)
from medseg.cases.privacy import redact, redacting_logs
from medseg.errors import ConfigError, InputError
from medseg.io.atomic import remove_temp_files_of

if TYPE_CHECKING:
    from medseg.batch.push import PushSummary
    from medseg.pacs import ArchiveSettings, ArchiveSource

log = logging.getLogger(__name__)

MAPPING_NAME = "pseudonym_map.csv"
NAMING_KEY = "naming"


@dataclass(frozen=True)
class ArchiveOptions:
    """Archive work of a session: ``push_to`` (send DICOM results there, see :mod:`medseg.batch.push`),
    ``keep_cache`` (keep the series retrieved from an archive input in ``OUTDIR/.archive-cache``)."""

    push_to: ArchiveSettings | None = None
    keep_cache: bool = False


@dataclass(frozen=True)
class SessionResult:
    """The summary of the run, where its reports are, and what was pushed (``--push-to``)."""

    summary: BatchSummary
    summary_csv: Path
    report_html: Path
    mapping_csv: Path | None
    pushes: PushSummary | None = None

    @property
    def exit_code(self) -> int:
        """The batch's exit code, or 3 when a result could not be pushed."""
        from medseg.batch.runner import EXIT_SOME_FAILED

        return self.summary.exit_code or (EXIT_SOME_FAILED if self.pushes and self.pushes.failed else 0)


def check_paths(input_path: Path | ArchiveSource, outdir: Path) -> None:
    """Refuse a missing input, and an output folder that is or lies inside the input folder, or holds the
    input file (archives: nothing to check)."""
    if not isinstance(input_path, (str, Path)):
        return
    if not Path(input_path).exists():
        raise InputError(f"{input_path} does not exist; give an export folder, a volume file or a CSV manifest")
    check_output_outside_input(input_path, outdir)


def naming(ledger: Ledger, pseudonymise: bool) -> Namer:
    """The namer for this output folder; refuses to mix readable and pseudonymised names."""
    mode = "pseudonymised" if pseudonymise else "readable"
    previous = ledger.get_meta(NAMING_KEY)
    if previous and previous != mode:
        flag = "pass --pseudonymise again" if previous == "pseudonymised" else "run without --pseudonymise"
        raise ConfigError(
            f"{ledger.path.parent} was made with {previous} case names; {flag}, or use another output folder"
        )
    ledger.set_meta(NAMING_KEY, mode)
    return Namer(pseudonym_secret(ledger)) if pseudonymise else Namer()


def run_session(
    input_path: Path | ArchiveSource,
    make_engine: Callable[[], Engine],
    options: BatchOptions,
    rules: SelectionRules,
    pseudonymise: bool = False,
    mapping: Path | None = None,
    series: str | None = None,
    archive: ArchiveOptions | None = None,
) -> SessionResult:
    """Discover cases in ``input_path`` (a path, or a DICOM archive), run them into ``options.outdir``,
    push the DICOM results when ``archive.push_to`` is set, write the reports.

    ``make_engine`` is called once, in this process, before discovery (workers receive a copy);
    its model identity is checked and its channel count groups channel files into cases.
    ``series`` is the ``--series`` choice (see :func:`medseg.cases.series_reasons`).
    """
    outdir = Path(options.outdir)
    archive = archive or ArchiveOptions()
    check_paths(input_path, outdir)
    engine = session_engine(make_engine(), input_path, outdir, archive)
    identity = engine.identity()
    with locked_outdir(outdir), Ledger(outdir / LEDGER_NAME) as ledger:
        if not ledger.wal:
            log.warning("the ledger could not use WAL mode here (network file system?); it stays safe but is slower")
        namer = naming(ledger, pseudonymise)
        if not archive.keep_cache:
            clear_cache(outdir)
        discovery = discover_cases(_source(input_path), rules, namer, series=series, channels=engine.in_channels())
        check_case_folders(discovery, outdir)
        with redacting_logs(discovery.redact_terms()):
            summary = run_batch(discovery, engine, identity, options, ledger)
            pushes = push_to(ledger, outdir, archive.push_to) if archive.push_to else None
        csv_path, html_path = write_reports(ledger, outdir, pseudonymise)
        mapping_path = None
        if pseudonymise:
            remove_temp_files_of(mapping or outdir / MAPPING_NAME)  # left by a killed run (outside OUTDIR too)
            mapping_path = write_pseudonym_map(mapping or outdir / MAPPING_NAME, mapping_items(discovery))
    return SessionResult(summary, csv_path, html_path, mapping_path, pushes)


def _source(input_path: Path | ArchiveSource) -> Path | ArchiveSource:
    """What discovery reads: a path as a Path, an archive as it is."""
    return Path(input_path) if isinstance(input_path, (str, Path)) else input_path


def session_engine(engine: Engine, input_path: Path | ArchiveSource, outdir: Path, archive: ArchiveOptions) -> Engine:
    """``engine``, wrapped in an :class:`ArchiveEngine` when cases come from an archive (retrieval into
    the run cache) or results go to one (stable SEG UIDs); else unchanged."""
    remote = None if isinstance(input_path, (str, Path)) else input_path.settings
    if remote is None and archive.push_to is None:
        return engine
    return ArchiveEngine(engine, remote, Path(outdir) / CACHE_DIR, archive.keep_cache)


def push_to(ledger: Ledger, outdir: Path, settings: ArchiveSettings) -> PushSummary:
    """Push the DICOM results of every done case to the archive of ``settings`` (:func:`push_results`)."""
    from medseg.batch.push import push_results
    from medseg.pacs import open_archive

    target = open_archive(settings)
    try:
        summary = push_results(ledger, outdir, target)
    finally:
        target.close()
    log.debug("%s", summary.line())
    return summary


def mapping_items(discovery: Discovery) -> list[tuple[str, str, str, str, str]]:
    """(case, PatientID, study UID, series UID, source) per case; a PatientID or source that holds the
    patient's name is redacted (the UIDs still lead back to the study)."""
    return [
        (
            c.case_id,
            redact(c.patient_id or "", c.redact),
            c.study_uid or "",
            c.series_uid or "",
            redact(c.source, c.redact),
        )
        for c in discovery.cases
    ]


def dry_run(
    input_path: Path | ArchiveSource,
    outdir: Path,
    rules: SelectionRules,
    pseudonymise: bool,
    force: bool,
    retry_failed: bool,
    series: str | None = None,
    channels: int = 1,
) -> list[tuple[str, str, str]]:
    """``(case_id, action, reason)`` per case and skipped series; writes nothing.

    ``channels`` is the model's input channel count (channel files are grouped into cases when
    it is more than one). Pseudonyms are provisional when the output folder has no ledger yet
    (a new secret is made when the real run starts).
    """
    check_paths(input_path, outdir)
    secret = None
    ledger_path = Path(outdir) / LEDGER_NAME
    if pseudonymise:
        if ledger_path.exists():
            with Ledger(ledger_path, readonly=True) as ledger:
                value = ledger.get_meta(SECRET_KEY)
            secret = bytes.fromhex(value) if value else None
        secret = secret or secrets.token_bytes(32)
    discovery = discover_cases(_source(input_path), rules, Namer(secret), series=series, channels=channels)
    check_case_folders(discovery, Path(outdir))
    return dry_run_lines(discovery, Path(outdir), force, retry_failed)


def check_case_folders(discovery: Discovery, outdir: Path) -> None:
    """Refuse (ConfigError) an input file that lies in a case's output folder (OUTDIR/cases/<case>),
    which that case would overwrite: the rule ``medseg predict`` checks too."""
    check_planned_outputs(discovery.cases, lambda case: [case_dir(outdir, case.case_id)])
