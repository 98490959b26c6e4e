"""Results back to the archive, exactly once: check, send, verify.

:func:`push_file` asks the archive whether it already holds the instance (by SOPInstanceUID), sends
it only when it does not, and then queries again to prove it arrived. Together with stable UIDs
(:func:`give_stable_uids`: the same source series and model always give the same SEG series and
instance UIDs) a rerun, a retry after a lost answer or a redo of a case never leaves a second copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import ArchiveError, InputError
from medseg.pacs.archive import Archive


@dataclass(frozen=True)
class PushReceipt:
    """What :func:`push_file` did: ``sent`` False when the archive already held the instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sent: bool
    seconds: float


def instance_uids(path: Path) -> tuple[str, str, str]:
    """(StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) of a DICOM file; InputError when absent."""
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
        )
    except Exception as exc:  # pydicom raises many types for unreadable files
        raise InputError(f"{path.name} cannot be read as DICOM ({type(exc).__name__}); it cannot be pushed") from None
    uids = tuple(str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    if not all(uids):
        raise InputError(f"{path.name} lacks study, series or instance UIDs; it cannot be pushed")
    return uids  # type: ignore[return-value]


def push_file(archive: Archive, path: Path) -> PushReceipt:
    """Send ``path`` unless the archive holds its SOPInstanceUID already, then verify it is there.

    Raises ArchiveError when the archive accepted the file but a query does not find it.
    """
    start = time.perf_counter()
    study, series, sop = instance_uids(path)
    sent = False
    if not archive.has_instance(study, series, sop):
        archive.store([path])
        sent = True
        if not archive.has_instance(study, series, sop):
            raise ArchiveError(
                f"{archive.address} accepted {path.name} but a query for instance {sop} does not find it; "
                "check the archive's storage and query settings"
            )
    return PushReceipt(study, series, sop, sent, time.perf_counter() - start)


def stable_uid(*parts: str) -> str:
    """A valid DICOM UID that depends only on ``parts``: ``2.25.`` + 128 bits of their SHA-256 (the
    UUID-derived form of PS3.5 B.2; pydicom's ``generate_uid`` ignores its entropy without a prefix)."""
    import hashlib

    digest = hashlib.sha256("\x1f".join(("medseg", *parts)).encode("utf-8")).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def give_stable_uids(path: Path, key: str) -> tuple[str, str]:
    """Rewrite the SeriesInstanceUID and SOPInstanceUID of the single-instance result ``path`` (a SEG)
    to UIDs derived from ``key`` (e.g. source series UID + model version); atomically. Returns them."""
    import pydicom

    from medseg.io.atomic import atomic_path

    ds = pydicom.dcmread(path)
    series_uid, sop_uid = stable_uid("series", key), stable_uid("instance", key)
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(sop_uid)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return series_uid, sop_uid
