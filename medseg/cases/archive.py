"""Cases from a DICOM archive: the same series selection rules, ``--series`` choice, case ids and
skip reasons as an export folder, decided from headers before any pixel is fetched.

:func:`archive_discovery` turns the series a query found (:class:`~medseg.pacs.RemoteSeries`) into
cases: each series' instance headers (DICOMweb metadata or C-FIND answers) go through the same
grouping as files on disk (:func:`medseg.io.dicom.series_of_datasets`), so a series that mixes
orientations is split into the same parts, named the same way. Non-image series (SEG, RTSTRUCT,
SR, ... including medseg's own pushed results) are skipped from the query answer alone.

A case found this way carries its :class:`~medseg.pacs.RemoteSeries` (``InputCase.remote``) and no
files; :func:`fetch_case` retrieves it into a folder when it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.cases.case import Discovery, InputCase, Skipped
from medseg.cases.naming import Namer
from medseg.cases.privacy import name_parts
from medseg.cases.rules import SelectionRules, series_reasons
from medseg.errors import InputError

if TYPE_CHECKING:
    from medseg.io.dicom import SeriesInfo
    from medseg.pacs import Archive, ArchiveSource, RemoteSeries

_ONE_CHANNEL = (
    "the model takes {channels} channels and a DICOM series is one; retrieve the series, convert "
    "them with 'medseg convert' and list them in a manifest"
)


def discover_archive(
    source: ArchiveSource, rules: SelectionRules, namer: Namer, series: str | None = None, channels: int = 1
) -> Discovery:
    """Every case in the archive that ``source.wanted`` and the ``rules`` (or ``series``) select.

    Raises InputError when the query finds no series at all (saying which filters were used).
    """
    archive = source.open()
    try:
        found = archive.find_series(source.wanted)
        if not found:
            raise InputError(f"{source} holds no series matching the filters ({_filters(source)}); check them")
        return archive_discovery(archive, found, rules, namer, series, channels)
    finally:
        archive.close()


def archive_discovery(
    archive: Archive,
    found: Sequence[RemoteSeries],
    rules: SelectionRules,
    namer: Namer,
    series: str | None = None,
    channels: int = 1,
) -> Discovery:
    """Cases and skipped series for the series ``found`` in ``archive`` (headers fetched, no pixels).

    Promises the case ids, skip reasons and ``--series`` choice an export folder holding the same
    series would give (one indexing over all of ``found``).
    """
    from medseg.cases.discover import unique_ids
    from medseg.io.dicom import series_of_datasets
    from medseg.io.dicom.discover import NON_IMAGE_MODALITIES

    images = [s for s in found if s.modality.upper() not in NON_IMAGE_MODALITIES]
    skipped = [_non_image(s, archive, namer) for s in found if s.modality.upper() in NON_IMAGE_MODALITIES]
    remote = {s.series_uid: s for s in images}
    infos = series_of_datasets([ds for s in images for ds in archive.series_headers(s)])
    cases: list[InputCase] = []
    for info, reason in zip(infos, series_reasons(infos, rules, series)):
        case = _case(info, remote[info.series_instance_uid], archive, namer)
        if reason is None and channels != 1:
            reason = _ONE_CHANNEL.format(channels=channels)
        if reason is None:
            cases.append(case)
        else:
            skipped.append(Skipped.of(case, reason))
    return unique_ids(cases, skipped, namer)


def _case(info: SeriesInfo, remote: RemoteSeries, archive: Archive, namer: Namer) -> InputCase:
    """The case of one series (or part of one) described by archive headers: named as from files,
    located by its archive address, carrying ``remote`` and no files until fetched."""
    from medseg.cases.discover import series_case

    location = archive.address.series_location(remote.study_uid, remote.series_uid)
    return replace(series_case(info, None, namer), source=location, series=None, remote=remote)


def _non_image(series: RemoteSeries, archive: Archive, namer: Namer) -> Skipped:
    """A SEG, RTSTRUCT, SR, ... series: skipped with the reason the rules give, without fetching headers."""
    case_id = namer.series_id(series.patient_id, series.study_uid, series.series_number, series.description)
    return Skipped(
        case_id,
        archive.address.series_location(series.study_uid, series.series_uid),
        f"not an image series (modality {series.modality or '?'})",
        series.series_uid,
        series.modality,
        series.description,
        series.instances,
        name_parts(series.patient_name),
    )


def fetch_case(case: InputCase, archive: Archive, folder: Path) -> InputCase:
    """``case`` (from :func:`archive_discovery`) with its series retrieved into ``folder`` and read
    from there, ready for :func:`~medseg.cases.read_case`.

    Raises InputError when the archive's series no longer holds the part the case was made from.
    """
    from medseg.io.dicom import discover_series

    if case.remote is None:
        return case
    archive.retrieve_series(case.remote, folder)
    infos = [info for info in discover_series(folder) if info.uid == case.series_uid]
    if len(infos) != 1:
        raise InputError(
            f"case {case.case_id}: series {case.series_uid} changed in the archive since it was listed; run again"
        )
    return replace(case, series=infos[0])


def _filters(source: ArchiveSource) -> str:
    wanted = source.wanted
    given = {k: v for k, v in vars(wanted).items() if v not in (None, ())}
    return ", ".join(f"{k}={v}" for k, v in given.items()) or "none"
