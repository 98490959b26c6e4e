"""From a dataset fingerprint to a :class:`~medseg.model.plan.Plan`, following nnU-Net v2's rules.

* Target spacing: the median spacing; along a very anisotropic axis (spacing > 3x the others'
  and fewer than a third of their voxels) the 10th percentile instead.
* 3D patch: a 256³-voxel budget in the target spacing's aspect ratio, clipped to the median
  shape (at target spacing); 2D patch: a 2048² budget over the slices across the lowest
  resolution axis (``slice_axis``). Patches grow to a multiple of 2^pools per axis.
* Topology: pool an axis while its feature map stays >= 8 voxels (4 after pooling) and its
  spacing is within 2x of the finest; 3x3(x3) kernels once an axis is within 2x of the finest
  spacing, 1 before; features 32, 64, 128, ... capped at 320 (3D) / 512 (2D).
* Memory: training activations are estimated per sample; the patch shrinks (along the axis
  largest relative to the median shape) until a batch of 2 fits ``memory_budget_gb``; the batch
  size is what fits, capped so one batch covers at most 5% of the dataset's voxels, at least 2.
* Normalisation: "CT" channels clip to the foreground 0.5/99.5 percentiles and z-score with
  the foreground mean/std; other modalities per-image z-score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import ConfigError
from medseg.model.plan import NetworkConfig, Normalization, Plan
from medseg.networks.config import round_up
from medseg.training.fingerprint import Fingerprint, compute_fingerprint

if TYPE_CHECKING:
    from medseg.training.dataset import DatasetSpec
    from medseg.training.recipe import PlanOverrides, Recipe

ANISOTROPY_THRESHOLD = 3.0
MIN_FEATURE_MAP = 4
BASE_FEATURES = 32
MAX_FEATURES = {3: 320, 2: 512}
VOXEL_BUDGET = {3: 256**3, 2: 2048**2}
#: convolution outputs kept for backprop per feature map and stage (encoder 2x conv/norm/act,
#: decoder up-conv + concat + 2x conv/norm/act); the bottleneck keeps the encoder's 6
TENSORS_PER_STAGE = 15
#: bytes per stored activation: 2 (fp16/bf16 autocast) x 1.5 (workspace, allocator slack);
#: calibrated so that 8 GB gives nnU-Net's 128³ patch with batch 2 (6 stages, 32-320 features)
BYTES_PER_ACTIVATION = 3.0
MIN_BATCH = 2
MAX_DATASET_FRACTION = 0.05


@dataclass(frozen=True)
class Topology:
    """Strides and kernel sizes per stage, and the patch size made divisible by the total stride."""

    patch_size: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]


def plan_dataset(
    spec: DatasetSpec,
    memory_budget_gb: float = 8.0,
    fingerprint: Fingerprint | None = None,
    max_cases: int | None = None,
    workers: int = 2,
) -> Plan:
    """Fingerprint ``spec`` (unless given) and plan preprocessing and both networks for it
    (an instance dataset: :func:`medseg.training.instance_planner.plan_instances`)."""
    if spec.instances and fingerprint is None:
        from medseg.training.instance_planner import plan_instances

        return plan_instances(spec, max_cases=max_cases, workers=workers)
    if fingerprint is None:
        fingerprint = compute_fingerprint(spec, max_cases=max_cases, workers=workers)
    return plan_from_fingerprint(fingerprint, spec.name, spec.labels, memory_budget_gb)


def plan_from_fingerprint(
    fp: Fingerprint,
    name: str,
    labels: dict[int, str],
    memory_budget_gb: float = 8.0,
    target_spacing: tuple[float, float, float] | None = None,
) -> Plan:
    """The plan for a fingerprint (``target_spacing`` overrides the planned spacing)."""
    if memory_budget_gb <= 0:
        raise ConfigError(f"the memory budget must be positive, got {memory_budget_gb} GB")
    spacing = tuple(float(v) for v in (target_spacing or plan_spacing(fp.spacings, fp.shapes)))
    shapes = fp.shapes * fp.spacings / np.asarray(spacing)
    median = tuple(float(v) for v in np.median(shapes, axis=0))
    dataset_voxels = float(np.prod(shapes, axis=1).sum()) * fp.n_cases / max(1, fp.n_sampled)
    budget = memory_budget_gb * 1024**3
    slice_axis = int(np.argmax(spacing))
    in_plane = [a for a in range(3) if a != slice_axis]
    config_3d = plan_network(spacing, median, len(fp.channels), budget, dataset_voxels)
    config_2d = plan_network(
        tuple(spacing[a] for a in in_plane),
        tuple(median[a] for a in in_plane),
        len(fp.channels),
        budget,
        dataset_voxels,
    )
    summary = fp.summary()
    summary["median_shape_at_target"] = [round(v, 1) for v in median]
    summary["dataset_voxels_at_target"] = int(dataset_voxels)
    summary["memory_budget_gb"] = memory_budget_gb
    return Plan(
        name=name,
        channels=fp.channels,
        labels=labels,
        target_spacing=spacing,  # type: ignore[arg-type]
        normalization=tuple(plan_normalization(c, s) for c, s in zip(fp.channels, fp.intensities)),
        config_3d=config_3d,
        config_2d=config_2d,
        slice_axis=slice_axis,
        fingerprint=summary,
    )


def plan_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[float, float, float]:
    """Median spacing; the 10th percentile along a very anisotropic (coarse, short) axis."""
    target = np.median(spacings, axis=0)
    size = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    aniso_voxels = size[worst] * ANISOTROPY_THRESHOLD < min(size[others])
    if aniso_spacing and aniso_voxels:
        low = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(low, max(target[others]) + 1e-5) if low < max(target[others]) else low
    return tuple(float(v) for v in target)  # type: ignore[return-value]


def plan_normalization(modality: str, stats) -> Normalization:
    """CT -> clip to foreground 0.5/99.5 percentiles + dataset z-score; "noNorm" -> none; else z-score."""
    if modality.strip().upper() == "CT":
        std = stats.std if stats.std > 1e-8 else 1.0
        return Normalization("ct", clip_low=stats.p00_5, clip_high=stats.p99_5, mean=stats.mean, std=std)
    if modality.strip().lower() in ("nonorm", "none"):
        return Normalization("none")
    return Normalization("zscore")


# ---------------------------------------------------------------------------- networks
def plan_network(
    spacing: tuple[float, ...],
    median_shape: tuple[float, ...],
    in_channels: int,
    budget_bytes: float,
    dataset_voxels: float,
    patch_size: tuple[int, ...] | None = None,
    batch_size: int | None = None,
) -> NetworkConfig:
    """Patch, topology and batch for one dimensionality (len(spacing) = 2 or 3)."""
    dims = len(spacing)
    if patch_size is None:
        patch = initial_patch(spacing, median_shape)
        topo = topology(spacing, patch)
        while estimate_memory(topo, in_channels, MIN_BATCH) > budget_bytes and max(topo.patch_size) > 8:
            topo = _shrink(topo, spacing, median_shape)
    else:
        topo = topology(spacing, patch_size, pad=False)
    features = tuple(min(BASE_FEATURES * 2**i, MAX_FEATURES[dims]) for i in range(len(topo.strides)))
    if batch_size is None:
        fits = int(budget_bytes // estimate_memory(topo, in_channels, 1))
        cap = int(round(dataset_voxels * MAX_DATASET_FRACTION / math.prod(topo.patch_size)))
        batch_size = max(MIN_BATCH, min(fits, cap))
    return NetworkConfig(topo.patch_size, batch_size, features, topo.kernel_sizes, topo.strides)


def initial_patch(spacing: tuple[float, ...], median_shape: tuple[float, ...]) -> tuple[int, ...]:
    """The voxel budget shaped like the spacing's aspect ratio (finer axes get more voxels), clipped."""
    dims = len(spacing)
    inverse = 1.0 / np.asarray(spacing)
    patch = inverse * (VOXEL_BUDGET[dims] / np.prod(inverse)) ** (1.0 / dims)
    return tuple(max(1, int(round(min(p, m)))) for p, m in zip(patch, median_shape))


def topology(spacing: tuple[float, ...], patch_size: tuple[int, ...], pad: bool = True) -> Topology:
    """nnU-Net's pooling rule; ``pad`` grows the patch to a multiple of 2^pools per axis.

    Without ``pad`` (a patch given by the user), an axis pools only while the patch stays
    divisible; the patch is then returned unchanged.
    """
    dims = len(spacing)
    current_spacing, size = list(spacing), [float(p) for p in patch_size]
    kernel = [1] * dims
    strides, kernels = [tuple([1] * dims)], []
    while True:
        valid = [a for a in range(dims) if size[a] >= 2 * MIN_FEATURE_MAP and (pad or size[a] % 2 == 0)]
        if not valid:
            break
        finest = min(current_spacing[a] for a in valid)
        valid = [a for a in valid if current_spacing[a] / finest < 2]
        if len(valid) == 1 and size[valid[0]] < 3 * MIN_FEATURE_MAP:
            break
        finest_all = min(current_spacing)
        kernel = [3 if kernel[a] == 3 or current_spacing[a] / finest_all < 2 else 1 for a in range(dims)]
        stride = [2 if a in valid else 1 for a in range(dims)]
        for a in valid:
            current_spacing[a] *= 2
            size[a] = math.ceil(size[a] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append(tuple([3] * dims))
    divisor = tuple(math.prod(s[a] for s in strides) for a in range(dims))
    patch = round_up(tuple(int(p) for p in patch_size), divisor) if pad else tuple(int(p) for p in patch_size)
    return Topology(patch, tuple(strides), tuple(kernels))


def _shrink(topo: Topology, spacing: tuple[float, ...], median_shape: tuple[float, ...]) -> Topology:
    """One nnU-Net shrink step: reduce the axis largest relative to the median shape by its divisor."""
    axis = int(np.argmax([p / m for p, m in zip(topo.patch_size, median_shape)]))
    divisor = [math.prod(s[a] for s in topo.strides) for a in range(len(spacing))]
    patch = list(topo.patch_size)
    patch[axis] = max(divisor[axis], patch[axis] - divisor[axis])
    if patch == list(topo.patch_size):  # cannot shrink this axis further: shrink the largest
        axis = int(np.argmax(patch))
        patch[axis] = max(1, patch[axis] // 2)
    return topology(spacing, tuple(patch))


def estimate_memory(topo: Topology, in_channels: int, batch_size: int) -> float:
    """Bytes of training activations (+ weights, gradients, momentum) for a batch."""
    dims = len(topo.patch_size)
    features = [min(BASE_FEATURES * 2**i, MAX_FEATURES[dims]) for i in range(len(topo.strides))]
    size = np.asarray(topo.patch_size, dtype=np.float64)
    elements = in_channels * float(np.prod(size))
    params = 0.0
    previous = in_channels
    for stage, (stride, kernel, f) in enumerate(zip(topo.strides, topo.kernel_sizes, features)):
        size = np.ceil(size / np.asarray(stride))
        last = stage == len(features) - 1
        elements += (6 if last else TENSORS_PER_STAGE) * f * float(np.prod(size))
        params += (previous * f + f * f) * math.prod(kernel) * (1 if last else 2)
        previous = f
    return batch_size * elements * BYTES_PER_ACTIVATION + params * 4 * 4


# ---------------------------------------------------------------------------- recipes
def apply_overrides(plan: Plan, overrides: PlanOverrides, spatial_dims: int = 3) -> Plan:
    """``plan`` with a recipe's ``[plan]`` overrides applied to the ``spatial_dims`` network.

    A patch size override recomputes that network's strides/kernels for it (it must be
    divisible by the resulting total stride); a batch size override replaces the batch size;
    ``base_features`` sets the first stage's width (doubling per stage up to the usual cap), the
    main lever for training speed on CPUs.
    """
    if overrides.target_spacing is not None:
        x, y, z = overrides.target_spacing  # the recipe checks there are three
        plan = replace(plan, target_spacing=(x, y, z))
    if overrides.patch_size is None and overrides.batch_size is None and overrides.base_features is None:
        return plan
    config = plan.config(spatial_dims)
    spacing = plan.target_spacing if spatial_dims == 3 else tuple(plan.target_spacing[a] for a in plan.in_plane_axes)
    if overrides.patch_size is not None:
        if len(overrides.patch_size) != spatial_dims:
            raise ConfigError(
                f"[plan] patch_size needs {spatial_dims} values for a {spatial_dims}D model, got {list(overrides.patch_size)}"
            )
        topo = topology(spacing, tuple(overrides.patch_size), pad=False)
        features = tuple(min(BASE_FEATURES * 2**i, MAX_FEATURES[spatial_dims]) for i in range(len(topo.strides)))
        config = NetworkConfig(topo.patch_size, config.batch_size, features, topo.kernel_sizes, topo.strides)
    if overrides.batch_size is not None:
        config = replace(config, batch_size=overrides.batch_size)
    if overrides.base_features is not None:
        cap = MAX_FEATURES[spatial_dims]
        features = tuple(min(overrides.base_features * 2**i, cap) for i in range(len(config.features)))
        config = replace(config, features=features)
    return plan.with_config(spatial_dims, config)


def plan_for_recipe(recipe: Recipe, spec: DatasetSpec, workers: int = 2) -> Plan:
    """The plan a recipe trains with: ``[plan] file`` (if set) or a fresh plan, then its overrides.

    A target spacing override is planned with (topology and patch follow the new spacing).
    """
    overrides = recipe.plan
    if overrides.file is not None:
        plan = Plan.load(overrides.file)
        if plan.labels != spec.labels or plan.channels != spec.channels:
            raise ConfigError(
                f"plan {overrides.file} was made for labels {plan.labels} and channels {plan.channels}, "
                f"but the dataset has {spec.labels} and {spec.channels}; re-plan with 'medseg plan'"
            )
    elif spec.instances:
        from medseg.training.instance_planner import limit_stages, plan_instances

        plan = apply_overrides(plan_instances(spec, workers=workers), overrides, recipe.model.spatial_dims)
        dims = recipe.model.spatial_dims  # a patch override keeps the instance plan's stage limit
        return plan.with_config(dims, limit_stages(plan.config(dims)))
    else:
        fp = compute_fingerprint(spec, workers=workers)
        spacing = tuple(overrides.target_spacing) if overrides.target_spacing else None
        plan = plan_from_fingerprint(fp, spec.name, spec.labels, overrides.memory_gb, spacing)  # type: ignore[arg-type]
    return apply_overrides(plan, overrides, recipe.model.spatial_dims)
