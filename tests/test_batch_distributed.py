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
from medseg.training.distributed import (
    DistContext,
    context_from_env,
    for_rank,
    main_first,
    rank_batch_size,
    rank_seed,
    shard,
)

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
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
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


# ----------------------------------------------------------------------------- the real trainer under 2 ranks
HIPPO_CASES = ("hippocampus_003", "hippocampus_004", "hippocampus_007", "hippocampus_008")


def _train_rank(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    from medseg.training import trainer
    from medseg.training.recipe import Recipe

    torch.set_num_threads(1)
    original = trainer.run_epochs

    def keep_weights(session, *args, **kwargs):
        progress = original(session, *args, **kwargs)
        torch.save(session.network.state_dict(), Path(root) / f"weights{rank}.pt")
        return progress

    trainer.run_epochs = keep_weights
    from medseg.training import checkpoint

    def recorded(function):
        def writer(*args, **kwargs):
            with open(Path(root) / "writers.txt", "a") as handle:
                handle.write(f"{rank} {function.__name__}\n")
            return function(*args, **kwargs)

        return writer

    checkpoint.save_checkpoint = recorded(checkpoint.save_checkpoint)
    trainer.write_log_csv = recorded(trainer.write_log_csv)
    trainer.save_model_folder = recorded(trainer.save_model_folder)
    trainer.save_recipe = recorded(trainer.save_recipe)
    recipe = Recipe.from_dict(
        {
            "name": "ddp",
            "dataset": {"path": f"{root}/cases.csv"},
            "plan": {"file": f"{root}/plan.json"},
            "model": {"family": "unet", "spatial_dims": 3},
            "budget": {"epochs": 2, "iterations_per_epoch": 2},
            "validation": {"every": 2},
            "runtime": {"device": "cpu", "workers": 0, "cache_dir": f"{root}/cache"},
        }
    )
    trainer.train(recipe, trainer.TrainOptions(Path(root) / "run", progress_bar=False))


@pytest.mark.slow  # two processes each building the MONAI pipeline: about 20 s on 2 shared cores
def test_medseg_train_under_two_ranks_writes_once_and_ends_identical(shared_data: Path, tmp_path: Path) -> None:
    import json

    import torch.multiprocessing as mp

    from medseg.model.plan import NetworkConfig, Normalization, Plan

    source = shared_data / "msd_hippocampus"
    rows = "".join(f"{c},{source}/imagesTr/{c}.nii.gz,{source}/labelsTr/{c}.nii.gz\n" for c in HIPPO_CASES)
    (tmp_path / "cases.csv").write_text("case,image,label\n" + rows)
    labels = {0: "background", 1: "Anterior", 2: "Posterior"}
    (tmp_path / "cases.json").write_text(json.dumps({"name": "hippo4", "labels": labels, "modality": {"0": "MRI"}}))
    Plan(
        "hippo4",
        ("MRI",),
        labels,
        (1.0, 1.0, 1.0),
        (Normalization("zscore"),),
        NetworkConfig((16, 24, 16), 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2))),
        NetworkConfig((24, 16), 4, (4, 8, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2))),
        slice_axis=0,
    ).save(tmp_path / "plan.json")
    mp.spawn(_train_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    weights = [torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in range(2)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    run = tmp_path / "run"
    saved = torch.load(run / "checkpoint_last.pt", weights_only=True)["network"]
    assert all(torch.equal(saved[k], weights[0][k]) for k in saved)
    writers = (tmp_path / "writers.txt").read_text().split("\n")
    assert {w.split()[0] for w in writers if w} == {"0"}  # only rank 0 wrote files
    assert {w.split()[1] for w in writers if w} == {
        "save_recipe",
        "write_log_csv",
        "save_checkpoint",
        "save_model_folder",
    }
    with open(run / "training_log.csv") as handle:
        assert [line.split(",")[0] for line in handle.read().splitlines()[1:]] == ["1", "2"]
    assert (run / "model" / "weights.safetensors").is_file()
