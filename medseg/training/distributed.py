"""Data-parallel training over several processes (GPUs or nodes) with ``torchrun``.

``torchrun --nproc-per-node 4 -m medseg train RECIPE`` (or ``--nnodes``/``--rdzv-endpoint`` for
several machines) starts one process per GPU. Each reads its rank from the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and:

* joins the process group (NCCL on GPUs, gloo on CPUs) and uses GPU ``LOCAL_RANK``;
* wraps the network in ``DistributedDataParallel``, so gradients are all-reduced (averaged)
  every step and every rank keeps identical weights;
* trains on its own share of each batch, drawn from patch-sampler seeds sharded by rank (the
  equivalent of a ``DistributedSampler`` for an endless random sampler): the recipe's batch size
  is the global batch, split across ranks, so learning rate and schedule keep their meaning;
* agrees with the other ranks on elapsed time (LR schedule and time budget), so control flow
  never diverges;
* writes checkpoints, logs and the model folder on rank 0 only.

Without those environment variables everything here is a no-op (one process, no group).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, number of processes, GPU index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when running with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0


def context_from_env(env: dict[str, str] | None = None) -> DistContext:
    """Rank, world size and local rank as ``torchrun`` sets them (one process when unset)."""
    env = dict(os.environ if env is None else env)
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start with torchrun") from None
    if not 0 <= rank < max(world, 1):
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}; start with torchrun")
    return DistContext(rank, max(world, 1), local)


def init_from_env(device: torch.device | None = None, timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group described by the environment (no-op for one process).

    Uses NCCL when ``device`` is CUDA, else gloo. Raises ConfigError when torchrun's variables
    are incomplete.
    """
    import torch.distributed as dist

    ctx = context_from_env()
    if not ctx.enabled or (dist.is_available() and dist.is_initialized()):
        return ctx
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ConfigError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set; start the training with torchrun")
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(
        "nccl" if cuda else "gloo", rank=ctx.rank, world_size=ctx.world_size, timeout=timedelta(minutes=timeout_minutes)
    )
    log.info("rank %d of %d joined the process group (%s)", ctx.rank, ctx.world_size, dist.get_backend())
    return ctx


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` for CUDA runs with several processes, else ``device`` unchanged."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(network: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``network`` in DistributedDataParallel when several processes run (else itself).

    Parameters are broadcast from rank 0 when wrapping, so all ranks start identical. Unused
    parameters are allowed: the deep-supervision loss skips the zero-weight lowest-resolution
    output (nnU-Net's weighting), so that head never receives a gradient.
    """
    if not ctx.enabled:
        return network
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        network, device_ids=ids, output_device=ids[0] if ids else None, find_unused_parameters=True
    )


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (for saving weights without ``module.`` prefixes)."""
    return getattr(network, "module", network)


def rank_seed(seed: int, ctx: DistContext) -> int:
    """The patch-sampler seed of this rank: independent streams per rank, reproducible per seed."""
    if not ctx.enabled:
        return seed
    return int(np.random.SeedSequence([seed, 7919, ctx.rank]).generate_state(1)[0] % 2**31)


def rank_batch_size(batch_size: int, ctx: DistContext) -> int:
    """This rank's share of the global ``batch_size`` (earlier ranks take the remainder).

    Raises ConfigError when the batch is smaller than the number of processes.
    """
    if not ctx.enabled:
        return batch_size
    if batch_size < ctx.world_size:
        raise ConfigError(
            f"batch size {batch_size} is smaller than the {ctx.world_size} training processes; "
            f"set [plan] batch_size to at least {ctx.world_size} in the recipe or start fewer processes"
        )
    share, extra = divmod(batch_size, ctx.world_size)
    return share + (1 if ctx.rank < extra else 0)


def for_rank(plan: Any, recipe: Any, spatial_dims: int, ctx: DistContext) -> tuple[Any, Any]:
    """The plan and recipe this rank's training loader should use: its batch share and seed."""
    if not ctx.enabled:
        return plan, recipe
    field_name = "config_3d" if spatial_dims == 3 else "config_2d"
    config = getattr(plan, field_name)
    plan = replace(plan, **{field_name: replace(config, batch_size=rank_batch_size(config.batch_size, ctx))})
    recipe = replace(recipe, runtime=replace(recipe.runtime, seed=rank_seed(recipe.runtime.seed, ctx)))
    return plan, recipe


def shard(items: Sequence[Any], ctx: DistContext) -> list[Any]:
    """Every ``world_size``-th item starting at ``rank`` (a DistributedSampler without padding)."""
    return list(items[ctx.rank :: ctx.world_size])


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (building plans and caches), then the others (reusing them)."""
    if not ctx.is_main:
        barrier(ctx)
    try:
        yield
    finally:
        if ctx.is_main:
            barrier(ctx)


def all_reduce(value: float, ctx: DistContext, op: str = "mean") -> float:
    """``value`` reduced over ranks: ``mean``, ``max`` or ``sum`` (itself for one process)."""
    if not ctx.enabled:
        return float(value)
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    result = float(tensor.item())
    return result / ctx.world_size if op == "mean" else result


def agreed(clock: Callable[[], float], ctx: DistContext) -> Callable[[], float]:
    """A clock whose readings are the maximum over ranks, so every rank sees the same time.

    Every rank must call it at the same points (the training loop does): it is a collective.
    """
    if not ctx.enabled:
        return clock
    return lambda: all_reduce(clock(), ctx, "max")


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (no-op for one process), after a barrier: a rank that tears its
    gloo connections down while a peer is still in a collective makes that peer abort."""
    import torch.distributed as dist

    if ctx.enabled and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
