"""The inner training loop: one optimisation step, one epoch.

Device, precision and threads come from :mod:`medseg.model.runtime` (the one rule set shared
with inference). Losses are always computed in fp32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.training.optim import clip_gradients


@dataclass
class TrainStep:
    """One optimisation step: forward (autocast), fp32 loss, backward, clip, optimiser step."""

    network: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    scaler: torch.amp.GradScaler | None = None
    grad_clip: float = 12.0
    memory_format: torch.memory_format = torch.contiguous_format

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Train on ``{"image": (B,C,*patch), "label": (B,1,*patch)}``; returns the detached loss."""
        image = batch["image"].to(self.device, non_blocking=True).to(memory_format=self.memory_format)
        label = batch["label"].to(self.device, non_blocking=True)
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = self.network(image)
        loss = self.loss(outputs, label)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.network.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            clip_gradients(self.network.parameters(), self.grad_clip)
            self.optimizer.step()
        return loss.detach()


@dataclass
class EpochResult:
    """Mean training loss, iterations done and training seconds of one epoch."""

    loss: float
    iterations: int
    seconds: float


def run_epoch(
    step: TrainStep,
    batches: Iterator[Mapping[str, torch.Tensor]],
    iterations: int,
    set_lr: Callable[[int], float],
    start_iteration: int,
    on_iteration: Callable[[torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EpochResult:
    """Run up to ``iterations`` steps drawing from ``batches``; ``set_lr(global_iteration)`` before each.

    ``on_iteration(loss_tensor)`` is called after each step (progress bar); ``should_stop()``
    before each step ends the epoch early (wall-clock budget). A non-finite mean loss raises
    ConfigError naming the iteration.
    """
    start = time.perf_counter()
    total = torch.zeros((), device=step.device)
    done = 0
    for i in range(iterations):
        if should_stop is not None and should_stop():
            break
        set_lr(start_iteration + i)
        loss = step(next(batches))
        total += loss
        done += 1
        if on_iteration is not None:
            on_iteration(loss)
    mean = float(total) / max(done, 1)
    if not math.isfinite(mean):
        raise ConfigError(
            f"training loss became {mean} before iteration {start_iteration + done}; "
            'lower the learning rate or use precision = "fp32"'
        )
    return EpochResult(mean, done, time.perf_counter() - start)
