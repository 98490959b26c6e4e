"""The one interface both archive protocols offer (:class:`Archive`), and :func:`open_archive`.

Contract for every implementation:

* every method waits out an unreachable archive with the settings' back-off
  (:func:`medseg.pacs.retry.call_with_backoff`) and then raises :class:`~medseg.errors.ArchiveError`;
  refusals (bad credentials, unknown AE title, HTTP 4xx) raise ArchiveError at once;
* nothing is logged with credentials or patient names (only addresses and UIDs);
* files are written atomically (a killed retrieval leaves no half-written instance);
* ``store`` may be repeated safely: an instance whose SOPInstanceUID the archive already holds is
  not duplicated by the archives medseg is tested with (Orthanc), and :mod:`medseg.pacs.push`
  checks before sending anyway.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from medseg.pacs.address import ArchiveAddress
from medseg.pacs.config import ArchiveSettings
from medseg.pacs.query import RemoteSeries, SeriesFilter

if TYPE_CHECKING:
    from pydicom import Dataset

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class Archive(Protocol):
    """A DICOM archive medseg reads series from and writes results to."""

    address: ArchiveAddress

    def find_series(self, wanted: SeriesFilter) -> list[RemoteSeries]:
        """Every series passing ``wanted`` (series-level query; no pixel data)."""
        ...

    def series_headers(self, series: RemoteSeries) -> list[Dataset]:
        """One header dataset per instance of ``series``, with the attributes that decide how it
        is split into volumes (position, orientation, spacing, matrix, SOP class); no pixel data."""
        ...

    def retrieve_series(self, series: RemoteSeries, folder: Path) -> list[Path]:
        """Every instance of ``series`` written into ``folder`` as ``<SOPInstanceUID>.dcm``."""
        ...

    def store(self, paths: Sequence[Path]) -> None:
        """Send DICOM files to the archive (STOW-RS or C-STORE); ArchiveError when one is refused."""
        ...

    def has_instance(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> bool:
        """True when the archive holds this instance (QIDO-RS / C-FIND at instance level)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class ArchiveSource:
    """An archive as the input of a run: where it is and how to talk to it (``settings``), and which
    series to take (``wanted``). Shown as its address, never with credentials."""

    settings: ArchiveSettings
    wanted: SeriesFilter = field(default_factory=SeriesFilter)

    def __str__(self) -> str:
        return str(self.settings.address)

    def open(self) -> Archive:
        """A connection to the archive (:func:`open_archive`)."""
        return open_archive(self.settings)


def open_archive(settings: ArchiveSettings) -> Archive:
    """The DICOMweb or DIMSE implementation for ``settings.address``."""
    if settings.address.kind == "dicomweb":
        from medseg.pacs.dicomweb import DicomWebArchive

        return DicomWebArchive(settings)
    from medseg.pacs.dimse import DimseArchive

    return DimseArchive(settings)


def instance_file_name(sop_instance_uid: str, fallback: str) -> str:
    """``<SOPInstanceUID>.dcm`` when the UID is well formed, else ``<fallback>.dcm`` (never a path)."""
    uid = str(sop_instance_uid or "")
    return f"{uid}.dcm" if _UID.fullmatch(uid) and len(uid) <= 64 else f"{fallback}.dcm"


def save_instance(dataset: Dataset, folder: Path, fallback: str) -> Path:
    """Write one retrieved instance atomically into ``folder``; returns its path."""
    from medseg.io.atomic import atomic_path

    target = folder / instance_file_name(str(dataset.get("SOPInstanceUID", "")), fallback)
    with atomic_path(target) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return target
