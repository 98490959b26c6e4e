"""The DICOM archive options of ``medseg batch``, ``medseg watch`` and ``medseg listen``, written once.

:func:`add_archive_options` registers them (the series filters only where an archive is the
input); :func:`archive_input`, :func:`archive_options` and :func:`archive_settings` turn the
parsed arguments into the library's :class:`~medseg.pacs.ArchiveSource`,
:class:`~medseg.batch.session.ArchiveOptions` and :class:`~medseg.pacs.ArchiveSettings`.
Heavy imports stay inside the functions, so registering keeps ``medseg --help`` instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medseg.batch.session import ArchiveOptions
    from medseg.pacs import ArchiveSettings, ArchiveSource, SeriesFilter

_FILTERS = ("study_uid", "series_uid", "patient_id", "modality", "series_description", "study_date")


def add_archive_options(parser: argparse.ArgumentParser, filters: bool = True) -> None:
    """Add ``--push-to``, the connection options and (with ``filters``) the series filters to ``parser``."""
    group = parser.add_argument_group("DICOM archive (see docs/pacs.md)")
    group.add_argument(
        "--push-to",
        metavar="URL",
        help="send every DICOM SEG written to this archive (http(s)://HOST/dicom-web or "
        "dimse://AET@HOST:PORT), once, checking that it arrived",
    )
    group.add_argument(
        "--pacs-config",
        type=Path,
        metavar="TOML",
        help="credentials, CA bundle, time-outs per archive (default: MEDSEG_PACS_USERNAME/"
        "MEDSEG_PACS_PASSWORD or MEDSEG_PACS_TOKEN from the environment)",
    )
    group.add_argument("--calling-aet", metavar="AET", help="medseg's AE title towards DIMSE archives (default MEDSEG)")
    group.add_argument(
        "--max-wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for an unreachable archive before giving up (default 600)",
    )
    group.add_argument(
        "--keep-cache",
        action="store_true",
        help="keep the series retrieved (OUTDIR/.archive-cache) or received (OUTDIR/.incoming) "
        "(default: removed once their cases are done)",
    )
    if not filters:
        return
    group.add_argument("--study-uid", metavar="UID", help="only this study")
    group.add_argument("--series-uid", metavar="UID", help="only this series")
    group.add_argument("--patient-id", metavar="ID", help="only this patient")
    group.add_argument("--modality", action="append", default=[], metavar="MOD", help="only this modality (repeatable)")
    group.add_argument(
        "--series-description", metavar="REGEX", help="only series whose description matches (case-insensitive)"
    )
    group.add_argument(
        "--study-date", metavar="RANGE", help="only studies in this date range: YYYYMMDD-YYYYMMDD (either end optional)"
    )


def archive_settings(args: argparse.Namespace, address: str) -> ArchiveSettings:
    """Connection settings for ``address`` from ``--pacs-config``, the environment, ``--calling-aet``, ``--max-wait``."""
    from medseg.errors import ConfigError
    from medseg.pacs import load_settings

    if args.max_wait is not None and args.max_wait < 0:
        raise ConfigError(f"--max-wait must be zero or more seconds, got {args.max_wait}")
    return load_settings(address, args.pacs_config, calling_aet=args.calling_aet, max_wait=args.max_wait)


def archive_input(args: argparse.Namespace) -> Path | ArchiveSource:
    """``args.input`` as a path, or as an archive with the series filters; ConfigError for filters
    given with a path."""
    from medseg.errors import ConfigError
    from medseg.pacs import ArchiveSource, is_archive_address

    if is_archive_address(args.input):
        return ArchiveSource(archive_settings(args, args.input), series_filter(args))
    given = [f"--{name.replace('_', '-')}" for name in _FILTERS if getattr(args, name, None)]
    if given:
        raise ConfigError(
            f"{', '.join(given)} filter(s) archive series; INPUT {args.input} is a path (use --recipe there)"
        )
    return Path(args.input)


def series_filter(args: argparse.Namespace) -> SeriesFilter:
    """The series filters from the command line."""
    from medseg.pacs import SeriesFilter, parse_date_range

    start, end = parse_date_range(args.study_date) if args.study_date else (None, None)
    return SeriesFilter(
        study_uid=args.study_uid,
        series_uid=args.series_uid,
        patient_id=args.patient_id,
        modality=tuple(args.modality),
        description=args.series_description,
        date_from=start,
        date_to=end,
    )


def archive_options(args: argparse.Namespace) -> ArchiveOptions:
    """``--push-to`` (with its connection settings) and ``--keep-cache``."""
    from medseg.batch.session import ArchiveOptions

    push = archive_settings(args, args.push_to) if args.push_to else None
    return ArchiveOptions(push_to=push, keep_cache=args.keep_cache)
