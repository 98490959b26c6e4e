"""Ray batch executor: cases run as tasks on Ray actors that each hold one loaded model.

Same ledger semantics as the local executor, because the ledger is written by the driver only:
actors return a :class:`~medseg.batch.engine.CaseOutcome` and the driver records it. Actors
write their outputs straight into OUTDIR, so every node must see OUTDIR and the input at the
same paths (a shared file system); an actor that cannot see OUTDIR refuses to start. A dead
actor (node lost, out of memory) costs only its current case and is replaced.

Needs the optional extra ``medseg[distributed]`` (``pip install ray``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.batch.engine import Engine, error_text, execute_case
from medseg.batch.executor import Event, Finished, Loaded, Lost, StartFailed
from medseg.cases import InputCase
from medseg.errors import ConfigError, MedsegError
from medseg.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: File the driver writes into OUTDIR; actors read it to prove they see the same folder.
TOKEN_NAME = ".medseg-batch-token"


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'medseg[distributed]' (or pip install ray)") from None
    return ray


class CaseActor:
    """Holds one loaded model; ``run`` segments one case. Never raises for a bad case."""

    def __init__(self, engine: Engine, outdir: str, threads: int, token: str) -> None:
        self.engine, self.outdir, self.state = engine, Path(outdir), None
        self.error: tuple[str, bool] | None = None
        start = time.perf_counter()
        try:
            seen = (self.outdir / TOKEN_NAME).read_text() if (self.outdir / TOKEN_NAME).is_file() else None
            if seen != token:
                raise ConfigError(
                    f"node {socket.gethostname()} does not see the output folder {outdir}; "
                    "Ray workers need OUTDIR and the input on a shared file system"
                )
            self.state = engine.load(threads)
        except BaseException as exc:
            self.error = (error_text(exc), isinstance(exc, MedsegError))
        self.seconds = time.perf_counter() - start

    def ready(self) -> tuple[str, int, float, tuple[str, bool] | None]:
        """(host, pid, seconds to load, error or None)."""
        return socket.gethostname(), os.getpid(), self.seconds, self.error

    def run(self, case: InputCase) -> Any:
        """The :class:`CaseOutcome` of one case."""
        return execute_case(self.engine, self.state, case, self.outdir)


@dataclass
class _Actor:
    handle: Any
    name: str = ""
    ready: bool = False
    case_id: str | None = None
    ref: Any = None
    since: float = 0.0


class RayExecutor:
    """``workers`` Ray actors, each reserving ``threads`` CPUs and ``gpus_per_worker`` GPUs."""

    name = "ray"

    def __init__(
        self,
        engine: Engine,
        outdir: Path,
        workers: int,
        threads: int,
        timeout: float | None = None,
        address: str | None = None,
        gpus_per_worker: float = 0.0,
    ) -> None:
        self.engine, self.outdir, self.workers, self.threads = engine, Path(outdir), workers, threads
        self.timeout, self.address, self.gpus = timeout, address, gpus_per_worker
        self._actors: list[_Actor] = []
        self._pending: dict[Any, _Actor] = {}
        self._owns_ray = False
        self._token = secrets.token_hex(16)
        require_ray()  # fail before any case is touched

    def start(self) -> None:
        """Connect to (or start) Ray and create the actors; they load the model in parallel."""
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(
                address=self.address, include_dashboard=False, ignore_reinit_error=True, logging_level=logging.WARNING
            )
            self._owns_ray = True
        atomic_write_text(self.outdir / TOKEN_NAME, self._token)
        self._remote = ray.remote(num_cpus=self.threads, num_gpus=self.gpus, max_restarts=0)(CaseActor)
        for _ in range(self.workers):
            self._spawn()

    def _spawn(self) -> None:
        actor = _Actor(self._remote.remote(self.engine, str(self.outdir), self.threads, self._token))
        actor.ref = actor.handle.ready.remote()
        self._pending[actor.ref] = actor
        self._actors.append(actor)

    def free_workers(self) -> list[str]:
        """Actors that are loaded and idle."""
        return [a.name for a in self._actors if a.ready and a.case_id is None]

    def submit(self, worker: str, case: InputCase) -> None:
        """Start ``case`` on the actor named ``worker``."""
        actor = next(a for a in self._actors if a.name == worker)
        actor.case_id, actor.since = case.case_id, time.monotonic()
        actor.ref = actor.handle.run.remote(case)
        self._pending[actor.ref] = actor

    def busy(self) -> bool:
        """True while a case is in flight."""
        return any(a.case_id is not None for a in self._actors)

    def poll(self, timeout: float) -> list[Event]:
        """Finished loads and cases, lost actors and timeouts within ``timeout`` seconds."""
        import ray

        events: list[Event] = []
        if self._pending:
            done, _ = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
            if done:
                done, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
            for ref in done:
                events.extend(self._result(self._pending.pop(ref), ref))
        else:
            time.sleep(timeout)
        for actor in list(self._actors):
            if self.timeout is not None and actor.case_id and time.monotonic() - actor.since > self.timeout:
                self._pending.pop(actor.ref, None)
                events.append(self._replace(actor, f"timed out after {self.timeout:g} s; the worker was stopped"))
        return events

    def _result(self, actor: _Actor, ref: Any) -> list[Event]:
        import ray
        from ray.exceptions import RayActorError

        try:
            value = ray.get(ref)
        except RayActorError as exc:
            if not actor.ready:
                self._actors.remove(actor)
                return [
                    StartFailed(actor.name or "ray actor", f"the Ray actor died while loading the model ({exc})", False)
                ]
            return [self._replace(actor, f"the Ray worker died while running this case ({type(exc).__name__})")]
        except Exception as exc:  # a task-level failure (serialisation, ...): the actor lives on
            case_id, actor.case_id = actor.case_id, None
            return [Lost(actor.name, case_id or "", error_text(exc))]
        if not actor.ready:
            host, pid, seconds, error = value
            actor.name = f"{host}:{pid}"
            if error:
                self._actors.remove(actor)
                return [StartFailed(actor.name, error[0], error[1])]
            actor.ready = True
            return [Loaded(actor.name, host, pid, seconds)]
        actor.case_id = None
        return [Finished(actor.name, value)]

    def _replace(self, actor: _Actor, reason: str) -> Event:
        import ray

        ray.kill(actor.handle, no_restart=True)
        self._actors.remove(actor)
        self._spawn()
        return Lost(actor.name, actor.case_id or "", reason)

    def stop(self, abort: bool = False) -> None:
        """Kill the actors (and shut Ray down if this executor started it)."""
        import ray

        if not ray.is_initialized():
            return
        for actor in self._actors:
            ray.kill(actor.handle, no_restart=True)
        self._actors, self._pending = [], {}
        (self.outdir / TOKEN_NAME).unlink(missing_ok=True)
        if self._owns_ray:
            ray.shutdown()
