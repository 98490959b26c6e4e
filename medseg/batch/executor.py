"""The contract between the batch driver and its executors (local processes, Ray actors).

An executor owns the workers; the driver owns the queue and the ledger. The driver asks which
workers are free, submits one case to each, and polls for :data:`Event` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from medseg.batch.engine import CaseOutcome
from medseg.cases import InputCase


@dataclass(frozen=True)
class Loaded:
    """A worker loaded the model and is ready (sent once per worker process or actor)."""

    worker: str
    host: str
    pid: int
    seconds: float


@dataclass(frozen=True)
class Finished:
    """A worker finished a case (successfully or not; see ``outcome.ok``)."""

    worker: str
    outcome: CaseOutcome


@dataclass(frozen=True)
class Lost:
    """A worker died or was killed (crash, out of memory, timeout) while running ``case_id``."""

    worker: str
    case_id: str
    reason: str


@dataclass(frozen=True)
class StartFailed:
    """A worker could not load the model; ``user_error`` when it was a MedsegError (bad model folder)."""

    worker: str
    message: str
    user_error: bool


Event = Loaded | Finished | Lost | StartFailed


class Executor(Protocol):
    """Runs cases on workers that each hold one loaded model."""

    name: str

    def start(self) -> None:
        """Start the workers (they load the model in the background)."""

    def free_workers(self) -> list[str]:
        """Workers that have loaded the model and have no case."""

    def submit(self, worker: str, case: InputCase) -> None:
        """Give ``case`` to the free ``worker``."""

    def busy(self) -> bool:
        """True while any case is in flight."""

    def poll(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` seconds and return what happened (may be empty)."""

    def stop(self, abort: bool = False) -> None:
        """Stop all workers (at once when ``abort``)."""
