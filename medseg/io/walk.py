"""Walking an input folder tree: the one walk of DICOM discovery and of volume-file discovery.

Iterative, so a tree nested thousands of folders deep is walked without RecursionError; a folder
the system refuses to list (path too long, permission denied) is returned with the reason instead
of stopping the walk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import printable


@dataclass(frozen=True)
class Walk:
    """What :func:`walk_files` found: regular ``files`` (sorted per folder, depth first) and the
    ``unlisted`` folders with the reason each could not be listed (a few words)."""

    files: list[Path] = field(default_factory=list)
    unlisted: list[tuple[Path, str]] = field(default_factory=list)


#: paths longer than this are shortened in messages (deeply nested exports)
PATH_LIMIT = 160


def short_path(path: Path | str) -> str:
    """``path`` cleaned for a terminal (:func:`printable`), ``...`` + its end when very long."""
    text = printable(path)
    return text if len(text) <= PATH_LIMIT else "..." + text[-(PATH_LIMIT - 3) :]


def os_reason(exc: OSError) -> str:
    """``permission denied``, ``file name too long``...: what the system said, in a few words."""
    return printable((exc.strerror or type(exc).__name__).lower())


def walk_files(root: Path) -> Walk:
    """Every regular file under the folder ``root``: hidden files and folders and symbolic links to
    folders skipped (symbolic links to files kept); needs ``root`` to be a folder."""
    found = Walk()
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            subfolders, names = _list(folder)
        except OSError as exc:
            found.unlisted.append((folder, os_reason(exc)))
            continue
        found.files.extend(folder / name for name in names)
        stack.extend(folder / name for name in reversed(subfolders))
    return found


def _list(folder: Path) -> tuple[list[str], list[str]]:
    """(sub-folder names, regular file names) of one folder, sorted, without hidden entries."""
    subfolders, names = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.name)
            elif entry.is_file():
                names.append(entry.name)
    return sorted(subfolders), sorted(names)
