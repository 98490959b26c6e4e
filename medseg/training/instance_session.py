"""Training sessions for instance models: the trainer's loop with instance targets and metrics.

An instance dataset (``images/`` + ``labels/`` instance maps, or ``"instances": true``) trains with
the same pieces as every model (:mod:`medseg.training.trainer`: plan, cache, split, batches,
``run_epoch``, schedule, checkpoints, logs, model folder); what differs is chosen here:

* **U-Net families** (``unet``, ``resenc_unet``, ...; 2D or 3D): three outputs, background /
  interior / boundary, targets made per augmented patch (:mod:`medseg.training.instance_targets`),
  the recipe's loss (Dice + CE by default) with deep supervision, the standard ``TrainStep``;
  objects by the seeded watershed (``model.json``: ``instances.method = "watershed"``).
* **maskrcnn** (2D): torchvision's Mask R-CNN (:mod:`medseg.networks.maskrcnn`) with anchors from
  the plan's object sizes and its own step (:mod:`medseg.training.detection_step`) on the same
  batches of instance ids; fp32 (``instances.method = "maskrcnn"``).

Validation (periodic and final) scores instance maps made by the shipped predictor
(:mod:`medseg.training.instance_validation`); ``model.json`` holds the final validation's DSB
score, AP@0.5, box mAP and counts. The model folder keeps the final weights, as for every model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.model.folder import ModelSpec
from medseg.model.runtime import Runtime, package_versions
from medseg.training import checkpoint as ckpt
from medseg.training import distributed
from medseg.training.checkpoint import Progress
from medseg.training.instance_targets import TARGET_CLASSES, InteriorBoundaryTarget
from medseg.training.instance_validation import InstanceValidation, validate_cached, validate_sources
from medseg.training.session import Session

if TYPE_CHECKING:
    from medseg.model.plan import Plan
    from medseg.networks.maskrcnn import DetectionConfig
    from medseg.training.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class InstanceSession(Session):
    """A :class:`~medseg.training.session.Session` whose batches carry instance targets and whose
    validations score objects. ``target`` turns augmented id patches into the U-Net's classes
    (None for Mask R-CNN, which takes the ids)."""

    target: Callable[[torch.Tensor], torch.Tensor] | None = None

    def batches(self, start_iteration: int) -> Iterator[dict[str, torch.Tensor]]:
        """The endless batch stream with instance targets, positioned at batch ``start_iteration``."""
        from medseg.training.data import make_train_loader

        return iter(
            make_train_loader(
                self.cache,
                self.split.train,
                self.plan,
                self.recipe,
                self.spatial_dims,
                start_iteration,
                target=self.target,
            )
        )

    def validate(self) -> InstanceValidation:  # type: ignore[override]
        """Periodic validation on (the first) cached validation cases: DSB score, AP@0.5, box mAP."""
        return validate_cached(self.predictor, self.val_cases())

    def validate_final(self) -> InstanceValidation:  # type: ignore[override]
        """Every validation case from its source files, predicted as ``medseg predict`` does."""
        return validate_sources(self.predictor, self.dataset, self.split.val)

    def validation_row(self, result: InstanceValidation, seconds: float) -> dict[str, float]:  # type: ignore[override]
        """Log columns: DSB score, AP@0.5, box mAP, object counts, seconds."""
        return {**result.columns(), "val_seconds": seconds}

    def model_spec(self, progress: Progress, result: InstanceValidation) -> ModelSpec:
        """``model.json`` of the trained model: the final validation's instance metrics and how it ran."""
        rows = progress.history
        speed = [r["iterations_per_second"] for r in rows if "iterations_per_second" in r]
        options = self.predictor.options
        metrics: dict[str, Any] = {
            **result.metrics(),
            "validation_cases": len(result.case_ids),
            "validation": {
                "predictor": "medseg.inference.Predictor",
                "grid": "source",
                "backend": self.predictor.models[0].backend.name,
                "precision": self.precision,
                "tta": options.tta,
                "overlap": options.overlap,
            },
            "epochs": progress.epoch,
            "iterations": progress.iteration,
            "training_seconds": round(progress.elapsed_seconds, 1),
            "iterations_per_second": round(sum(speed) / len(speed), 3) if speed else None,
            "best_epoch": progress.best_epoch,
            "best_dsb_score": round(progress.best_score, 6),
            "device": str(self.device),
            "precision": self.precision,
        }
        spec = self.predictor.models[0].spec
        return replace(spec, versions=package_versions(), metrics=metrics)


def instance_settings(recipe: Recipe, plan: Plan) -> dict[str, Any]:
    """``model.json``'s ``instances``: how the predictor makes objects for this recipe's family."""
    config, objects = recipe.instances, plan.instances
    if objects is None:
        raise ConfigError('the plan has no object statistics ("instances"); re-plan the instance dataset')
    if recipe.model.family == "maskrcnn":
        return {
            "method": "maskrcnn",
            "score_threshold": config.score_threshold,
            "mask_threshold": 0.5,
            "nms_threshold": 0.3,
            "min_size": objects.min_size,
            "overlap": objects.tile_overlap,
        }
    return {
        "method": "watershed",
        "targets": "interior_boundary",
        "boundary_width": config.boundary_width,
        "foreground_threshold": config.foreground_threshold,
        "seed_threshold": config.seed_threshold,
        "min_seed": config.min_seed,
        "min_size": objects.min_size,
    }


def detection_config(recipe: Recipe, plan: Plan) -> DetectionConfig:
    """The Mask R-CNN of a recipe: backbone and FPN width from ``[instances]``, anchors and detections
    per tile from the plan's objects, tiles of the 2D patch size."""
    from medseg.networks.maskrcnn import DetectionConfig

    objects = plan.instances
    if objects is None:
        raise ConfigError('the plan has no object statistics ("instances"); re-plan the instance dataset')
    return DetectionConfig(
        backbone=recipe.instances.backbone,
        fpn_channels=recipe.instances.fpn_channels,
        anchor_sizes=objects.anchor_sizes,
        aspect_ratios=objects.aspect_ratios,
        tile_size=plan.config_2d.patch_size,
        num_classes=max(plan.labels) + 1,
        max_detections=objects.max_objects,
    )


def instance_spec(recipe: Recipe, plan: Plan) -> ModelSpec:
    """The ModelSpec of the network an instance recipe trains (metrics and versions come at the end)."""
    dims = recipe.model.spatial_dims
    if recipe.model.family == "maskrcnn":
        network = detection_config(recipe, plan).to_dict()
        outputs = network["num_classes"]
    else:
        config = plan.config(dims)
        network = {
            "patch_size": list(config.patch_size),
            "batch_size": config.batch_size,
            "features": list(config.features),
            "kernel_sizes": [list(k) for k in config.kernel_sizes],
            "strides": [list(s) for s in config.strides],
        }
        outputs = TARGET_CLASSES
    return ModelSpec(
        recipe.model.family,
        dims,
        len(plan.channels),
        outputs,
        dict(plan.labels),
        network,
        recipe=recipe.to_dict(),
        instances=instance_settings(recipe, plan),
    )


def _check(recipe: Recipe, dataset: Any, dist: distributed.DistContext) -> None:
    if not dataset.instances:
        raise ConfigError(
            f"the maskrcnn family needs an instance dataset (images/ + labels/ instance maps); "
            f"{recipe.dataset.path} holds class label maps"
        )
    if recipe.model.family == "maskrcnn" and recipe.model.spatial_dims != 2:
        raise ConfigError("the maskrcnn family is 2D: set [model] spatial_dims = 2")
    if dist.enabled:
        raise ConfigError("instance models train in one process; run medseg train without torchrun")


def build_instance_network(recipe: Recipe, plan: Plan, spec: ModelSpec, runtime: Runtime) -> nn.Module:
    """The training network: U-Net family with three outputs (deep supervision as the recipe says)
    or the Mask R-CNN of ``spec``, on the runtime's device."""
    dims = recipe.model.spatial_dims
    if recipe.model.family == "maskrcnn":
        from medseg.networks.maskrcnn import DetectionConfig, build_maskrcnn

        return build_maskrcnn(spec.in_channels, DetectionConfig.from_dict(spec.network)).to(runtime.device)
    from medseg.networks import build_model

    network = build_model(
        recipe.model.family,
        dims,
        spec.in_channels,
        spec.out_channels,
        plan.config(dims),
        deep_supervision=recipe.model.deep_supervision,
    )
    # torch's stubs omit Module.to's documented memory_format keyword
    return network.to(device=runtime.device, memory_format=runtime.memory_format(dims))  # type: ignore[call-overload]


def build_instance_session(
    recipe: Recipe, run_dir: Path, runtime: Runtime, dist: distributed.DistContext, data: tuple[Any, Any, Any, Any]
) -> InstanceSession:
    """Every piece of an instance run from ``recipe`` and its prepared ``(plan, cache, dataset, split)``."""
    from medseg.training.detection_step import DetectionStep
    from medseg.training.loop import TrainStep
    from medseg.training.losses import build_loss
    from medseg.training.optim import LRSchedule, build_optimizer
    from medseg.training.validation import validation_predictor

    plan, cache, dataset, split = data
    _check(recipe, dataset, dist)
    detection = recipe.model.family == "maskrcnn"
    if detection:
        runtime = replace(runtime, precision="fp32")
    spec = instance_spec(recipe, plan)
    ckpt.seed_everything(recipe.runtime.seed)
    network = build_instance_network(recipe, plan, spec, runtime)
    optimizer = build_optimizer(network.parameters(), recipe.optimizer)
    budget = recipe.budget
    schedule = LRSchedule(
        optimizer,
        recipe.optimizer.schedule,
        budget.epochs * budget.iterations_per_epoch,
        budget.minutes * 60.0 if budget.minutes else None,
    )
    if detection:
        step: Any = DetectionStep(network, optimizer, runtime.device, recipe.optimizer.grad_clip)
        target = None
    else:
        loss = build_loss(recipe.loss.name, TARGET_CLASSES, recipe.loss.class_weights).to(runtime.device)
        step = TrainStep(
            network,
            loss,
            optimizer,
            runtime.device,
            runtime.autocast,
            runtime.grad_scaler(),
            recipe.optimizer.grad_clip,
            runtime.memory_format(recipe.model.spatial_dims),
        )
        target = InteriorBoundaryTarget(recipe.instances.boundary_width)
    predictor = validation_predictor(network, plan, spec, runtime)
    log.info(
        "training %s %dD instance model (%s) on %s (%s), %d training / %d validation images",
        recipe.model.family,
        recipe.model.spatial_dims,
        spec.instance_method,
        runtime.device,
        runtime.precision,
        len(split.train),
        len(split.val),
    )
    return InstanceSession(
        recipe, run_dir, plan, cache, dataset, split, runtime, network, step, schedule, predictor, dist, target=target
    )
