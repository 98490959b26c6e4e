"""What one input becomes: :class:`InputCase` (one unit of work), :class:`Skipped` (a series found but
not run, with the reason) and :class:`Discovery` (both lists, as :func:`~medseg.cases.discover_cases`
returns them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from medseg.io.dicom import SeriesInfo
    from medseg.pacs import RemoteSeries

CaseKind = Literal["dicom", "file", "manifest"]


@dataclass(frozen=True)
class InputCase:
    """One unit of work: one DICOM series, one volume file (or a group of channel files), or one
    manifest row -> one set of outputs named ``case_id``.

    ``case_id`` is already sanitised (a safe file and folder name). ``source`` is for display and
    the batch ledger (a path relative to the input). ``images`` are the input files in channel
    order (volume files, or a DICOM folder for a manifest row); ``series`` is the ``SeriesInfo``
    of a DICOM case; ``series_select`` chooses the series of a manifest row's DICOM folder.
    ``problem`` is an error known before running (a missing file): such a case is recorded as
    failed without being run. ``redact`` holds the patient's name parts, removed from any error
    text and log; never stored or shown. ``remote`` is the archive series of a case found in a
    DICOM archive (``source`` is then its archive address); it has no files until
    :func:`~medseg.cases.archive.fetch_case` retrieves it.
    """

    case_id: str
    kind: CaseKind
    source: str
    images: tuple[Path, ...] = ()
    series: SeriesInfo | None = None
    series_select: str | None = None
    series_uid: str | None = None
    study_uid: str | None = None
    patient_id: str | None = field(default=None, repr=False)
    modality: str | None = None
    description: str | None = None
    n_slices: int | None = None
    problem: str | None = None
    redact: tuple[str, ...] = field(default=(), repr=False)
    remote: RemoteSeries | None = None

    @property
    def key(self) -> str:
        """A stable identity independent of naming (series UID or source path)."""
        return self.series_uid or self.source

    def describe(self) -> str:
        """Where the case comes from, with full paths, for logs and the ``medseg predict`` manifest."""
        if self.series is None and self.remote is not None:
            return f"DICOM series {self.series_uid} ({self.description or 'no description'}) at {self.source}"
        if self.series is not None:
            files = self.series.files
            root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else "?"
            return f"DICOM series {self.series.uid} ({self.series.description or 'no description'}) in {root}"
        return ", ".join(str(p) for p in self.images) or self.source


@dataclass(frozen=True)
class Skipped:
    """A series (or file) found in the input but not selected, with the reason in one line."""

    case_id: str
    source: str
    reason: str
    series_uid: str | None = None
    modality: str | None = None
    description: str | None = None
    n_slices: int | None = None
    redact: tuple[str, ...] = field(default=(), repr=False)

    @property
    def key(self) -> str:
        """A stable identity independent of naming."""
        return self.series_uid or self.source

    @classmethod
    def of(cls, case: InputCase, reason: str) -> Skipped:
        """``case`` not run, because of ``reason``."""
        return cls(
            case.case_id,
            case.source,
            reason,
            case.series_uid,
            case.modality,
            case.description,
            case.n_slices,
            case.redact,
        )


@dataclass(frozen=True)
class Discovery:
    """Result of :func:`~medseg.cases.discover_cases`: cases to run and what was skipped, and why."""

    cases: tuple[InputCase, ...]
    skipped: tuple[Skipped, ...]

    def redact_terms(self) -> tuple[str, ...]:
        """Every patient name part of the discovered series, longest first (for redaction)."""
        terms = {t for case in self.cases for t in case.redact} | {t for item in self.skipped for t in item.redact}
        return tuple(sorted(terms, key=len, reverse=True))

    def why_nothing(self) -> str:
        """One line saying why no case was found (the first skip reasons), for an error message."""
        reasons = [f"{s.case_id}: {s.reason}" for s in self.skipped[:3]]
        more = f" (and {len(self.skipped) - 3} more)" if len(self.skipped) > 3 else ""
        return "; ".join(reasons) + more
