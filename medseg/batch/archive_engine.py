"""An :class:`~medseg.batch.engine.Engine` around another one for archive work: it retrieves a case
found in an archive into the run's cache before the inner engine segments it, removes the
retrieved files afterwards, and gives every DICOM result (SEG) stable UIDs so that a redone case
replaces its result in the archive instead of adding a second one.

Retrieval runs in the workers, so with ``--workers N`` N series are fetched and segmented at once
(the concurrency bound), and an archive that goes away mid-run is waited for by the worker that
needs it (back-off of the archive settings), while finished cases stay finished.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from medseg.batch.engine import Engine, ModelIdentity
from medseg.cases import InputCase

if TYPE_CHECKING:
    from medseg.pacs import Archive, ArchiveSettings

#: the run cache of retrieved series, inside OUTDIR (removed case by case, and at the start of a run)
CACHE_DIR = ".archive-cache"
#: outputs that are DICOM objects derived from the source series (sent back by --push-to)
DICOM_RESULTS = ("seg", "rtstruct")


class ArchiveState(NamedTuple):
    """What a worker holds: the inner engine's state, the model version, an open archive (or None)."""

    inner: Any
    version: str
    archive: Archive | None


@dataclass(frozen=True)
class ArchiveEngine:
    """``inner`` plus retrieval from ``source`` (None: cases are local files) into ``cache`` (kept when
    ``keep_cache``). Picklable; the archive settings, credentials included, travel with it."""

    inner: Engine
    source: ArchiveSettings | None
    cache: Path
    keep_cache: bool = False

    def identity(self) -> ModelIdentity:
        """The inner engine's model identity."""
        return self.inner.identity()

    def in_channels(self) -> int:
        """The inner engine's input channels."""
        return self.inner.in_channels()

    def load(self, threads: int) -> ArchiveState:
        """Load the inner engine and open the archive (once per worker)."""
        from medseg.pacs import open_archive

        archive = open_archive(self.source) if self.source is not None else None
        return ArchiveState(self.inner.load(threads), self.inner.identity().version, archive)

    def run_case(self, state: ArchiveState, case: InputCase, out_dir: Path) -> Any:
        """Retrieve (archive cases), segment with the inner engine, give DICOM results stable UIDs.

        Adds ``retrieve`` to the timings; the retrieved files are removed unless ``keep_cache``.
        """
        timings: dict[str, float] = {}
        folder = self.cache / case.case_id
        try:
            if case.remote is not None:
                case = self._fetch(state, case, folder, timings)
            result = self.inner.run_case(state.inner, case, out_dir)
        finally:
            if not self.keep_cache:
                shutil.rmtree(folder, ignore_errors=True)
        stable_result_uids(result.outputs, case, state.version)
        return replace(result, timings={**result.timings, **timings})

    def _fetch(self, state: ArchiveState, case: InputCase, folder: Path, timings: dict[str, float]) -> InputCase:
        from medseg.cases.archive import fetch_case

        if state.archive is None:
            raise RuntimeError(f"case {case.case_id} comes from an archive but the engine has no archive settings")
        start = time.perf_counter()
        shutil.rmtree(folder, ignore_errors=True)  # left by a killed run: start clean
        fetched = fetch_case(case, state.archive, folder)
        timings["retrieve"] = round(time.perf_counter() - start, 4)
        return fetched


def stable_result_uids(outputs: dict[str, Path], case: InputCase, model_version: str) -> None:
    """Give each DICOM result of ``case`` series and instance UIDs derived from the source series and the
    model version: the same source and model always give the same UIDs (one SEG per series in an archive)."""
    from medseg.pacs import give_stable_uids

    if not case.series_uid:
        return
    for name in DICOM_RESULTS:
        if name in outputs:
            give_stable_uids(Path(outputs[name]), f"{name}|{case.series_uid}|{model_version}")


def clear_cache(outdir: Path) -> None:
    """Remove the run cache left in ``outdir`` by an earlier (killed) run."""
    shutil.rmtree(Path(outdir) / CACHE_DIR, ignore_errors=True)
