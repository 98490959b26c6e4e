"""Keep patient names out of everything medseg writes or logs about a case.

PatientName is never stored. :func:`patient_name_parts` reads it from a series' headers at
discovery (``InputCase.redact``); its parts are only used to scrub text that might carry them
(error messages, export folder names in source paths, log records): :func:`redact` on strings,
:func:`redacting_logs` on every log record made while it is active, and :func:`held_logs` to hold
the records made before the names are known (during discovery) until they can be scrubbed.
This module is the one place for that machinery; ``medseg predict`` and ``medseg batch`` use it.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from medseg.io.dicom import SeriesInfo

REDACTED = "[redacted]"


def redact(text: str, terms: Sequence[str]) -> str:
    """``text`` with each term (case-insensitive, not inside a longer word) replaced by ``[redacted]``."""
    for term in terms:
        if term:
            text = re.sub(rf"(?<![A-Za-z]){re.escape(term)}(?![A-Za-z])", REDACTED, text, flags=re.I)
    return text


def name_parts(patient_name: str) -> tuple[str, ...]:
    """A DICOM PatientName (``Family^Given^Middle``) and its parts of 3+ characters, longest first."""
    parts = {patient_name.strip()} | {p for p in re.split(r"[\^\s=,]+", patient_name) if len(p) >= 3}
    return tuple(sorted((p for p in parts if p), key=len, reverse=True))


def patient_name_parts(info: SeriesInfo) -> tuple[str, ...]:
    """The PatientName of a series and its parts of 3+ letters, for redaction (empty if none).

    Uses the header datasets discovery kept, else reads the first file's header.
    """
    name = ""
    try:
        if info.frames:
            name = str(info.frames[0].header.dataset.get("PatientName", "") or "")
        elif info.files:
            import pydicom

            ds = pydicom.dcmread(info.files[0], stop_before_pixels=True, specific_tags=["PatientName"], force=True)
            name = str(ds.get("PatientName", "") or "")
    except Exception:  # unreadable headers are reported when the case runs
        return ()
    return name_parts(name)


def _redact_record(record: logging.LogRecord, terms: Sequence[str]) -> logging.LogRecord:
    message = record.getMessage()
    clean = redact(message, terms)
    if clean != message:
        record.msg, record.args = clean, ()
    return record


@contextmanager
def redacting_logs(terms: Sequence[str] | Callable[[], Sequence[str]]) -> Iterator[None]:
    """Scrub ``terms`` (or the terms a callable returns at the time) from every log record made inside."""
    if not terms:
        yield
        return
    previous = logging.getLogRecordFactory()
    get = terms if callable(terms) else (lambda: terms)

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        return _redact_record(previous(*args, **kwargs), get())  # type: ignore[arg-type]

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


class _Holder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def held_logs(terms: Callable[[], Iterable[str]]) -> Iterator[None]:
    """Hold every log record made inside; on exit scrub them with ``terms()`` and emit them."""
    root = logging.getLogger()
    handlers, holder = list(root.handlers), _Holder()
    root.handlers = [holder]
    try:
        yield
    finally:
        root.handlers = handlers
        found = tuple(terms())
        for record in holder.records:
            record = _redact_record(record, found)
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
