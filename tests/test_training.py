"""The training loop and its pieces: optimiser defaults, LR schedule, splits, checkpoints and RNG
state, tiny real training runs (4 MSD hippocampus cases, tiny networks), exact resume after a
kill, the wall-clock budget, 2D slice training and the run folder it writes."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.model.plan import NetworkConfig, Normalization, Plan
from medseg.model.runtime import cpu_supports_bf16, resolve_precision
from medseg.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from medseg.training.optim import LRSchedule, build_optimizer, clip_gradients, schedule_factor
from medseg.training.progress import BarState, TrainingBar, bar_state, format_seconds, format_state
from medseg.training.recipe import OptimizerConfig
from medseg.training.splits import make_splits, splits_for_run
from medseg.training.trainer import TrainOptions, train
from tests.training_stubs import LABELS, tiny_recipe, write_tiny_data

CASES = ("hippocampus_003", "hippocampus_004", "hippocampus_007", "hippocampus_008")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_data(shared_data: Path, tmp_path_factory) -> Path:
    """A CSV manifest of 4 real hippocampus cases and a plan with tiny networks."""
    return write_tiny_data(tmp_path_factory.mktemp("tiny_data"), shared_data / "msd_hippocampus", CASES)


def log_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "training_log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------- optimisers
def test_default_optimizer_is_nnunet_sgd() -> None:
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerConfig())
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.01, 0.99, True, 3e-5)


@pytest.mark.parametrize(
    "name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)]
)
def test_other_optimizers(name: str, cls: type) -> None:
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], replace(OptimizerConfig(), name=name, lr=1e-3))
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 1e-3


def test_poly_schedule_and_time_budget_progress() -> None:
    assert schedule_factor("poly", 0.5) == pytest.approx(0.5**0.9)
    assert schedule_factor("cosine", 0.5) == pytest.approx(0.5) and schedule_factor("constant", 0.9) == 1.0
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerConfig())
    schedule = LRSchedule(opt, "poly", total_iterations=100, budget_seconds=60.0)
    assert schedule.step(10, elapsed_seconds=0.0) == pytest.approx(0.01 * 0.9**0.9)
    assert schedule.step(10, elapsed_seconds=30.0) == pytest.approx(0.01 * 0.5**0.9)  # time ahead of iterations
    assert schedule.step(100) == 0.0


def test_a_new_budget_extends_a_finished_schedule() -> None:
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerConfig())
    schedule = LRSchedule(opt, "poly", total_iterations=100, budget_seconds=120.0)
    assert schedule.step(50, elapsed_seconds=120.0) == 0.0  # the 2-minute budget is spent
    assert schedule.set_budget(100, 180.0) and not schedule.set_budget(100, 180.0)
    assert schedule.step(50, elapsed_seconds=120.0) == pytest.approx(0.01 * (1 / 3) ** 0.9)
    assert schedule.state_dict()["budget_seconds"] == 180.0


def test_gradient_clipping_bounds_the_norm() -> None:
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 10.0)
    assert clip_gradients([p], 12.0) == pytest.approx(20.0)
    assert float(p.grad.norm()) == pytest.approx(12.0, rel=1e-4)


def test_precision_choice_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_supports_bf16() else "fp32")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


# ---------------------------------------------------------------------------- progress bar
def test_progress_bar_counts_to_the_budget_that_ends_first() -> None:
    # issue 14 item 15: 80 of 250,000 iterations at 1 s each with a 120 s budget: time ends the run
    state = bar_state(80, 250_000, elapsed_seconds=80.0, budget_seconds=120.0, seconds_per_iteration=1.0)
    assert (state.unit, state.done, state.total, state.seconds_left) == ("s", 80.0, 120.0, 40.0)
    assert format_state(state, 80, 0.31) == "80/120 s, 00:40 left, it 80, loss 0.3100"
    # the iterations end first: 100 left at 0.5 s = 50 s, before the 100 s left of the budget
    state = bar_state(900, 1000, 20.0, 120.0, 0.5)
    assert (state.unit, state.done, state.total, state.seconds_left) == ("it", 900.0, 1000.0, 50.0)
    assert format_state(state, 900) == "900/1000 it, 00:50 left"
    assert bar_state(0, 1000, 0.0, None, None) == BarState(0.0, 1000.0, "it", None)  # speed not measured yet
    assert bar_state(0, 250_000, 0.0, 120.0, None).unit == "s"  # a time budget: the time bar until then
    assert bar_state(10, 100, 130.0, 120.0, 1.0) == BarState(120.0, 120.0, "s", 0.0)  # resumed past its budget
    assert format_seconds(3725.2) == "1:02:05"
    # the speed is measured over this session only (a resumed run starting at iteration 40 after 400 s)
    bar = TrainingBar("tiny", 250_000, 600.0, iteration=40, elapsed_seconds=400.0, enabled=False)
    assert bar.state(80, 440.0) == BarState(440.0, 600.0, "s", 160.0)
    bar.show(80, 440.0, torch.tensor(0.5))
    bar.close()


# ---------------------------------------------------------------------------- splits
def test_fixed_split_is_80_20_disjoint_and_deterministic() -> None:
    ids = [f"case_{i:03d}" for i in range(173)]
    (split,) = make_splits(ids, "fixed-80-20", seed=0)
    assert len(split.val) == 35 and len(split.train) == 138 and not set(split.val) & set(split.train)
    assert make_splits(ids, seed=0) == [split] and make_splits(ids, seed=1) != [split]


def test_kfold_validates_every_case_once(tmp_path: Path) -> None:
    ids = [f"c{i}" for i in range(11)]
    folds = make_splits(ids, "kfold", folds=5, seed=3)
    assert sorted(c for f in folds for c in f.val) == sorted(ids)
    assert all(set(f.train) == set(ids) - set(f.val) for f in folds)
    saved = splits_for_run(tmp_path / "splits.json", ids, "kfold", 5, 3)
    assert saved == folds and splits_for_run(tmp_path / "splits.json", ids, "kfold", 5, 99) == folds  # reused


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_restores_state_and_rng_with_weights_only(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = build_optimizer(net.parameters(), OptimizerConfig())
    schedule = LRSchedule(opt, "poly", 10)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.pt", net, opt, schedule, None, Progress(epoch=3, iteration=30))
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    other = torch.nn.Linear(3, 2)
    opt2 = build_optimizer(other.parameters(), OptimizerConfig())
    progress = load_checkpoint(path, other, opt2, LRSchedule(opt2, "poly", 1), None)
    assert (progress.epoch, progress.iteration) == (3, 30)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert torch.equal(other.weight, net.weight)
    assert opt2.state_dict()["state"][0]["momentum_buffer"].equal(opt.state_dict()["state"][0]["momentum_buffer"])
    torch.load(path, weights_only=True)  # plain tensors and Python values only


# ---------------------------------------------------------------------------- training runs
def test_tiny_3d_run_writes_run_folder_and_model_folder(tiny_data: Path, shared_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    folder = train(tiny_recipe(tiny_data), TrainOptions(run, progress_bar=False))
    assert folder == run / "model"
    for name in (
        "recipe.json",
        "plan.json",
        "splits.json",
        "checkpoint_last.pt",
        "checkpoint_best.pt",
        "training_log.csv",
        "curves.png",
    ):
        assert (run / name).is_file(), name
    for name in ("model.json", "plan.json", "weights.safetensors", "training_log.csv", "curves.png"):
        assert (folder / name).is_file(), name
    rows = log_rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["iteration"] for r in rows] == ["2", "4"]
    assert all(0.0 <= float(r["dice_Anterior"]) <= 1.0 and float(r["train_loss"]) > 0 for r in rows)
    spec = json.loads((folder / "model.json").read_text())
    assert spec["metrics"]["validation_cases"] == 1 and set(spec["metrics"]["dice"]) == {"Anterior", "Posterior"}
    assert set(spec["postprocessing"]["keep_largest_component"]) <= {1, 2}
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the plan came from a file without label volumes: training measures them for the model folder
    volumes = json.loads((folder / "plan.json").read_text())["fingerprint"]["label_volume_ml"]
    labels = [np.asarray(nib.load(shared_data / "msd_hippocampus" / "labelsTr" / f"{c}.nii.gz").dataobj) for c in CASES]
    for value in (1, 2):
        ml = [float(np.sum(label == value)) / 1000.0 for label in labels]  # 1 mm voxels
        assert volumes[str(value)] == pytest.approx({"min": min(ml), "median": float(np.median(ml)), "max": max(ml)})


def test_exact_resume_after_a_kill(tiny_data: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(tiny_data, budget={"epochs": 4, "iterations_per_epoch": 2}, validation={"every": 2})
    train(recipe, TrainOptions(tmp_path / "straight", progress_bar=False))

    class Killed(Exception):
        pass

    def kill_after_epoch_2(progress: Progress) -> None:
        if progress.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(recipe, TrainOptions(tmp_path / "killed", progress_bar=False, on_epoch_end=kill_after_epoch_2))
    assert not (tmp_path / "killed" / "model").exists()
    train(recipe, TrainOptions(tmp_path / "killed", resume=True, progress_bar=False))
    straight = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "checkpoint_last.pt", weights_only=True)
    assert resumed["progress"]["iteration"] == straight["progress"]["iteration"] == 8
    assert all(torch.equal(straight["network"][k], resumed["network"][k]) for k in straight["network"])
    losses = lambda run: [r["train_loss"] for r in log_rows(tmp_path / run)]  # noqa: E731
    assert losses("straight") == losses("killed")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint_last.pt", weights_only=True)["network"]


def test_resume_with_more_epochs_in_the_recipe_trains_on(tiny_data: Path, tmp_path: Path) -> None:
    """A finished 2-epoch run resumed with [budget] epochs = 4: the schedule spans the new budget."""
    run = tmp_path / "run"
    train(tiny_recipe(tiny_data), TrainOptions(run, progress_bar=False))
    before = _weights(run)
    train(tiny_recipe(tiny_data, budget={"epochs": 4}), TrainOptions(run, resume=True, progress_bar=False))
    rows = log_rows(run)
    assert [r["iteration"] for r in rows] == ["2", "4", "6", "8"]
    assert all(float(r["lr"]) > 0 for r in rows[2:])
    after = _weights(run)
    assert not all(torch.equal(before[k], after[k]) for k in before)
    schedule = torch.load(run / "checkpoint_last.pt", weights_only=True)["schedule"]
    assert schedule["total_iterations"] == 8


def test_resume_with_a_larger_time_budget_trains_on(tiny_data: Path, tmp_path: Path) -> None:
    """Issue 14 item 14: `--resume --minutes 3` after `--minutes 2` used to train at lr 0."""
    recipe = tiny_recipe(tiny_data, budget={"epochs": 1000, "iterations_per_epoch": 50}, validation={"every": 100})
    run = tmp_path / "run"
    train(recipe, TrainOptions(run, minutes=0.01, progress_bar=False))
    first = torch.load(run / "checkpoint_last.pt", weights_only=True)
    spent = first["progress"]["elapsed_seconds"]  # 0.6 s of training + the final validation
    assert spent >= 0.6 and first["schedule"]["budget_seconds"] == pytest.approx(0.6)
    minutes = round((spent + 3.0) / 60, 4)  # 3 more seconds
    train(recipe, TrainOptions(run, resume=True, minutes=minutes, progress_bar=False))
    second = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert second["progress"]["iteration"] > first["progress"]["iteration"]
    new_rows = log_rows(run)[len(first["progress"]["history"]) :]
    assert new_rows and all(float(r["lr"]) > 0 for r in new_rows)
    assert not all(torch.equal(first["network"][k], second["network"][k]) for k in first["network"])
    assert second["schedule"]["budget_seconds"] == pytest.approx(minutes * 60)
    # a plain --resume keeps the budget given before: it is spent, nothing more trains
    train(recipe, TrainOptions(run, resume=True, progress_bar=False))
    third = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert third["progress"]["iteration"] == second["progress"]["iteration"]
    assert json.loads((run / "recipe.json").read_text())["budget"]["minutes"] == minutes


def test_run_folder_guards(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint_last.pt"):
        train(tiny_recipe(tiny_data), TrainOptions(tmp_path / "new", resume=True, progress_bar=False))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "checkpoint_last.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="pass --resume"):
        train(tiny_recipe(tiny_data), TrainOptions(tmp_path / "used", progress_bar=False))


def test_wall_clock_budget_stops_cleanly_and_writes_the_model(tiny_data: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(tiny_data, budget={"epochs": 1000, "iterations_per_epoch": 50}, validation={"every": 100})
    folder = train(recipe, TrainOptions(tmp_path / "run", minutes=0.02, progress_bar=False))
    rows = log_rows(tmp_path / "run")
    assert 1 <= int(rows[-1]["iteration"]) < 1000 * 50 and "val_dice_mean" in rows[-1] and rows[-1]["val_dice_mean"]
    spec = json.loads((folder / "model.json").read_text())
    assert 1.0 <= spec["metrics"]["training_seconds"] < 60


def test_2d_run_trains_on_slices_and_validates_whole_volumes(tiny_data: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(tiny_data, model={"spatial_dims": 2, "family": "segnet"}, budget={"epochs": 1})
    folder = train(recipe, TrainOptions(tmp_path / "run", progress_bar=False))
    spec = json.loads((folder / "model.json").read_text())
    assert spec["spatial_dims"] == 2 and spec["family"] == "segnet" and spec["network"]["patch_size"] == [24, 16]
    assert 0.0 <= spec["metrics"]["mean_dice"] <= 1.0


def test_postprocessing_is_kept_only_where_it_raises_mean_dice() -> None:
    from medseg.training.validation import ValidationResult, decide_postprocessing

    result = ValidationResult(
        ("a", "b"), (1, 2), np.array([[0.80, 0.70], [0.60, 0.90]]), np.array([[0.85, 0.70], [0.60, 0.85]])
    )
    decision = decide_postprocessing(result, LABELS)
    assert decision["keep_largest_component"] == [1]  # class 1 gains, class 2 loses on average
    assert decision["dice_with"]["Anterior"] == pytest.approx(0.725)


@pytest.mark.slow
def test_a_small_unet_learns_the_hippocampus(shared_data: Path, tmp_path: Path) -> None:
    """About 3 minutes on one CPU thread: 1000 iterations on 16 real cases reach Dice > 0.6 on 4 others."""
    source = shared_data / "msd_hippocampus"
    cases = sorted(p.name[: -len(".nii.gz")] for p in (source / "labelsTr").glob("*.nii.gz"))[:20]
    rows = "".join(f"{c},{source}/imagesTr/{c}.nii.gz,{source}/labelsTr/{c}.nii.gz\n" for c in cases)
    (tmp_path / "cases.csv").write_text("case,image,label\n" + rows)
    (tmp_path / "cases.json").write_text(json.dumps({"labels": LABELS, "modality": {"0": "MRI"}}))
    config = NetworkConfig((32, 48, 32), 2, (8, 16, 32, 64), ((3, 3, 3),) * 4, ((1, 1, 1),) + ((2, 2, 2),) * 3)
    plan = Plan(
        "hippo20",
        ("MRI",),
        LABELS,
        (1.0, 1.0, 1.0),
        (Normalization("zscore"),),
        config,
        NetworkConfig((48, 32), 16, (8, 16, 32, 64), ((3, 3),) * 4, ((1, 1),) + ((2, 2),) * 3),
        slice_axis=0,
    )
    plan.save(tmp_path / "plan.json")
    recipe = tiny_recipe(tmp_path, budget={"epochs": 4, "iterations_per_epoch": 250}, validation={"every": 4})
    folder = train(recipe, TrainOptions(tmp_path / "run", progress_bar=False))
    metrics = json.loads((folder / "model.json").read_text())["metrics"]
    assert metrics["validation_cases"] == 4 and metrics["mean_dice"] > 0.6, metrics


def test_cli_train_and_its_user_errors(tiny_data: Path, tmp_path: Path, capsys) -> None:
    from medseg.cli import main

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        'name = "tiny-cli"\n'
        f'[dataset]\npath = "{tiny_data / "cases.csv"}"\n'
        f'[plan]\nfile = "{tiny_data / "plan.json"}"\n'
        '[model]\nfamily = "resenc_unet"\n'
        "[budget]\nepochs = 1\niterations_per_epoch = 1\n"
        f'[runtime]\ndevice = "cpu"\nworkers = 0\ncache_dir = "{tiny_data / "cache"}"\n'
    )
    run = tmp_path / "run"
    assert main(["train", str(recipe), "-o", str(run), "--no-progress"]) == 0
    assert f"model folder: {run / 'model'}" in capsys.readouterr().out
    assert json.loads((run / "model" / "model.json").read_text())["family"] == "resenc_unet"
    assert main(["train", str(recipe), "-o", str(run), "--no-progress"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["train", str(recipe), "--fold", "1"]) == 2
    assert "--fold needs a k-fold recipe" in capsys.readouterr().err
    assert main(["train", str(recipe), "-o", str(run), "--resume", "--epochs", "0", "--no-progress"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    assert main(["train", str(recipe), "-o", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert json.loads((run / "model" / "model.json").read_text())["metrics"]["epochs"] == 2
    assert json.loads((run / "budget.json").read_text()) == {"epochs": 2}
