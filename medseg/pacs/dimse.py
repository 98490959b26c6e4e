"""DIMSE archives (C-FIND, C-GET, C-STORE) through ``pynetdicom``, for archives without DICOMweb.

Queries follow the Study Root hierarchy (studies, then their series, then instances). Series are
retrieved with C-GET: the instances come back on the same association, so medseg needs no
listening port and the archive need not know medseg's address (C-MOVE would). One association per
operation keeps retries simple: a dropped association is reopened by the back-off.

pynetdicom's own log is limited to errors (its debug output can show identifiers, which name patients).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from medseg.errors import ArchiveError
from medseg.pacs.archive import save_instance
from medseg.pacs.config import ArchiveSettings
from medseg.pacs.query import RemoteSeries, SeriesFilter
from medseg.pacs.retry import Unreachable, call_with_backoff

if TYPE_CHECKING:
    from pydicom import Dataset
    from pynetdicom.association import Association
    from pynetdicom.events import Event

log = logging.getLogger(__name__)
T = TypeVar("T")

STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate")
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances")
#: instance-level attributes that decide how instances form volumes (see medseg.io.dicom.discover)
IMAGE_KEYS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "ImageType",
    "RescaleSlope",
    "RescaleIntercept",
    "AcquisitionTime",
    "ContentTime",
    "EchoTime",
    "TemporalPositionIdentifier",
)
#: series attributes filled in from the series query when an archive leaves them out at image level
_INHERITED = ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "Modality", "SeriesDescription", "SeriesNumber")
#: Study Root Query/Retrieve information models and the Verification SOP class (PS3.4)
FIND_MODEL, GET_MODEL, VERIFICATION = "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.3", "1.2.840.10008.1.1"
_PENDING = (0xFF00, 0xFF01)
_STORE_OK = (0x0000, 0xB000, 0xB006, 0xB007)

logging.getLogger("pynetdicom").setLevel(logging.ERROR)


class Aborted(Unreachable):
    """The association ended without an answer (the archive went away, or aborted a request it refuses)."""


class DimseArchive:
    """An :class:`~medseg.pacs.archive.Archive` over DIMSE (see the module docstring)."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self.settings = settings
        self.address = settings.address

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, call: Callable[[], T]) -> T:
        label = f"{what} at {self.address}"
        return call_with_backoff(lambda: self._refusal_checked(call, what), self.settings.backoff, label)

    def _refusal_checked(self, call: Callable[[], T], what: str) -> T:
        """``call()``; an association the archive aborted while it still answers C-ECHO was a refusal
        (archives such as Orthanc abort queries and retrievals from AE titles they do not know)."""
        try:
            return call()
        except Aborted:
            if not self._echo():
                raise
            raise ArchiveError(
                f"{self.address} aborted the {what} from AE title {self.settings.calling_aet!r} although it is up; "
                "register that AE title with the archive and allow it to query and retrieve (or pass the one it "
                "knows with --calling-aet)"
            ) from None

    def _echo(self) -> bool:
        """True when the archive answers a C-ECHO."""
        try:
            with self._association([(VERIFICATION, None)]) as assoc:
                status = assoc.send_c_echo()
        except (Unreachable, ArchiveError):
            return False
        return bool(status) and status.get("Status") == 0x0000

    @contextmanager
    def _association(
        self,
        contexts: Sequence[tuple[str, Sequence[str] | None]],
        roles: Sequence[Any] = (),
        handlers: Sequence[Any] = (),
    ) -> Iterator[Association]:
        """An open association with the requested ``(SOP class, transfer syntaxes)`` contexts.

        Raises Unreachable when it cannot be opened, ArchiveError when the archive rejects it.
        """
        from pynetdicom import AE

        ae = AE(ae_title=self.settings.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.settings.timeout
        for sop_class, syntaxes in contexts:
            ae.add_requested_context(sop_class, syntaxes) if syntaxes else ae.add_requested_context(sop_class)
        assoc = ae.associate(
            self.address.host,
            self.address.port,
            ae_title=self.address.called_aet,
            ext_neg=list(roles) or None,
            evt_handlers=list(handlers) or None,
        )
        if assoc.is_rejected:
            raise ArchiveError(
                f"{self.address} rejected the association from AE title {self.settings.calling_aet!r}; register "
                "that AE title with the archive (or pass the one it knows with --calling-aet)"
            )
        if not assoc.is_established:
            raise Unreachable("no DICOM association could be opened")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _find(self, level: str, match: dict[str, str], returned: Sequence[str]) -> list[Dataset]:
        query = identifier(level, match, returned)
        with self._association([(FIND_MODEL, None)]) as assoc:
            return _find_answers(assoc.send_c_find(query, FIND_MODEL), level)

    # ------------------------------------------------------------------ Archive
    def find_series(self, wanted: SeriesFilter) -> list[RemoteSeries]:
        """Series passing ``wanted``: C-FIND of the studies, then of each study's series."""

        def query() -> list[RemoteSeries]:
            found = []
            for study in self._find("STUDY", wanted.study_keys(), STUDY_KEYS):
                match = {"StudyInstanceUID": str(study.StudyInstanceUID), **wanted.series_keys()}
                for series in self._find("SERIES", match, SERIES_KEYS):
                    for keyword in STUDY_KEYS:
                        if keyword in study and not series.get(keyword):
                            setattr(series, keyword, study[keyword].value)
                    found.append(RemoteSeries.from_dataset(series))
            return found

        return [s for s in self._call("C-FIND", query) if s.series_uid and wanted.matches(s)]

    def series_headers(self, series: RemoteSeries) -> list[Dataset]:
        """C-FIND at image level with the geometry attributes, one dataset per instance."""
        match = {"StudyInstanceUID": series.study_uid, "SeriesInstanceUID": series.series_uid}
        answers = self._call("C-FIND", lambda: self._find("IMAGE", match, (*IMAGE_KEYS, *_INHERITED, "PatientName")))
        for ds in answers:
            _inherit(ds, series)
        return answers

    def retrieve_series(self, series: RemoteSeries, folder: Path) -> list[Path]:
        """C-GET of the series; the instances arrive on the same association and are written atomically."""
        classes = sorted({str(ds.get("SOPClassUID", "")) for ds in self.series_headers(series)} - {""})
        if not classes:
            raise ArchiveError(f"{self.address}: series {series.series_uid} has no instances to retrieve")
        return self._call("C-GET", lambda: self._get(series, classes, folder))

    def _get(self, series: RemoteSeries, classes: Sequence[str], folder: Path) -> list[Path]:
        from pynetdicom import build_role, evt

        written: list[Path] = []

        def on_store(event: Event) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            written.append(save_instance(ds, folder, f"instance-{len(written)}"))
            return 0x0000

        contexts = [(GET_MODEL, None), *((c, _transfer_syntaxes()) for c in classes)]
        roles = [build_role(c, scp_role=True) for c in classes]
        query = identifier("SERIES", {"StudyInstanceUID": series.study_uid, "SeriesInstanceUID": series.series_uid}, ())
        with self._association(contexts, roles, [(evt.EVT_C_STORE, on_store)]) as assoc:
            last = None
            for status, _ in assoc.send_c_get(query, GET_MODEL):
                last = status
        _check_get(last, series)
        return written

    def store(self, paths: Sequence[Path]) -> None:
        """C-STORE of every file on one association; ArchiveError naming a refused instance."""
        import pydicom

        datasets = [pydicom.dcmread(p) for p in paths]
        contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})

        def send() -> None:
            with self._association([(c, [t]) for c, t in contexts]) as assoc:
                for ds in datasets:
                    status = assoc.send_c_store(ds)
                    _check_store(status, str(ds.SOPInstanceUID), self.address)

        self._call("C-STORE", send)

    def has_instance(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> bool:
        """C-FIND at image level for one SOPInstanceUID."""
        match = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "SOPInstanceUID": sop_instance_uid}
        answers = self._call("C-FIND", lambda: self._find("IMAGE", match, ()))
        return any(str(ds.get("SOPInstanceUID", "")) == sop_instance_uid for ds in answers)

    def close(self) -> None:
        """Nothing stays open between operations."""


def identifier(level: str, match: dict[str, str], returned: Sequence[str]) -> Dataset:
    """A C-FIND/C-GET identifier: ``match`` values, and empty (universal) keys for ``returned``."""
    from pydicom import Dataset
    from pydicom.datadict import dictionary_VR

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in returned:
        if keyword not in match:
            ds.add_new(keyword, dictionary_VR(keyword), None)
    for keyword, value in match.items():
        ds.add_new(keyword, dictionary_VR(keyword), value)
    return ds


def _find_answers(responses: Iterator[tuple[Dataset, Dataset | None]], level: str) -> list[Dataset]:
    answers = []
    for status, ident in responses:
        code = status.get("Status") if status else None
        if code is None:
            raise Aborted("the association was aborted during C-FIND")
        if code in _PENDING and ident is not None:
            answers.append(ident)
        elif code not in _PENDING and code != 0x0000:
            raise ArchiveError(f"the archive refused the {level.lower()} C-FIND (status 0x{code:04X})")
    return answers


def _inherit(ds: Dataset, series: RemoteSeries) -> None:
    values = {
        "StudyInstanceUID": series.study_uid,
        "SeriesInstanceUID": series.series_uid,
        "PatientID": series.patient_id,
        "Modality": series.modality,
        "SeriesDescription": series.description,
        "SeriesNumber": series.series_number,
        "PatientName": series.patient_name,
    }
    for keyword, value in values.items():
        if not ds.get(keyword) and value not in (None, ""):
            setattr(ds, keyword, value)


def _check_get(status: Dataset | None, series: RemoteSeries) -> None:
    code = status.get("Status") if status else None
    if code is None:
        raise Aborted("the association was aborted during C-GET")
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0) if status else 0
    if code not in (0x0000, 0xB000) or failed:
        raise ArchiveError(
            f"C-GET of series {series.series_uid} failed (status 0x{code:04X}, {failed} instance(s) not sent); "
            "check that the archive allows C-GET for this AE title"
        )


def _check_store(status: Dataset | None, sop_instance_uid: str, address: object) -> None:
    code = status.get("Status") if status else None
    if code is None:
        raise Aborted("the association was aborted during C-STORE")
    if code not in _STORE_OK:
        raise ArchiveError(f"{address} refused to store instance {sop_instance_uid} (status 0x{code:04X})")


def _transfer_syntaxes() -> list[str]:
    """Transfer syntaxes medseg reads, offered for instances the archive sends during C-GET."""
    from pydicom import uid

    return [
        uid.ExplicitVRLittleEndian,
        uid.ImplicitVRLittleEndian,
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.RLELossless,
        uid.DeflatedExplicitVRLittleEndian,
    ]
