"""Keep patient names out of everything medseg writes or logs about a case.

PatientName is never stored. :func:`patient_name_parts` reads it from a series' headers at
discovery (``InputCase.redact``); its parts are only used to scrub text that might carry them:
:func:`redact` is the one rule, applied to case ids (:class:`~medseg.cases.naming.Namer`), stored
text (ledger, reports, manifests, error messages), and log records (:func:`redacting_logs` on
every record made while it is active, :func:`held_logs` to hold the records made before the
names are known, during discovery, until they can be scrubbed). :func:`mentions_name` tells
whether a text carries a name (a PatientID that is the name is then not used in a case id).
This module is the one place for that machinery; ``medseg predict`` and ``medseg batch`` use it.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medseg.io.dicom import SeriesInfo

REDACTED = "[redacted]"
#: Fewest letters a name part needs to be redacted on its own (shorter ones only inside the whole name).
MIN_LETTERS = 3
#: Spellings of letters that ASCII exports and file names use instead (besides the accent-less letter).
_SPELLINGS = {
    "ä": ("ae",),
    "ö": ("oe",),
    "ü": ("ue",),
    "ß": ("ss",),
    "ø": ("o", "oe"),
    "æ": ("ae",),
    "å": ("aa",),
    "œ": ("oe",),
    "ł": ("l",),
    "đ": ("d",),
    "ð": ("d",),
    "þ": ("th",),
}
#: Not inside a longer word: no letter on that side, or a lower-to-upper case change (CamelCase).
_START = r"(?:(?<![^\W\d_])|(?-i:(?<=[a-z])(?=[A-Z])))"
_END = r"(?:(?![^\W\d_])|(?-i:(?<=[a-z])(?=[A-Z])))"


def redact(text: str, terms: Sequence[str]) -> str:
    """``text`` with every occurrence of a name term replaced by ``[redacted]`` (one pass).

    A term matches in any letter case, with or without accents (``ü`` also as ``u`` or ``ue``),
    with any separators or none between its parts (``O'Brien^Zoë`` matches ``OBRIEN_ZOE``), where
    it stands as a word: not inside a longer word, except at a CamelCase change (``T1Doe``).
    """
    pattern = _pattern(tuple(terms))
    if pattern is None or not text:
        return text
    return pattern.sub(REDACTED, _nfc(text))


def mentions_name(text: str | None, terms: Sequence[str]) -> bool:
    """True when :func:`redact` would change ``text`` (it carries a term)."""
    pattern = _pattern(tuple(terms))
    return bool(text and pattern is not None and pattern.search(_nfc(text)))


def name_parts(patient_name: str) -> tuple[str, ...]:
    """The terms to redact for a DICOM PersonName (``Family^Given^Middle``, ``=``-separated groups).

    Promises, longest first, each with at least :data:`MIN_LETTERS` letters: the whole name and
    each group, the name with family and given name swapped (``Given Family``), each component,
    and each part of a component (split at anything that is not a letter or digit:
    ``Müller-Lüdenscheidt`` gives ``Müller`` and ``Lüdenscheidt``).
    """
    terms = {patient_name.strip()}
    for group in patient_name.split("="):
        components = [c.strip() for c in group.split("^")]
        terms.add(group.strip())
        if len(components) > 1:
            terms.add(" ".join(c for c in (components[1], components[0]) if c))
        for component in components:
            terms.add(component)
            terms.update(re.split(r"[\W_]+", component))
    kept = {_nfc(t) for t in terms if sum(ch.isalpha() for ch in t) >= MIN_LETTERS}
    return tuple(sorted(kept, key=lambda t: (-len(t), t)))


def _nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _letter(char: str) -> str:
    """A regex for one letter of a name: itself, without its accent, or its ASCII spelling."""
    low = char.lower()
    plain = unicodedata.normalize("NFKD", low).encode("ascii", "ignore").decode("ascii")
    options = {low, *_SPELLINGS.get(low, ()), *((plain,) if plain else ())}
    if options == {low}:
        return re.escape(low)
    return "(?:" + "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True)) + ")"


def _term_regex(term: str) -> str | None:
    words = [w for w in re.split(r"[\W_]+", term) if w]
    if not words:
        return None
    return r"[\W_]*".join("".join(_letter(c) for c in word) for word in words)


@functools.lru_cache(maxsize=256)
def _pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled pattern for all ``terms`` (longest first), or None when there is nothing to find."""
    bodies = [b for b in (_term_regex(t) for t in sorted(set(terms), key=len, reverse=True) if t) if b]
    if not bodies:
        return None
    return re.compile(_START + "(?:" + "|".join(bodies) + ")" + _END, re.IGNORECASE)


def patient_name_parts(info: SeriesInfo) -> tuple[str, ...]:
    """The :func:`name_parts` of a series' PatientName, for redaction (empty if none).

    Uses the header datasets discovery kept, else reads the first file's header.
    """
    try:
        if info.frames:
            return name_parts(str(info.frames[0].header.dataset.get("PatientName", "") or ""))
    except Exception:  # unreadable headers are reported when the case runs
        return ()
    return name_parts(_patient_name(info.files[0])) if info.files else ()


def dicom_name_parts(paths: Iterable[Path], max_files: int = 64) -> tuple[str, ...]:
    """The :func:`name_parts` of the PatientName in the first DICOM file found at ``paths``
    (files, or folders searched in name order, at most ``max_files`` files tried); empty if none.

    For inputs whose series are only read when the case runs (a manifest row naming a DICOM folder).
    """
    tried = 0
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for file in files:
            if tried >= max_files:
                return ()
            tried += 1
            name = _patient_name(file)
            if name:
                return name_parts(name)
    return ()


def _patient_name(file: Path) -> str:
    """The PatientName of a DICOM file, or "" when it has none or is not DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["PatientName"], force=True)
        return str(ds.get("PatientName", "") or "")
    except Exception:  # not DICOM, or unreadable: reported when the case runs
        return ""


def _redact_record(record: logging.LogRecord, terms: Sequence[str]) -> logging.LogRecord:
    """``record`` with ``terms`` scrubbed from its message, and from its traceback (then made part of the message)."""
    if not terms:
        return record
    message = record.getMessage()
    if record.exc_info or record.stack_info:
        extra = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        message = "\n".join(t for t in (message, extra, record.stack_info or "") if t)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
    clean = redact(message, terms)
    if clean != record.msg or record.args:
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
        return _redact_record(previous(*args, **kwargs), get())

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
