"""``medseg watch SOURCE -m MODEL -o OUTDIR [--push-to URL]``: segment every new series of an archive, once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.cli.archive_options import add_archive_options, archive_input, archive_options
from medseg.cli.batch import add_batch_options, batch_options, make_engine
from medseg.cli.options import add_prediction_options
from medseg.pretrained import resolve_model_path

if TYPE_CHECKING:
    from medseg.batch.watch import WatchOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``watch`` subcommand."""
    p = subparsers.add_parser(
        "watch",
        help="poll a DICOM archive and segment every new complete series once (push results back)",
        description="Poll a DICOM archive (DICOMweb or DIMSE) every --interval seconds; each series that passes the "
        "filters and selection rules and has stopped growing for --settle seconds is segmented once into OUTDIR "
        "(same ledger, names and report as 'medseg batch') and its SEG is pushed to --push-to. Survives kill -9: "
        "a restart loses nothing and does nothing twice. Stop with Ctrl-C (exit 130).",
    )
    p.add_argument("source", metavar="SOURCE", help="the archive: http(s)://HOST/dicom-web or dimse://AET@HOST:PORT")
    add_cycle_options(p, settle=60.0)
    add_archive_options(p)
    p.set_defaults(func=run)


def add_cycle_options(p: argparse.ArgumentParser, settle: float) -> None:
    """Model, output, cycle timing, batch and prediction options (shared with ``listen``)."""
    p.add_argument(
        "-m",
        "--model",
        type=resolve_model_path,
        action="append",
        default=[],
        required=True,
        metavar="FOLDER",
        help="trained model folder or a shipped model name (hippocampus); repeat for an ensemble",
    )
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder (ledger, cases/, report)"
    )
    p.add_argument(
        "--interval", type=float, default=30.0, metavar="SECONDS", help="seconds between cycles (default 30)"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=settle,
        metavar="SECONDS",
        help=f"a series counts as complete when it has not grown for this long (default {settle:g})",
    )
    p.add_argument("--cycles", type=int, metavar="N", help="stop after N cycles (default: run until interrupted)")
    add_batch_options(p, dry_run=False)
    add_prediction_options(p)


def cycle_options(args: argparse.Namespace) -> WatchOptions:
    """``--interval``, ``--settle`` and ``--cycles`` checked."""
    from medseg.batch.watch import WatchOptions
    from medseg.errors import ConfigError

    if args.interval <= 0 or args.settle < 0:
        raise ConfigError(
            f"--interval must be positive and --settle zero or more, got {args.interval} and {args.settle}"
        )
    if args.cycles is not None and args.cycles < 1:
        raise ConfigError(f"--cycles must be at least 1, got {args.cycles}")
    return WatchOptions(interval=args.interval, settle=args.settle, cycles=args.cycles)


def run(args: argparse.Namespace) -> int:
    """Watch until interrupted (or ``--cycles``); returns 0."""
    from medseg.batch.watch import watch
    from medseg.cases import load_rules
    from medseg.errors import ConfigError
    from medseg.pacs import ArchiveSource

    args.input = args.source
    source = archive_input(args)
    if not isinstance(source, ArchiveSource):
        raise ConfigError(
            f"{args.source} is not an archive; watch polls http(s)://HOST/dicom-web or dimse://AET@HOST:PORT "
            "(for a folder, run 'medseg batch' again)"
        )
    watch(
        source,
        lambda: make_engine(args),
        batch_options(args),
        load_rules(args.recipe),
        cycle_options(args),
        archive_options(args),
        args.series,
        args.pseudonymise,
        args.mapping,
    )
    return 0
