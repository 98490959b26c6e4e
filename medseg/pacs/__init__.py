"""Talking to DICOM archives (PACS, VNA, research archives such as Orthanc or dcm4chee).

Along the data flow:

* :mod:`~medseg.pacs.address` parses ``http(s)://HOST/dicom-web`` or ``dimse://AET@HOST:PORT``;
* :mod:`~medseg.pacs.config` adds credentials (environment or a TOML file; never shown), TLS
  verification (on by default), time-outs, the calling AE title and the back-off budget;
* :mod:`~medseg.pacs.query` says which series to take (:class:`SeriesFilter`) and describes what a
  query found (:class:`RemoteSeries`);
* :mod:`~medseg.pacs.archive` is the one interface (:class:`Archive`: find, headers, retrieve,
  store, has_instance) with two implementations, :mod:`~medseg.pacs.dicomweb` (dicomweb-client)
  and :mod:`~medseg.pacs.dimse` (pynetdicom), both waiting out an unreachable archive with
  :mod:`~medseg.pacs.retry`;
* :mod:`~medseg.pacs.push` sends results exactly once (check, send, verify; stable SEG UIDs);
* :mod:`~medseg.pacs.settle` decides when a growing series is complete, and
  :mod:`~medseg.pacs.scp` receives series as a C-STORE SCP.

This package knows nothing of cases, ledgers or models: ``medseg.batch`` builds those on top.
"""

from __future__ import annotations

from medseg.pacs.address import ArchiveAddress, is_archive_address, parse_address
from medseg.pacs.archive import Archive, ArchiveSource, open_archive
from medseg.pacs.config import ArchiveSettings, Credentials, load_settings
from medseg.pacs.push import PushReceipt, give_stable_uids, push_file
from medseg.pacs.query import RemoteSeries, SeriesFilter, parse_date_range
from medseg.pacs.retry import Backoff

__all__ = [
    "Archive",
    "ArchiveAddress",
    "ArchiveSettings",
    "ArchiveSource",
    "Backoff",
    "Credentials",
    "PushReceipt",
    "RemoteSeries",
    "SeriesFilter",
    "give_stable_uids",
    "is_archive_address",
    "load_settings",
    "open_archive",
    "parse_address",
    "parse_date_range",
    "push_file",
]
