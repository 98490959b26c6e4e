"""Typed errors. A :class:`MedsegError` is a *user* error: bad input, bad option, bad path.

The CLI prints its message as one line and exits with code 2; any other exception is an
internal fault (exit code 1). Messages say what was wrong and what to do about it.
"""

from __future__ import annotations


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
