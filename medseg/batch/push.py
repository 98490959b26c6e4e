"""``--push-to``: send the DICOM results (SEG) of done cases back to an archive, once each.

The driver pushes after the cases ran, recording every push in the ledger's ``pushes`` table. A
result already recorded as ``sent`` or ``present`` for the same destination and checksum is not
touched again; anything else goes through :func:`medseg.pacs.push_file` (ask the archive, send
only when it lacks the instance, verify), so a push lost between "sent" and "recorded" (a kill -9)
is found in the archive on the next run instead of being sent twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.batch.archive_engine import DICOM_RESULTS
from medseg.batch.engine import error_text
from medseg.batch.ledger import CaseRow, Ledger, OutputFile, PushRow
from medseg.errors import ArchiveDownError, MedsegError

if TYPE_CHECKING:
    from medseg.pacs import Archive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushSummary:
    """What one push pass did: results ``sent``, found ``present`` already, ``failed``, and
    ``unchanged`` (recorded as pushed by an earlier run)."""

    destination: str
    sent: int = 0
    present: int = 0
    failed: int = 0
    unchanged: int = 0

    def line(self) -> str:
        """One line for the terminal."""
        return (
            f"push to {self.destination}: {self.sent} sent, {self.present} already there, "
            f"{self.unchanged} pushed before, {self.failed} failed"
        )


def push_results(ledger: Ledger, outdir: Path, archive: Archive) -> PushSummary:
    """Push every DICOM result of every done case not yet pushed to ``archive``; record each push.

    Stops at the first push that finds the archive down for its whole back-off budget (the
    remaining results are pushed by the next run). Never raises for a refused push (recorded).
    """
    destination = str(archive.address)
    done = {(p.case_id, p.name): p for p in ledger.pushes(destination) if p.status != "failed"}
    counts = {"sent": 0, "present": 0, "failed": 0, "unchanged": 0}
    for row, output in _results(ledger):
        previous = done.get((row.case_id, output.name))
        if previous is not None and previous.sha256 == output.sha256:
            counts["unchanged"] += 1
            continue
        try:
            counts[_push_one(ledger, Path(outdir), archive, row, output)] += 1
        except ArchiveDownError:
            counts["failed"] += 1
            break
    return PushSummary(destination, **counts)


def _results(ledger: Ledger) -> list[tuple[CaseRow, OutputFile]]:
    """(case, output) for every DICOM result of every done case."""
    return [
        (row, out) for row in ledger.rows(where="status = 'done'") for out in row.outputs if out.name in DICOM_RESULTS
    ]


def _push_one(ledger: Ledger, outdir: Path, archive: Archive, row: CaseRow, output: OutputFile) -> str:
    """Push one result and record it; returns ``sent``, ``present`` or ``failed`` (re-raises, once
    recorded, an ArchiveDownError: the next results would wait for nothing)."""
    from medseg.pacs import push_file

    destination = str(archive.address)
    try:
        receipt = push_file(archive, outdir / output.path)
    except MedsegError as exc:
        ledger.record_push(
            PushRow(
                row.case_id, output.name, destination, output.sha256, None, None, None, "failed", error_text(exc), None
            )
        )
        log.warning("%s: %s not pushed: %s", row.case_id, output.name, error_text(exc))
        if isinstance(exc, ArchiveDownError):
            raise
        return "failed"
    status = "sent" if receipt.sent else "present"
    ledger.record_push(
        PushRow(
            row.case_id,
            output.name,
            destination,
            output.sha256,
            receipt.study_uid,
            receipt.series_uid,
            receipt.sop_instance_uid,
            status,
            None,
            round(receipt.seconds, 4),
        )
    )
    log.info(
        "%s: %s %s (%s)",
        row.case_id,
        output.name,
        "pushed and verified" if receipt.sent else "already in the archive",
        destination,
    )
    return status
