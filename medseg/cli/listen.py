"""``medseg listen --port N -m MODEL -o OUTDIR [--push-to URL]``: a DICOM node that segments what it receives."""

from __future__ import annotations

import argparse

from medseg.cli.archive_options import add_archive_options, archive_options
from medseg.cli.batch import batch_options, make_engine
from medseg.cli.watch import add_cycle_options, cycle_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``listen`` subcommand."""
    p = subparsers.add_parser(
        "listen",
        help="receive series as a DICOM C-STORE SCP and segment each complete one once (push results back)",
        description="Listen as a DICOM storage SCP; every series received is filed under OUTDIR/.incoming and, once "
        "no instance arrived for --settle seconds, segmented once into OUTDIR (same ledger, names and report as "
        "'medseg batch'); its SEG is pushed to --push-to. An instance is acknowledged only once on disk, so a "
        "kill -9 loses nothing. Stop with Ctrl-C (exit 130).",
    )
    p.add_argument("--port", type=int, required=True, metavar="N", help="TCP port to listen on")
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.add_argument("--ae-title", default="MEDSEG", metavar="AET", help="medseg's AE title (default MEDSEG)")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AET",
        help="accept only these calling AE titles (repeatable; default: any)",
    )
    add_cycle_options(p, settle=10.0)
    add_archive_options(p, filters=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Listen until interrupted (or ``--cycles``); returns 0."""
    from medseg.batch.watch import ListenOptions, listen
    from medseg.cases import load_rules
    from medseg.errors import ConfigError
    from medseg.pacs.address import check_ae_title

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    server = ListenOptions(
        check_ae_title(args.ae_title, "--ae-title"),
        args.bind,
        args.port,
        tuple(check_ae_title(a, "--allow") for a in args.allow),
    )
    listen(
        server,
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
