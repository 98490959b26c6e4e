"""The ``medseg`` command: one entry point, one module per subcommand.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds its parser and sets
``func=run`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Heavy imports stay inside ``run`` so ``medseg --help`` is instant.

Exit codes: 0 success, 1 internal fault, 2 user error (bad input or options; one-line message,
no traceback unless ``--debug``), 3 a batch finished with some failed cases.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

#: subcommand modules, in the order ``--help`` lists them
COMMANDS = ("series", "convert", "plan", "train", "evaluate", "predict", "export", "batch", "watch", "listen", "view")


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``medseg batch: error: ...``), exit 2.

    Subcommand parsers inherit it (``add_subparsers`` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        """Print ``message`` and where to read the options on one line, then exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand registered."""
    from medseg.version import __version__

    parser = Parser(prog="medseg", description="Segment medical volumes from DICOM exports and NIfTI/NRRD/MHA files.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"medseg.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medseg.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.debug else "%(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from medseg.errors import MedsegError, printable

    try:
        return int(args.func(args) or 0)
    except MedsegError as exc:
        if args.debug:
            raise
        print(f"medseg: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal fault: short message, traceback with --debug
        if args.debug:
            raise
        print(
            f"medseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
