"""Typed errors. A :class:`MedsegError` is a *user* error: bad input, bad option, bad path.

The CLI prints its message as one line and exits with code 2; any other exception is an
internal fault (exit code 1). Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence


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


class ArchiveError(MedsegError):
    """A DICOM archive (PACS) that refuses a request, rejects the credentials or stays unreachable."""


class ArchiveDownError(ArchiveError):
    """An archive that stayed unreachable for the whole back-off budget."""
