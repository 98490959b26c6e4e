"""Typed errors. A :class:`MedsegError` is a *user* error: bad input, bad option, bad path.

The CLI prints its message as one line and exits with code 2; any other exception is an
internal fault (exit code 1). Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable, Sequence


class MedsegError(Exception):
    """A problem with the user's input or options; the message is shown as is."""

    exit_code = 2


class InputError(MedsegError):
    """A path, file or folder that cannot be used (missing, empty, unreadable, wrong kind)."""


class DicomError(InputError):
    """A DICOM export that cannot be turned into a volume as asked."""


class GeometryError(InputError):
    """Voxel geometry that is inconsistent (tilt, gaps, duplicates, grid mismatch)."""


class ConfigError(MedsegError):
    """A recipe, plan or command-line option that is invalid."""


class OutputError(MedsegError):
    """An output path that cannot be written."""


def did_you_mean(value: object, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"did you mean 'x'? "`` for the choice closest to ``value``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}? " if close else ""


def check_choice(what: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` when it is one of ``choices``; else a ConfigError naming the closest one and all."""
    if value in choices:
        return value
    raise ConfigError(f"unknown {what} {value!r}; {did_you_mean(value, choices)}choose one of {', '.join(choices)}")


#: characters that end or break a line on a terminal; :func:`printable` turns each into one space
_LINE_BREAKS = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029")
#: Unicode categories a terminal must never receive raw: controls (C0, DEL, C1: NUL, ESC...),
#: format characters (bidi overrides such as U+202E, zero-width marks), surrogates
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def printable(text: object, limit: int | None = None) -> str:
    """``text`` made safe to show on a terminal, in a log line or a one-line message.

    Needs any object (``str()`` is taken). Promises a single line without control, format or
    bidi characters: tabs, CR, LF and other line breaks become one space; every other control
    or format character (NUL, ESC of terminal escape sequences, U+202E RIGHT-TO-LEFT OVERRIDE,
    zero-width characters) is shown escaped as ``\\xNN`` / ``\\uNNNN``, so nothing is hidden and
    nothing is interpreted. NUL padding at either end is dropped, surrounding spaces stripped;
    with ``limit`` the result is cut to that many characters (ending in ``...``).
    """
    value = str(text).strip(" \x00")
    cleaned = "".join(_clean_char(char) for char in value).strip()
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 3, 0)] + "..."
    return cleaned


def _clean_char(char: str) -> str:
    if char in _LINE_BREAKS:
        return " "
    if unicodedata.category(char) not in _HIDDEN_CATEGORIES:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class ArchiveError(MedsegError):
    """A DICOM archive (PACS) that refuses a request, rejects the credentials or stays unreachable."""


class ArchiveDownError(ArchiveError):
    """An archive that stayed unreachable for the whole back-off budget."""
