"""When is a series complete? Archives and modalities send a series instance by instance, and
nothing in DICOM says "this was the last one". A series counts as complete once it has stopped
growing for a settle time: :class:`SettleTracker` for series seen by polling an archive,
:func:`stable_folders` for series received into a spool folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from medseg.pacs.query import RemoteSeries


class SettleTracker:
    """Remembers each series' instance count and since when it has had it (in memory: after a
    restart the settle time simply starts again, so nothing is lost)."""

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self._clock = clock
        self._seen: dict[str, tuple[int | None, float]] = {}

    def ready(self, found: Sequence[RemoteSeries]) -> list[RemoteSeries]:
        """The series of ``found`` whose instance count has not changed for ``settle`` seconds.

        Needs to be called once per poll with every series the poll found.
        """
        now = self._clock()
        ready = []
        for series in found:
            count, since = self._seen.get(series.series_uid, (series.instances, now))
            if count != series.instances:
                count, since = series.instances, now
            self._seen[series.series_uid] = (count, since)
            if now - since >= self.settle:
                ready.append(series)
        return ready

    def forget(self, series_uid: str) -> None:
        """Stop tracking a series (it was handed on)."""
        self._seen.pop(series_uid, None)


def stable_folders(spool: Path, settle: float, now: float | None = None) -> list[Path]:
    """Series folders ``spool/<study>/<series>`` whose newest file is at least ``settle`` seconds old.

    Folders still receiving (newer files, or temporary ``.part`` files of a write in progress) are left out.
    """
    now = time.time() if now is None else now
    stable = []
    for folder in sorted(p for p in spool.glob("*/*") if p.is_dir()):
        newest = newest_change(folder)
        if newest is not None and now - newest >= settle:
            stable.append(folder)
    return stable


def newest_change(folder: Path) -> float | None:
    """The newest modification time of the files in ``folder``; None while it is empty or a file is
    being written (a hidden temporary file, or a file that vanished while looking)."""
    try:
        files = list(folder.iterdir())
        if not files or any(f.name.startswith(".") for f in files):
            return None
        return max(f.stat().st_mtime for f in files)
    except FileNotFoundError:
        return None
