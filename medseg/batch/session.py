"""One ``medseg batch`` invocation from start to end: lock, ledger, discovery, run, reports.

:func:`run_session` is what the CLI calls; :func:`dry_run` lists what would happen without
writing anything.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medseg.batch.cases import Discovery, SelectionRules, discover_cases
from medseg.batch.engine import Engine
from medseg.batch.ledger import LEDGER_NAME, Ledger
from medseg.batch.naming import Namer
from medseg.batch.privacy import held_logs, redacting_logs
from medseg.batch.report import write_pseudonym_map, write_reports
from medseg.batch.runner import SECRET_KEY, BatchOptions, BatchSummary, dry_run_lines, locked_outdir, pseudonym_secret, run_batch
from medseg.errors import ConfigError

log = logging.getLogger(__name__)

MAPPING_NAME = "pseudonym_map.csv"
NAMING_KEY = "naming"


@dataclass(frozen=True)
class SessionResult:
    """The summary of the run and where its reports are."""

    summary: BatchSummary
    summary_csv: Path
    report_html: Path
    mapping_csv: Path | None


def check_paths(input_path: Path, outdir: Path) -> None:
    """Refuse an output folder inside the input folder (outputs would be found as inputs next time)."""
    source, target = Path(input_path).resolve(), Path(outdir).resolve()
    if source.is_dir() and (target == source or source in target.parents):
        raise ConfigError(f"the output folder {outdir} is inside the input {input_path}; choose an output folder outside it")


def _naming(ledger: Ledger, pseudonymise: bool) -> Namer:
    """The namer for this output folder; refuses to mix readable and pseudonymised names."""
    mode = "pseudonymised" if pseudonymise else "readable"
    previous = ledger.get_meta(NAMING_KEY)
    if previous and previous != mode:
        flag = "pass --pseudonymise again" if previous == "pseudonymised" else "run without --pseudonymise"
        raise ConfigError(f"{ledger.path.parent} was made with {previous} case names; {flag}, or use another output folder")
    ledger.set_meta(NAMING_KEY, mode)
    return Namer(pseudonym_secret(ledger)) if pseudonymise else Namer()


def run_session(
    input_path: Path, make_engine: Callable[[], Engine], options: BatchOptions, rules: SelectionRules,
    pseudonymise: bool = False, mapping: Path | None = None,
) -> SessionResult:
    """Discover cases in ``input_path``, run them into ``options.outdir``, write the reports.

    ``make_engine`` is called once, in this process, after discovery (workers receive a copy).
    """
    outdir = Path(options.outdir)
    check_paths(input_path, outdir)
    with locked_outdir(outdir), Ledger(outdir / LEDGER_NAME) as ledger:
        if not ledger.wal:
            log.warning("the ledger could not use WAL mode here (network file system?); it stays safe but is slower")
        namer = _naming(ledger, pseudonymise)
        found: list[Discovery] = []
        with held_logs(lambda: _all_terms(found)):  # discovery logs wait until names are known
            found.append(discover_cases(Path(input_path), rules, namer))
        discovery = found[0]
        with redacting_logs(_all_terms(found)):
            engine = make_engine()
            identity = engine.identity()
            summary = run_batch(discovery, engine, identity, options, ledger)
        csv_path, html_path = write_reports(ledger, outdir, pseudonymise)
        mapping_path = None
        if pseudonymise:
            mapping_path = write_pseudonym_map(mapping or outdir / MAPPING_NAME, _mapping_items(discovery))
    return SessionResult(summary, csv_path, html_path, mapping_path)


def _all_terms(found: list[Discovery]) -> tuple[str, ...]:
    """Every patient name part of the discovered series, longest first."""
    terms = {t for d in found for item in (*d.cases, *d.skipped) for t in item.redact}
    return tuple(sorted(terms, key=len, reverse=True))


def _mapping_items(discovery: Discovery) -> list[tuple[str, str, str, str, str]]:
    return [
        (c.case_id, c.patient_id or "", c.study_uid or "", c.series_uid or "", c.source) for c in discovery.cases
    ]


def dry_run(
    input_path: Path, outdir: Path, rules: SelectionRules, pseudonymise: bool, force: bool, retry_failed: bool,
) -> list[tuple[str, str, str]]:
    """``(case_id, action, reason)`` per case and skipped series; writes nothing.

    Pseudonyms are provisional when the output folder has no ledger yet (a new secret is made
    when the real run starts).
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
    discovery = discover_cases(Path(input_path), rules, Namer(secret))
    return dry_run_lines(discovery, Path(outdir), force, retry_failed)
