"""``medseg series FOLDER``: list every series of a DICOM export (headers only)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``series`` subcommand."""
    parser = subparsers.add_parser(
        "series",
        help="list the series of a DICOM export",
        description=(
            "List every series under FOLDER (searched recursively; headers only): index, UID, "
            "modality, description, slices, matrix, spacing, orientation. Non-image objects "
            "(SEG, RTSTRUCT, SR...) are listed and marked. Pass the index, UID or a description "
            "pattern to other commands with --series."
        ),
    )
    parser.add_argument("folder", help="DICOM export folder (or one DICOM file)")
    parser.add_argument("--all", action="store_true", help="also show series number, patient ID, file count and folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the series table; exit code 0 (errors raise MedsegError -> exit 2)."""
    from medseg.errors import printable
    from medseg.io.dicom import discover_series, format_series_table

    infos = discover_series(args.folder)
    print(format_series_table(infos, details=args.all))
    images = sum(info.is_image for info in infos)
    print(f"\n{len(infos)} series ({images} image, {len(infos) - images} other) in {printable(args.folder)}")
    return 0
