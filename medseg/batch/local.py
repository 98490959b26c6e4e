"""Local batch executor: N worker processes (spawn context), each loading the model once.

Each worker runs reading, preprocessing, the network and writing for its case, so one worker's
file I/O overlaps another's network. The driver talks to every worker over its own pipe and
watches its process: a worker that crashes (segfault, out-of-memory kill) or exceeds the case
timeout costs only its current case, which is recorded as failed, and is replaced by a fresh
worker. Workers die with the driver (Linux ``PR_SET_PDEATHSIG``, plus a watcher thread), so a
``kill -9`` of the driver leaves no orphan still writing outputs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from medseg.batch.engine import Engine, error_text, execute_case, worker_name
from medseg.batch.executor import Event, Finished, Loaded, Lost, StartFailed
from medseg.cases import InputCase
from medseg.errors import MedsegError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- worker side
def _die_with_parent(parent_pid: int) -> None:
    """Make this process exit when the driver dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(conn: Connection, engine: Engine, outdir: str, threads: int, parent_pid: int, log_level: int) -> None:
    """Entry point of a worker process: load the model once, then run cases until told to stop."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C means
    logging.basicConfig(level=log_level, format="%(levelname)s worker %(process)d %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        state = engine.load(threads)
    except BaseException as exc:
        conn.send(("start_failed", error_text(exc), isinstance(exc, MedsegError)))
        return
    conn.send(("loaded", socket.gethostname(), os.getpid(), time.perf_counter() - start))
    while True:
        try:
            case = conn.recv()
        except (EOFError, OSError):
            return
        if case is None:
            return
        conn.send(("finished", execute_case(engine, state, case, Path(outdir))))


# ----------------------------------------------------------------------------- driver side
@dataclass
class _Slot:
    process: Any
    conn: Connection
    name: str
    ready: bool = False
    case_id: str | None = None
    since: float = 0.0


class LocalExecutor:
    """``workers`` local processes; ``timeout`` (seconds, optional) bounds one case."""

    name = "local"

    def __init__(self, engine: Engine, outdir: Path, workers: int, threads: int, timeout: float | None = None) -> None:
        self.engine = engine
        self.outdir = Path(outdir)
        self.workers = workers
        self.threads = threads
        self.timeout = timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []

    def start(self) -> None:
        """Spawn the workers; they load the model concurrently."""
        self._slots = [self._spawn() for _ in range(self.workers)]

    def _spawn(self) -> _Slot:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main,
            args=(child_conn, self.engine, str(self.outdir), self.threads, os.getpid(), logging.getLogger().level),
            name="medseg-batch-worker",
        )
        process.start()
        child_conn.close()
        return _Slot(process, parent_conn, f"{socket.gethostname()}:{process.pid}")

    def free_workers(self) -> list[str]:
        """Workers that are loaded and idle."""
        return [s.name for s in self._slots if s.ready and s.case_id is None]

    def submit(self, worker: str, case: InputCase) -> None:
        """Send ``case`` to ``worker``."""
        slot = next(s for s in self._slots if s.name == worker)
        slot.case_id, slot.since = case.case_id, time.monotonic()
        slot.conn.send(case)

    def busy(self) -> bool:
        """True while a case is in flight."""
        return any(s.case_id is not None for s in self._slots)

    def poll(self, timeout: float) -> list[Event]:
        """Messages from workers, deaths and timeouts seen within ``timeout`` seconds."""
        waitables = [s.conn for s in self._slots] + [s.process.sentinel for s in self._slots]
        wait(waitables, timeout=timeout)
        events: list[Event] = []
        for slot in list(self._slots):
            events.extend(self._drain(slot))
            if slot.process.exitcode is not None:
                events.extend(self._replace_dead(slot))
            elif self._overdue(slot):
                events.extend(self._kill_overdue(slot))
        return events

    def _drain(self, slot: _Slot) -> list[Event]:
        events: list[Event] = []
        try:
            while slot.conn.poll():
                message = slot.conn.recv()
                events.append(self._event(slot, message))
        except (EOFError, OSError):
            pass  # the process is gone; its sentinel tells the rest
        return events

    def _event(self, slot: _Slot, message: tuple) -> Event:
        kind = message[0]
        if kind == "loaded":
            slot.ready = True
            return Loaded(slot.name, message[1], message[2], message[3])
        if kind == "start_failed":
            return StartFailed(slot.name, message[1], message[2])
        slot.case_id = None
        return Finished(slot.name, message[1])

    def _overdue(self, slot: _Slot) -> bool:
        return self.timeout is not None and slot.case_id is not None and time.monotonic() - slot.since > self.timeout

    def _kill_overdue(self, slot: _Slot) -> list[Event]:
        case_id = slot.case_id
        slot.process.kill()
        slot.process.join()
        self._slots[self._slots.index(slot)] = self._spawn()
        return [Lost(slot.name, case_id or "", f"timed out after {self.timeout:g} s; the worker was stopped")]

    def _replace_dead(self, slot: _Slot) -> list[Event]:
        code = slot.process.exitcode
        slot.conn.close()
        reason = _exit_reason(code)
        if not slot.ready:
            self._slots.remove(slot)
            return [StartFailed(slot.name, f"worker process {reason} while loading the model", False)]
        self._slots[self._slots.index(slot)] = self._spawn()
        if slot.case_id is None:
            return []
        return [
            Lost(slot.name, slot.case_id, f"worker process {reason} while running this case (out of memory or a crash)")
        ]

    def stop(self, abort: bool = False) -> None:
        """Ask workers to finish (or kill them when ``abort``) and reap them."""
        for slot in self._slots:
            try:
                if not abort and slot.process.is_alive():
                    slot.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        deadline = time.monotonic() + (0 if abort else 10)
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()
        self._slots = []


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


__all__ = ["LocalExecutor", "worker_main", "worker_name"]
