"""Waiting out an unreachable archive: exponential back-off with a total budget.

Archive adapters raise :class:`Unreachable` for failures that a restart of the archive or the
network cures (connection refused or reset, time-outs, HTTP 429/502/503/504, DIMSE associations
that cannot be opened or are aborted). :func:`call_with_backoff` retries those and nothing else;
every other error goes straight to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from medseg.errors import ArchiveDownError, ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Unreachable(Exception):
    """The archive could not be reached this time; the message says how (never with credentials)."""


@dataclass(frozen=True)
class Backoff:
    """Wait ``first`` seconds after the first failure, then ``factor`` times longer each time up to
    ``cap``; give up when the next wait would pass ``max_wait`` seconds in total (0: never retry)."""

    max_wait: float = 600.0
    first: float = 1.0
    factor: float = 2.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_wait < 0 or self.first <= 0 or self.factor < 1 or self.cap < self.first:
            raise ConfigError(f"invalid back-off {self}; max_wait >= 0, first > 0, factor >= 1, cap >= first")

    def delays(self) -> list[float]:
        """The waits in order, until the budget is spent."""
        delays, total, delay = [], 0.0, self.first
        while total + delay <= self.max_wait:
            delays.append(delay)
            total += delay
            delay = min(self.cap, delay * self.factor)
        return delays


def call_with_backoff(
    call: Callable[[], T],
    backoff: Backoff,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried after each :class:`Unreachable` with the waits of ``backoff``.

    ``what`` names the operation and archive for messages (no credentials). Promises a warning
    per wait and, when the budget is spent, an :class:`~medseg.errors.ArchiveDownError` saying how long it waited.
    """
    waited = 0.0
    for delay in [*backoff.delays(), None]:
        try:
            result = call()
        except Unreachable as exc:
            if delay is None:
                raise ArchiveDownError(
                    f"{what}: the archive stayed unreachable for {waited:.0f} s ({exc}); check that it runs and "
                    "the address is right, then rerun (finished work is kept)"
                ) from None
            log.warning("%s: archive unreachable (%s); retrying in %.0f s", what, exc, delay)
            sleep(delay)
            waited += delay
            continue
        if waited:
            log.info("%s: archive reachable again after %.0f s", what, waited)
        return result
    raise AssertionError("unreachable")  # pragma: no cover (the loop returns or raises)
