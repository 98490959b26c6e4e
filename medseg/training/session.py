"""Everything one training run is made of, built from a recipe: data, network, step, schedule.

:func:`build_session` composes the pieces (dataset -> plan -> cache -> split; network, loss,
optimiser, LR schedule, precision, and the inference ``Predictor`` that validates the network).
The :class:`Session` only holds them and offers the few actions the epoch loop needs (batches,
periodic and final validation, checkpoints).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from medseg.inference.predictor import Predictor
from medseg.model.folder import ModelSpec
from medseg.model.runtime import Runtime, configure_runtime
from medseg.training import checkpoint as ckpt
from medseg.training import distributed
from medseg.training.checkpoint import Progress
from medseg.training.dataset import DatasetSpec
from medseg.training.loop import TrainStep
from medseg.training.optim import LRSchedule
from medseg.training.splits import Split, select_split, splits_for_run
from medseg.training.validation import ValidationResult, validate_preprocessed, validate_source, validation_predictor

if TYPE_CHECKING:
    from medseg.model.plan import Plan
    from medseg.training.cache import CaseCache
    from medseg.training.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class Session:
    """The built pieces of a run (see :func:`build_session`)."""

    recipe: Recipe
    run_dir: Path
    plan: Plan
    cache: CaseCache
    dataset: DatasetSpec
    split: Split
    runtime: Runtime
    network: nn.Module
    step: TrainStep
    schedule: LRSchedule
    predictor: Predictor
    dist: distributed.DistContext = field(default_factory=distributed.DistContext)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def precision(self) -> str:
        return self.runtime.precision

    @property
    def spatial_dims(self) -> int:
        return self.recipe.model.spatial_dims

    @property
    def foreground_classes(self) -> list[int]:
        """The declared label values other than background (0), ascending: the validated classes."""
        return sorted(c for c in self.plan.labels if c != 0)

    def class_name(self, value: int) -> str:
        """The label name of class ``value`` (the value itself when unnamed)."""
        return self.plan.labels.get(value, str(value))

    def batches(self, start_iteration: int) -> Iterator[dict[str, torch.Tensor]]:
        """The endless batch stream, positioned at batch ``start_iteration``."""
        from medseg.training.data import make_train_loader

        plan, recipe = distributed.for_rank(self.plan, self.recipe, self.spatial_dims, self.dist)  # batch share, seed
        if start_iteration:
            log.info("resuming at batch %d of the seeded stream", start_iteration)
        return iter(make_train_loader(self.cache, self.split.train, plan, recipe, self.spatial_dims, start_iteration))

    def val_cases(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(case_id, image (C,X,Y,Z), label (X,Y,Z))`` for every validation case."""
        from medseg.training.data import make_val_cases

        for case in make_val_cases(self.cache, self.split.val):
            yield case.id, case.image, case.label

    def validate(self) -> ValidationResult:
        """Periodic validation: Dice per class on the cached preprocessed validation cases with
        the current weights, through the predictor's own sliding window."""
        return validate_preprocessed(self.predictor, self.val_cases(), self.foreground_classes)

    def validation_row(self, result: ValidationResult, seconds: float) -> dict[str, float]:
        """Log columns of a validation: mean Dice, seconds, Dice per class."""
        row = {"val_dice_mean": result.mean, "val_seconds": seconds}
        for value, dice in zip(result.classes, result.mean_per_class):
            row[f"dice_{self.class_name(value)}"] = float(dice)
        return row

    def validate_final(self) -> ValidationResult:
        """Final validation: the validation cases' source files predicted on their own grid,
        scored with and without keep-largest-component (see :mod:`medseg.training.validation`)."""
        return validate_source(self.predictor, self.dataset, self.split.val)

    def save_checkpoint(self, path: Path, progress: Progress) -> Path:
        if not self.dist.is_main:  # under torchrun only rank 0 writes
            return path
        return ckpt.save_checkpoint(path, self.network, self.step.optimizer, self.schedule, self.step.scaler, progress)

    def restore(self, path: Path) -> Progress:
        """Load a checkpoint into this session's network, optimiser, schedule, scaler and RNGs.

        The schedule then follows this session's budget (the recipe with this command's options):
        a new ``--minutes``/``--epochs`` extends or shortens the lr curve from the progress made.
        """
        progress = ckpt.load_checkpoint(
            path, self.network, self.step.optimizer, self.schedule, self.step.scaler, self.device
        )
        log.info("resumed from %s at epoch %d, iteration %d", path, progress.epoch, progress.iteration)
        before = _describe_budget(self.schedule.total_iterations, self.schedule.budget_seconds)
        if self.schedule.set_budget(*schedule_budget(self.recipe)):
            fraction = self.schedule.progress(progress.iteration, progress.elapsed_seconds)
            log.info(
                "the budget changed from %s to %s: the lr schedule follows the new budget from %.0f%% done",
                before,
                _describe_budget(self.schedule.total_iterations, self.schedule.budget_seconds),
                100 * fraction,
            )
        return progress


def schedule_budget(recipe) -> tuple[int, float | None]:
    """The iteration total and wall-clock seconds (None without a time budget) the lr schedule spans."""
    budget = recipe.budget
    return budget.epochs * budget.iterations_per_epoch, budget.minutes * 60.0 if budget.minutes else None


def _describe_budget(iterations: int, seconds: float | None) -> str:
    text = f"{iterations} iterations"
    return text + f" or {seconds / 60:g} minutes" if seconds else text


def prepare_data(recipe, run_dir: Path, resume: bool):
    """Dataset -> plan (reused from ``run_dir/plan.json`` on resume) -> cache -> this fold's split.

    A plan without label volume statistics (given as a file) gets them from the cache, so the
    model folder's plan always carries them (inference compares predicted volumes with them).

    Returns ``(plan, cache, dataset, split)``.
    """
    from medseg.model.plan import Plan
    from medseg.training.cache import build_cache
    from medseg.training.dataset import load_dataset
    from medseg.training.fingerprint import cached_label_volumes
    from medseg.training.planner import plan_for_recipe

    spec = load_dataset(recipe.dataset.path)
    plan_path = run_dir / "plan.json"
    if resume and plan_path.is_file():
        plan = Plan.load(plan_path)
    else:
        plan = plan_for_recipe(recipe, spec, workers=recipe.runtime.workers)
        plan.save(plan_path)
    cache = build_cache(spec, plan, recipe.runtime.cache_dir, workers=recipe.runtime.workers)
    if "label_volume_ml" not in plan.fingerprint and not spec.instances:  # a plan from a file: measure them
        plan = replace(plan, fingerprint={**plan.fingerprint, "label_volume_ml": cached_label_volumes(cache, plan)})
        plan.save(plan_path)
    data = recipe.dataset
    splits = splits_for_run(run_dir / "splits.json", spec.case_ids, data.split, data.folds, data.seed)
    return plan, cache, spec, select_split(splits, data.fold if data.split == "kfold" else 0)


def build_network(recipe, plan, runtime: Runtime) -> nn.Module:
    """The training network (deep supervision as the recipe says), on the runtime's device."""
    from medseg.networks import build_model

    dims = recipe.model.spatial_dims
    network = build_model(
        recipe.model.family,
        dims,
        len(plan.channels),
        plan.num_classes,
        plan.config(dims),
        deep_supervision=recipe.model.deep_supervision,
    )
    # torch's stubs omit Module.to's documented memory_format keyword
    return network.to(device=runtime.device, memory_format=runtime.memory_format(dims))  # type: ignore[call-overload]


def network_spec(recipe, plan) -> ModelSpec:
    """The ModelSpec of the network a recipe trains (no post-processing, metrics or versions yet):
    what the validation predictor needs, completed into ``model.json`` when training ends."""
    config = plan.config(recipe.model.spatial_dims)
    network = {
        "patch_size": list(config.patch_size),
        "batch_size": config.batch_size,
        "features": list(config.features),
        "kernel_sizes": [list(k) for k in config.kernel_sizes],
        "strides": [list(s) for s in config.strides],
    }
    return ModelSpec(
        recipe.model.family,
        recipe.model.spatial_dims,
        len(plan.channels),
        plan.num_classes,
        dict(plan.labels),
        network,
        recipe=recipe.to_dict(),
    )


def build_session(recipe, run_dir: Path, resume: bool = False) -> Session:
    """Build every piece of a run from ``recipe`` (seeding first, so initial weights are reproducible)."""
    from medseg.training.losses import build_loss
    from medseg.training.optim import build_optimizer

    runtime = configure_runtime(recipe.runtime.device, recipe.runtime.precision)
    dist = distributed.init_from_env(runtime.device)  # torchrun: join the group
    runtime = replace(runtime, device=distributed.rank_device(dist, runtime.device))
    device = runtime.device
    with distributed.main_first(dist):  # rank 0 plans and caches; the others then reuse its files
        plan, cache, dataset, split = prepare_data(recipe, run_dir, resume or not dist.is_main)
    if dataset.instances or recipe.model.family == "maskrcnn":  # objects, not classes
        from medseg.training.instance_session import build_instance_session

        return build_instance_session(recipe, run_dir, runtime, dist, (plan, cache, dataset, split))
    ckpt.seed_everything(recipe.runtime.seed)
    network = build_network(recipe, plan, runtime)
    optimizer = build_optimizer(network.parameters(), recipe.optimizer)
    schedule = LRSchedule(optimizer, recipe.optimizer.schedule, *schedule_budget(recipe))
    autocast = runtime.autocast
    loss = build_loss(recipe.loss.name, plan.num_classes, recipe.loss.class_weights).to(device)
    step = TrainStep(
        distributed.wrap(network, dist, device),
        loss,
        optimizer,
        device,
        autocast,
        runtime.grad_scaler(),
        recipe.optimizer.grad_clip,
        runtime.memory_format(recipe.model.spatial_dims),
    )
    predictor = validation_predictor(network, plan, network_spec(recipe, plan), runtime)
    log.info(
        "training %s %dD on %s (%s), %d training / %d validation cases",
        recipe.model.family,
        recipe.model.spatial_dims,
        device,
        runtime.precision,
        len(split.train),
        len(split.val),
    )
    return Session(recipe, run_dir, plan, cache, dataset, split, runtime, network, step, schedule, predictor, dist)
