"""DICOMweb archives (QIDO-RS, WADO-RS, STOW-RS) through the well-kept ``dicomweb-client``.

TLS certificates are verified unless the settings say otherwise; basic auth or a bearer token
ride on a ``requests`` session and never appear in logs or messages. Instances are retrieved in the
transfer syntax the archive stores them in (``transfer-syntax=*``), so the archive does not
transcode; medseg decodes JPEG, JPEG 2000, JPEG-LS and RLE itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from medseg.errors import ArchiveError
from medseg.pacs.archive import save_instance
from medseg.pacs.config import ArchiveSettings
from medseg.pacs.query import RemoteSeries, SeriesFilter
from medseg.pacs.retry import Unreachable, call_with_backoff

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient
    from pydicom import Dataset

log = logging.getLogger(__name__)
T = TypeVar("T")

#: HTTP statuses worth waiting out: rate limiting and gateways/servers that are (re)starting
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: series-level attributes asked for in QIDO-RS
SERIES_FIELDS = (
    "PatientID",
    "PatientName",
    "StudyDate",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # one INFO line per request otherwise


class DicomWebArchive:
    """An :class:`~medseg.pacs.archive.Archive` over DICOMweb (see the module docstring)."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self.settings = settings
        self.address = settings.address
        self._client = _client(settings)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        label = f"{what} at {self.address}"
        return call_with_backoff(lambda: _translated(call, label), self.settings.backoff, label)

    def find_series(self, wanted: SeriesFilter) -> list[RemoteSeries]:
        """Series passing ``wanted``, from one QIDO-RS query (all pages)."""
        filters = {**wanted.study_keys(), **wanted.series_keys()}
        answers = self._call(
            "series query",
            lambda: self._client.search_for_series(fields=SERIES_FIELDS, search_filters=filters, get_remaining=True),
        )
        found = [RemoteSeries.from_dataset(_dataset(a)) for a in answers]
        return [s for s in found if s.series_uid and wanted.matches(s)]

    def series_headers(self, series: RemoteSeries) -> list[Dataset]:
        """WADO-RS series metadata, one header dataset per instance (bulk data left out)."""
        answers = self._call(
            "metadata retrieval", lambda: self._client.retrieve_series_metadata(series.study_uid, series.series_uid)
        )
        return [_dataset(a) for a in answers]

    def retrieve_series(self, series: RemoteSeries, folder: Path) -> list[Path]:
        """WADO-RS retrieval of every instance into ``folder`` (restarted whole after a failure)."""

        def fetch() -> list[Path]:
            instances = self._client.iter_series(series.study_uid, series.series_uid, media_types=ANY_TRANSFER_SYNTAX)
            return [save_instance(ds, folder, f"instance-{n}") for n, ds in enumerate(instances)]

        return self._call("series retrieval", fetch)

    def store(self, paths: Sequence[Path]) -> None:
        """STOW-RS of ``paths`` in one request; ArchiveError naming the refused instances."""
        import pydicom

        datasets = [pydicom.dcmread(p) for p in paths]
        response = self._call("STOW-RS store", lambda: self._client.store_instances(datasets))
        failed = response.get("FailedSOPSequence", []) if response is not None else []
        if failed:
            reasons = ", ".join(
                f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason', '?')})"
                for item in failed
            )
            raise ArchiveError(f"{self.address} refused to store {len(failed)} instance(s): {reasons}")

    def has_instance(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> bool:
        """QIDO-RS instance query for one SOPInstanceUID."""
        answers = self._call(
            "instance query",
            lambda: self._client.search_for_instances(
                study_uid, series_uid, fields=("SOPInstanceUID",), search_filters={"SOPInstanceUID": sop_instance_uid}
            ),
        )
        return any(_dataset(a).get("SOPInstanceUID") == sop_instance_uid for a in answers)

    def close(self) -> None:
        """Close the HTTP session."""
        session = getattr(self._client, "_session", None)
        if session is not None:
            session.close()


def _client(settings: ArchiveSettings) -> DICOMwebClient:
    from dicomweb_client.api import DICOMwebClient

    session = _session(settings)
    client = DICOMwebClient(settings.address.url, session=session, timeout=settings.timeout)
    client.set_http_retry_params(retry=False)  # one back-off policy (ours), with its budget and messages
    return client


class _Session(requests.Session):
    """A session whose CA bundle (or verify = false) is not overridden by REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE, which requests otherwise prefers (psf/requests#3829)."""

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict:
        merged = super().merge_environment_settings(*args, **kwargs)
        if self.verify is not True:
            merged["verify"] = self.verify
        return merged


def _session(settings: ArchiveSettings) -> requests.Session:
    session = _Session()
    session.verify = settings.verify
    credentials = settings.credentials
    if credentials.token:
        session.headers["Authorization"] = f"Bearer {credentials.token}"
    elif credentials.username:
        session.auth = requests.auth.HTTPBasicAuth(credentials.username, credentials.password or "")
    return session


def _translated(call: Callable[[], T], label: str) -> T:
    """Run ``call``, turning transport errors into Unreachable (retry) or ArchiveError (give up)."""
    try:
        return call()
    except requests.exceptions.SSLError as exc:
        raise ArchiveError(
            f"{label}: the TLS certificate could not be verified ({_reason(exc)}); give the archive's CA bundle "
            "as ca_bundle in --pacs-config"
        ) from None
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as exc:
        raise Unreachable(_reason(exc)) from None
    except requests.exceptions.HTTPError as exc:
        raise _http_error(exc, label) from None


def _http_error(exc: Any, label: str) -> Exception:
    status = getattr(exc.response, "status_code", None)
    if status in RETRY_STATUSES:
        return Unreachable(f"HTTP {status}")
    if status in (401, 403):
        return ArchiveError(
            f"{label}: the archive refused the credentials (HTTP {status}); set MEDSEG_PACS_USERNAME and "
            "MEDSEG_PACS_PASSWORD, or MEDSEG_PACS_TOKEN, or use --pacs-config"
        )
    if status == 404:
        return ArchiveError(f"{label}: not found (HTTP 404); check that the address is the DICOMweb root")
    return ArchiveError(f"{label}: the archive answered HTTP {status}")


def _reason(exc: BaseException) -> str:
    """A short reason without URLs (which could carry query parameters) or nested reprs."""
    text = str(exc)
    for marker in (
        "Connection refused",
        "timed out",
        "Name or service not known",
        "Connection reset",
        "Remote end closed",
        "certificate verify failed",
        "Connection aborted",
    ):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(exc).__name__


def _dataset(answer: dict) -> Dataset:
    """A pydicom Dataset from DICOM JSON, bulk data (pixels) left out."""
    from pydicom import Dataset

    return Dataset.from_json(answer, bulk_data_uri_handler=lambda tag, vr, uri: None)
