"""Plans for instance datasets (2D RGB microscopy, 3D instance maps), from the object fingerprint.

What differs from :mod:`medseg.training.planner` (semantic datasets):

* **grid**: images that state no pixel size (PNG, most microscopy) are used on their own pixel grid
  (``Plan.pixel_grid``: no resampling; sizes below are in pixels); with stated spacings the median
  spacing is the target, as for volumes;
* **channels**: one per-image z-score per channel (colour channels of fluorescence, bright-field and
  H&E images differ too much between images for one dataset-wide normalisation), and
  ``bright_objects``: an image whose objects are darker than its background (bright-field, H&E) is
  negated, so the network sees one polarity, bright objects on a dark background, in every image;
* **patch**: the 2D network sees slices across the one-slice axis of 2D images; its patch is the
  median image extent, capped at :data:`MAX_PATCH_2D` per axis (objects of tens of pixels need no
  more context, and a CPU trains small patches faster), made divisible by the network's stride;
  the sliding window then moves by half a patch (the predictor's overlap 0.5); at most
  :data:`MAX_STAGES` stages (4 poolings: a receptive field of well over 100 voxels, several object
  diameters, and a network small enough to ship; a recipe's patch override keeps this limit);
* **objects** (:class:`~medseg.model.plan.InstancePlan`): diameter percentiles; the smallest object
  kept (the 1st percentile of the object sizes); Mask R-CNN anchors, one per FPN level (strides 4..64),
  the first the power of two nearest the 5th-percentile box extent, then doubling; aspect ratios
  from the 5th / 95th percentiles of the boxes' side ratios; the detection-tile overlap (the
  99th-percentile box extent, rounded up to 8); detections kept per tile (twice the densest
  image's objects per tile area, at least 100).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import ConfigError
from medseg.model.plan import InstancePlan, NetworkConfig, Normalization, Plan
from medseg.networks.config import round_up
from medseg.training.object_fingerprint import ObjectFingerprint, compute_object_fingerprint
from medseg.training.planner import plan_network

if TYPE_CHECKING:
    from medseg.training.dataset import DatasetSpec

#: largest 2D training patch per axis
MAX_PATCH_2D = 256
#: most network stages (the first at full resolution, then one per pooling)
MAX_STAGES = 5
#: the planner's memory budget (GB): a GPU-sized batch; CPU recipes override the batch size
MEMORY_GB = 8.0
ANCHOR_LEVELS = 5


def plan_instances(spec: DatasetSpec, max_cases: int | None = None, workers: int = 2) -> Plan:
    """Fingerprint an instance dataset's objects and plan preprocessing, networks and objects.

    Needs ``spec.instances`` (InputError otherwise, from the fingerprint). Promises a Plan with
    ``instances`` set; ``pixel_grid`` when some image states no spacing.
    """
    return plan_from_objects(
        compute_object_fingerprint(spec, max_cases=max_cases, workers=workers), spec.name, spec.labels
    )


def plan_from_objects(fp: ObjectFingerprint, name: str, labels: dict[int, str]) -> Plan:
    """The plan for an object fingerprint (see the module for every rule)."""
    summary = fp.summary()
    if summary["objects_per_image"]["total"] == 0:
        raise ConfigError(f"dataset {name!r} holds no objects in its instance maps; nothing to plan from")
    pixel_grid = not summary["spacing_known"]
    spacing = (1.0, 1.0, 1.0) if pixel_grid else tuple(float(v) for v in summary["spacing_mm"]["median"])
    median = tuple(float(v) for v in summary["shape"]["median"])
    dims = summary["dims"]
    slice_axis = 2 if dims == 2 else int(np.argmax(spacing))
    in_plane = [a for a in range(3) if a != slice_axis]
    voxels = float(np.prod(np.array([im.shape for im in fp.images], dtype=np.float64), axis=1).sum())
    budget = MEMORY_GB * 1024**3
    patch_2d = tuple(min(MAX_PATCH_2D, max(16, int(median[a]))) for a in in_plane)
    config_2d = limit_stages(
        plan_network(
            tuple(spacing[a] for a in in_plane),
            tuple(median[a] for a in in_plane),
            len(fp.channels),
            budget,
            voxels,
            patch_size=_divisible(patch_2d),
        )
    )
    config_3d = limit_stages(plan_network(spacing, median, len(fp.channels), budget, voxels))
    summary["dataset_voxels"] = int(voxels)
    return Plan(
        name=name,
        channels=fp.channels,
        labels=labels,
        target_spacing=spacing,  # type: ignore[arg-type]
        normalization=tuple(Normalization("zscore") for _ in fp.channels),
        config_3d=config_3d,
        config_2d=config_2d,
        slice_axis=slice_axis,
        fingerprint=summary,
        pixel_grid=pixel_grid,
        bright_objects=True,
        instances=object_plan(fp, config_2d.patch_size),
    )


def _divisible(patch: tuple[int, ...]) -> tuple[int, ...]:
    """Each size rounded down to a multiple of 32 (five poolings of 2), at least 32."""
    return tuple(max(32, p // 32 * 32) for p in patch)


def limit_stages(config: NetworkConfig, stages: int = MAX_STAGES) -> NetworkConfig:
    """``config`` with at most ``stages`` stages (the deepest dropped); the patch stays divisible."""
    if len(config.features) <= stages:
        return config
    strides = config.strides[:stages]
    divisor = tuple(math.prod(s[a] for s in strides) for a in range(config.spatial_dims))
    return NetworkConfig(
        round_up(config.patch_size, divisor),
        config.batch_size,
        config.features[:stages],
        config.kernel_sizes[:stages],
        strides,
    )


#: predicted objects smaller than this percentile of the training objects' sizes are taken for specks
MIN_SIZE_PERCENTILE = 1.0


def object_plan(fp: ObjectFingerprint, tile: tuple[int, ...]) -> InstancePlan:
    """Object sizes, the smallest kept object, anchors, aspect ratios, tile overlap, detections per tile."""
    diameters = fp.pooled("diameters")
    sizes = fp.pooled("sizes")
    extents = fp.pooled("box_extents").astype(np.float64)
    in_plane = extents[:, :2] if extents.shape[1] >= 2 else extents
    p5, p50, p95 = (float(v) for v in np.percentile(diameters, [5, 50, 95]))
    first = 2 ** max(2, round(math.log2(max(4.0, float(np.percentile(in_plane.max(axis=1), 5))))))
    ratios = in_plane[:, 0] / np.maximum(in_plane[:, 1], 1.0)
    low, high = (float(np.clip(v, 0.25, 4.0)) for v in np.percentile(ratios, [5, 95]))
    aspect = tuple(sorted({round(min(low, 1 / high), 2), 1.0, round(max(high, 1 / low), 2)}))
    overlap = int(math.ceil(float(np.percentile(in_plane.max(axis=1), 99)) / 8.0) * 8)
    tile_area = float(np.prod(tile))
    density = max(im.count / float(np.prod(im.shape[:2])) for im in fp.images)
    return InstancePlan(
        diameter=(round(p5, 3), round(p50, 3), round(p95, 3)),
        min_size=max(3, round(float(np.percentile(sizes, MIN_SIZE_PERCENTILE)))),
        anchor_sizes=tuple(int(first * 2**i) for i in range(ANCHOR_LEVELS)),
        aspect_ratios=aspect,
        tile_overlap=min(overlap, min(tile) // 2),
        max_objects=max(100, math.ceil(2.0 * density * tile_area)),
    )
