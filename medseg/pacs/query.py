"""What to fetch from an archive: :class:`SeriesFilter` (study/series UID, patient ID, modality,
series description pattern, study date range) and the :class:`RemoteSeries` a query returns.

The archive is asked with the keys it understands (QIDO-RS parameters / C-FIND identifiers), and
every answer is checked again here with :meth:`SeriesFilter.matches`, because archives differ in
how they match (case, wildcards, date ranges).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from medseg.errors import ConfigError

if TYPE_CHECKING:
    from pydicom import Dataset

_DATE_FORMATS = ("%Y%m%d", "%Y-%m-%d")


@dataclass(frozen=True)
class RemoteSeries:
    """One series in an archive, as a series-level query describes it.

    ``instances`` is the archive's instance count (None when it does not say). ``patient_name`` is
    kept only so callers can scrub it from messages (``medseg.batch.privacy``); it is never shown.
    """

    study_uid: str
    series_uid: str
    patient_id: str = ""
    modality: str = ""
    description: str = ""
    series_number: int | None = None
    instances: int | None = None
    study_date: str = ""
    patient_name: str = field(default="", repr=False, compare=False)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> RemoteSeries:
        """From a series-level answer (QIDO-RS JSON read into a Dataset, or a C-FIND identifier)."""
        return cls(
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
            modality=str(ds.get("Modality", "") or ""),
            description=str(ds.get("SeriesDescription", "") or "").strip(),
            series_number=_int(ds.get("SeriesNumber")),
            instances=_int(ds.get("NumberOfSeriesRelatedInstances")),
            study_date=str(ds.get("StudyDate", "") or ""),
            patient_name=str(ds.get("PatientName", "") or ""),
        )


@dataclass(frozen=True)
class SeriesFilter:
    """Which series to take. Empty fields match everything.

    ``modality``: DICOM Modality values; ``description``: a regular expression searched in the
    SeriesDescription, case-insensitive; ``date_from``/``date_to``: the StudyDate range, inclusive.
    """

    study_uid: str | None = None
    series_uid: str | None = None
    patient_id: str | None = None
    modality: tuple[str, ...] = ()
    description: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def __post_init__(self) -> None:
        if self.description is not None:
            try:
                re.compile(self.description)
            except re.error as exc:
                raise ConfigError(f"--series-description: invalid regex {self.description!r} ({exc})") from None
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ConfigError(f"study date range starts after it ends ({self.date_from} > {self.date_to})")

    def study_keys(self) -> dict[str, str]:
        """Study-level keys for the archive (PatientID, StudyInstanceUID, StudyDate range)."""
        keys = {"PatientID": self.patient_id, "StudyInstanceUID": self.study_uid, "StudyDate": self._date_range()}
        return {k: v for k, v in keys.items() if v}

    def series_keys(self) -> dict[str, str]:
        """Series-level keys for the archive (SeriesInstanceUID, one Modality)."""
        keys = {"SeriesInstanceUID": self.series_uid, "Modality": self.modality[0] if len(self.modality) == 1 else None}
        return {k: v for k, v in keys.items() if v}

    def _date_range(self) -> str | None:
        if not (self.date_from or self.date_to):
            return None
        start = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        end = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return f"{start}-{end}"

    def matches(self, series: RemoteSeries) -> bool:
        """True when ``series`` passes every filter (checked here whatever the archive did)."""
        if self.study_uid and series.study_uid != self.study_uid:
            return False
        if self.series_uid and series.series_uid != self.series_uid:
            return False
        if self.patient_id and series.patient_id != self.patient_id:
            return False
        if self.modality and series.modality.upper() not in {m.upper() for m in self.modality}:
            return False
        if self.description and not re.search(self.description, series.description or "", re.I):
            return False
        return self._date_matches(series.study_date)

    def _date_matches(self, text: str) -> bool:
        if not (self.date_from or self.date_to):
            return True
        try:
            when = datetime.strptime((text or "")[:8], "%Y%m%d").date()
        except ValueError:
            return False  # a date range was asked for and the study has no usable date
        return (not self.date_from or when >= self.date_from) and (not self.date_to or when <= self.date_to)


def parse_date_range(text: str) -> tuple[date | None, date | None]:
    """``FROM-TO``, ``FROM-`` or ``-TO`` with dates as ``YYYYMMDD`` (or ``FROM..TO`` with ``YYYY-MM-DD``).

    Raises ConfigError naming the accepted forms.
    """
    text = text.strip()
    if ".." in text:
        start, _, end = text.partition("..")
    elif re.fullmatch(r"\d{0,8}-\d{0,8}", text):
        start, _, end = text.partition("-")
    else:
        start, end = text, text
    try:
        return _date(start), _date(end)
    except ValueError:
        raise ConfigError(
            f"--study-date {text!r}: use YYYYMMDD-YYYYMMDD (either end may be left out), "
            "YYYY-MM-DD..YYYY-MM-DD, or one date"
        ) from None


def _date(text: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(text)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
