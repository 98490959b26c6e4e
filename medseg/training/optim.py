"""Optimisers, the learning-rate schedule and gradient clipping.

Default (nnU-Net): SGD, momentum 0.99, Nesterov, lr 1e-2, weight decay 3e-5, poly decay
``lr * (1 - p) ** 0.9`` and gradient-norm clipping at 12. The schedule is a pure function of
training *progress* ``p``: ``iteration / total_iterations``, or, under a wall-clock budget, the
larger of that and ``elapsed / budget``, so a time-limited run still anneals to its end and a
resumed run continues the same curve exactly. A resumed run with a different budget (``--minutes``,
``[budget] epochs``) follows the curve of the new budget from the progress already made
(:meth:`LRSchedule.set_budget`), so extending a finished run raises the lr again above 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from medseg.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("poly", "cosine", "constant")


def build_optimizer(params: Iterable[torch.nn.Parameter], config) -> torch.optim.Optimizer:
    """An optimiser from an OptimizerConfig (name, lr, momentum, nesterov, weight_decay)."""
    params = list(params)
    name, lr, wd = config.name, config.lr, config.weight_decay
    if name == "sgd":
        if config.nesterov and config.momentum <= 0:
            raise ConfigError("[optimizer] nesterov = true needs momentum > 0; set momentum or nesterov = false")
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def schedule_factor(kind: str, progress: float) -> float:
    """The learning-rate multiplier at ``progress`` in [0, 1]: poly (1-p)^0.9, cosine, or constant 1."""
    p = min(max(progress, 0.0), 1.0)
    if kind == "poly":
        return (1.0 - p) ** 0.9
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if kind == "constant":
        return 1.0
    raise ConfigError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")


class LRSchedule:
    """Sets every parameter group's lr to ``base_lr * schedule_factor(kind, progress)``.

    ``progress = max(iteration / total_iterations, elapsed_seconds / budget_seconds)`` (the time
    term only with a budget). State (base lrs, totals) round-trips through ``state_dict``.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, kind: str, total_iterations: int, budget_seconds: float | None = None
    ) -> None:
        schedule_factor(kind, 0.0)  # validates the name
        self.optimizer = optimizer
        self.kind = kind
        self.total_iterations = max(int(total_iterations), 1)
        self.budget_seconds = budget_seconds
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]

    def progress(self, iteration: int, elapsed_seconds: float = 0.0) -> float:
        """Fraction of training done, in [0, 1]."""
        p = iteration / self.total_iterations
        if self.budget_seconds:
            p = max(p, elapsed_seconds / self.budget_seconds)
        return min(p, 1.0)

    def step(self, iteration: int, elapsed_seconds: float = 0.0) -> float:
        """Set the lr for ``iteration``; returns the lr of the first group."""
        factor = schedule_factor(self.kind, self.progress(iteration, elapsed_seconds))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        return self.optimizer.param_groups[0]["lr"]

    def set_budget(self, total_iterations: int, budget_seconds: float | None) -> bool:
        """Follow a new iteration total and wall-clock budget (None: no time budget) from now on.

        Needs the budget of the run as it continues (a resumed run's recipe and options). Promises
        that later :meth:`step` calls measure progress against it; returns True when it changed.
        """
        total = max(int(total_iterations), 1)
        seconds = float(budget_seconds) if budget_seconds else None
        changed = (total, seconds) != (self.total_iterations, self.budget_seconds)
        self.total_iterations, self.budget_seconds = total, seconds
        return changed

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "total_iterations": self.total_iterations,
            "budget_seconds": self.budget_seconds,
            "base_lrs": list(self.base_lrs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kind = str(state["kind"])
        self.total_iterations = int(state["total_iterations"])
        self.budget_seconds = state["budget_seconds"]
        self.base_lrs = [float(v) for v in state["base_lrs"]]


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (no-op when <= 0); returns the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm <= 0 or not params:
        return float("nan")
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
