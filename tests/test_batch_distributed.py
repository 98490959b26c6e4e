"""Data-parallel training helpers: 2 gloo processes on CPU end with identical weights, equal to
one process training on both ranks' batches together."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.training.distributed import (DistContext, context_from_env, for_rank, main_first, rank_batch_size,
                                         rank_seed, shard)

STEPS, BATCH = 4, 2


def tiny_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.LeakyReLU(), nn.Conv3d(4, 3, 1))


def rank_batch(ctx: DistContext, step: int) -> dict[str, torch.Tensor]:
    """The batch this rank's sampler draws at ``step`` (rank-sharded seed)."""
    rng = np.random.default_rng([rank_seed(0, ctx), step])
    image = torch.from_numpy(rng.normal(size=(BATCH, 1, 6, 6, 6)).astype(np.float32))
    label = torch.from_numpy(rng.integers(0, 3, size=(BATCH, 1, 6, 6, 6)))
    return {"image": image, "label": label}


def make_step(network: nn.Module):
    from medseg.training.loop import TrainStep

    ce = nn.CrossEntropyLoss()
    loss = lambda out, label: ce(out.float(), label[:, 0].long())  # noqa: E731
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    return TrainStep(network, loss, optimizer, torch.device("cpu"), grad_clip=12.0)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from medseg.training.distributed import agreed, cleanup, init_from_env, unwrap, wrap

    torch.set_num_threads(1)
    ctx = init_from_env(torch.device("cpu"))
    torch.manual_seed(100 + rank)  # different local init: DDP must broadcast rank 0's weights
    network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.LeakyReLU(), nn.Conv3d(4, 3, 1))
    if rank == 0:
        network.load_state_dict(tiny_network().state_dict())
    step = make_step(wrap(network, ctx, torch.device("cpu")))
    for i in range(STEPS):
        step(rank_batch(ctx, i))
    now = agreed(lambda: float(rank), ctx)()  # every rank reads the same (max) clock
    torch.save({"state": unwrap(step.network).state_dict(), "clock": now}, Path(out) / f"rank{rank}.pt")
    cleanup(ctx)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_end_identical_and_equal_to_one_process_on_the_union(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["clock"] == ranks[1]["clock"] == 1.0
    reference = tiny_network()
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    step = make_step(reference)
    contexts = [DistContext(r, 2, r) for r in range(2)]
    for i in range(STEPS):
        parts = [rank_batch(c, i) for c in contexts]
        assert not torch.equal(parts[0]["image"], parts[1]["image"])  # ranks see different patches
        step({k: torch.cat([p[k] for p in parts]) for k in ("image", "label")})
    for name, value in reference.state_dict().items():
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name
        assert torch.allclose(ranks[0]["state"][name], value, atol=1e-5), name
        assert not torch.allclose(value, initial[name])


def test_context_from_torchrun_variables() -> None:
    assert context_from_env({}) == DistContext(0, 1, 0) and not DistContext().enabled
    ctx = context_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (3, 4, 1, False)
    with pytest.raises(ConfigError, match="outside WORLD_SIZE"):
        context_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_batch_and_seed_sharding() -> None:
    ranks = [DistContext(r, 3, r) for r in range(3)]
    assert [rank_batch_size(8, c) for c in ranks] == [3, 3, 2]
    assert len({rank_seed(0, c) for c in ranks}) == 3 and rank_seed(5, DistContext()) == 5
    with pytest.raises(ConfigError, match="batch size 2 is smaller than the 3 training processes"):
        rank_batch_size(2, ranks[0])
    assert shard(list(range(7)), ranks[1]) == [1, 4]
    config = SimpleNamespace(batch_size=4)
    plan = _Frozen(config_3d=_Frozen(batch_size=4), config_2d=config)
    recipe = _Frozen(runtime=_Frozen(seed=0))
    rank_plan, rank_recipe = for_rank(plan, recipe, 3, DistContext(1, 2, 1))
    assert rank_plan.config_3d.batch_size == 2 and rank_recipe.runtime.seed == rank_seed(0, DistContext(1, 2, 1))
    with main_first(DistContext()):  # no-op without a process group
        pass


def _Frozen(**fields):
    from dataclasses import make_dataclass

    cls = make_dataclass("Frozen", list(fields), frozen=True)
    return cls(**fields)
