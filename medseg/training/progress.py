"""The training progress bar: progress against whichever budget ends the run first.

A run stops at its epoch budget (``epochs x iterations_per_epoch`` iterations) or its wall-clock
budget (``[budget] minutes``), whichever comes first. :func:`bar_state` (a pure function) decides
what the bar shows: iterations of the iteration total when the iterations end first (or there is
no time budget), else seconds spent of the seconds budgeted, with the time left from that budget.
Which one ends first is estimated from this session's speed; until the first iteration is timed a
run with a time budget shows the time bar. :class:`TrainingBar` draws it with tqdm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import SupportsFloat

#: seconds between redraws of the bar
REFRESH_SECONDS = 0.5


@dataclass(frozen=True)
class BarState:
    """What the bar shows: ``done`` of ``total`` in ``unit`` ("it" iterations or "s" seconds) and the
    estimated ``seconds_left`` (None while unknown)."""

    done: float
    total: float
    unit: str
    seconds_left: float | None


def bar_state(
    iteration: int,
    total_iterations: int,
    elapsed_seconds: float,
    budget_seconds: float | None,
    seconds_per_iteration: float | None,
) -> BarState:
    """The bar for a run at ``iteration`` of ``total_iterations`` after ``elapsed_seconds`` of training.

    Needs ``budget_seconds`` (None without a time budget) and the measured ``seconds_per_iteration``
    (None before any iteration was timed). Promises the time bar (seconds of ``budget_seconds``)
    when the time budget is expected to end the run first, else the iteration bar, each with the
    seconds left until that budget ends.
    """
    remaining = max(total_iterations - iteration, 0)
    left_by_iterations = remaining * seconds_per_iteration if seconds_per_iteration is not None else None
    if budget_seconds is not None:
        left_by_time = max(budget_seconds - elapsed_seconds, 0.0)
        if left_by_iterations is None or left_by_time <= left_by_iterations:
            return BarState(min(elapsed_seconds, budget_seconds), budget_seconds, "s", left_by_time)
    return BarState(float(iteration), float(total_iterations), "it", left_by_iterations)


def format_state(state: BarState, iteration: int, loss: float | None = None) -> str:
    """The text beside the bar, e.g. ``54/120 s, 01:06 left, it 80, loss 0.3100``."""
    parts = [f"{state.done:.0f}/{state.total:.0f} {state.unit}"]
    parts.append(f"{format_seconds(state.seconds_left)} left" if state.seconds_left is not None else "? left")
    if state.unit == "s":
        parts.append(f"it {iteration}")
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    return ", ".join(parts)


def format_seconds(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from one hour on."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class TrainingBar:
    """A tqdm bar showing :func:`bar_state`; silent when ``enabled`` is False.

    Needs the run's iteration total and time budget, and where the run starts (a resumed run's
    iteration and seconds spent); the speed is measured over this session only.
    """

    def __init__(
        self,
        name: str,
        total_iterations: int,
        budget_seconds: float | None,
        iteration: int,
        elapsed_seconds: float,
        enabled: bool,
    ) -> None:
        from tqdm.auto import tqdm

        self.total_iterations, self.budget_seconds = total_iterations, budget_seconds
        self.start = (iteration, elapsed_seconds)
        self.loss: SupportsFloat | None = None
        self._drawn = 0.0
        self.bar = _bar_class(tqdm)(
            total=1.0,
            desc=name,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {status}",
            dynamic_ncols=True,
            disable=None if enabled else True,
            leave=False,
        )

    def state(self, iteration: int, elapsed_seconds: float) -> BarState:
        """The bar's state now (see :func:`bar_state`)."""
        done = iteration - self.start[0]
        speed = (elapsed_seconds - self.start[1]) / done if done > 0 else None
        return bar_state(iteration, self.total_iterations, elapsed_seconds, self.budget_seconds, speed)

    def show(
        self, iteration: int, elapsed_seconds: float, loss: SupportsFloat | None = None, force: bool = False
    ) -> None:
        """Redraw (at most every :data:`REFRESH_SECONDS` unless ``force``) for the run's position now.

        ``loss`` (a float or a 0-d tensor) is read only when the bar is drawn (no GPU sync otherwise).
        """
        if loss is not None:
            self.loss = loss
        now = time.monotonic()
        if self.bar.disable or (not force and now - self._drawn < REFRESH_SECONDS):
            return
        self._drawn = now
        state = self.state(iteration, elapsed_seconds)
        self.bar.total, self.bar.n = state.total, state.done
        self.bar.status = format_state(state, iteration, None if self.loss is None else float(self.loss))
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _bar_class(base: type) -> type:
    """``base`` (a tqdm class) with a ``{status}`` field for its ``bar_format`` (tqdm's documented way
    to add fields: override ``format_dict``)."""

    class Bar(base):
        status = ""

        @property
        def format_dict(self) -> dict:
            return {**super().format_dict, "status": self.status}

    return Bar
