"""The training plan: how a dataset is preprocessed and which network shapes train on it.

A :class:`Plan` is produced by :func:`medseg.training.planner.plan_dataset`, saved as readable JSON
(``plan.json``) that a user may edit, and travels inside every trained model folder, because
inference must preprocess exactly as training did. Every object is validated when constructed,
so an edited ``plan.json`` that makes no sense fails on load with the field named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError
from medseg.networks.config import NetworkConfig

#: bumped when the JSON layout changes incompatibly
PLAN_VERSION = 1
NORMALIZATION_SCHEMES = ("zscore", "ct", "none")
IMAGE_INTERPOLATIONS = ("linear", "cubic")


@dataclass(frozen=True)
class Normalization:
    """How one input channel is normalised.

    ``"zscore"``: per-image z-score (MR and other modalities). ``"ct"``: clip to the dataset's
    foreground 0.5/99.5 percentiles ``clip_low``/``clip_high``, then z-score with the dataset's
    foreground ``mean``/``std``. ``"none"``: values used as they are.
    """

    scheme: str
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.scheme not in NORMALIZATION_SCHEMES:
            raise ConfigError(
                f"unknown normalization scheme {self.scheme!r}; use one of {', '.join(NORMALIZATION_SCHEMES)}"
            )
        if self.scheme == "ct":
            values = (self.clip_low, self.clip_high, self.mean, self.std)
            if any(v is None or not math.isfinite(v) for v in values):
                raise ConfigError("a 'ct' normalization needs finite clip_low, clip_high, mean and std")
            if self.clip_low > self.clip_high or self.std <= 0:  # type: ignore[operator]
                raise ConfigError(
                    f"'ct' normalization needs clip_low <= clip_high and std > 0, got "
                    f"{self.clip_low}, {self.clip_high}, std {self.std}"
                )


@dataclass(frozen=True)
class InstancePlan:
    """How an instance model sees its objects, planned from the object fingerprint
    (:mod:`medseg.training.object_fingerprint`), in voxels of the preprocessed grid.

    ``diameter``: equivalent diameter percentiles 5 / 50 / 95 of the training objects.
    ``min_size``: objects (and watershed seeds) smaller than this many voxels are dropped.
    ``anchor_sizes`` / ``aspect_ratios``: Mask R-CNN anchors, one size per FPN level.
    ``tile_overlap``: overlap in voxels of the detection tiles (the 2D network's patch size): at
    least the 99th-percentile object extent, so almost every object lies whole inside some tile.
    ``max_objects``: detections kept per tile.
    """

    diameter: tuple[float, float, float]
    min_size: int
    anchor_sizes: tuple[int, ...]
    aspect_ratios: tuple[float, ...]
    tile_overlap: int
    max_objects: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "diameter", tuple(float(v) for v in self.diameter))
        object.__setattr__(self, "anchor_sizes", tuple(int(v) for v in self.anchor_sizes))
        object.__setattr__(self, "aspect_ratios", tuple(float(v) for v in self.aspect_ratios))
        if len(self.diameter) != 3 or min(self.diameter) < 0:
            raise ConfigError(f"instances.diameter needs 3 non-negative percentiles, got {list(self.diameter)}")
        if (
            not self.anchor_sizes
            or min(self.anchor_sizes) < 1
            or not self.aspect_ratios
            or min(self.aspect_ratios) <= 0
        ):
            raise ConfigError("instances.anchor_sizes and aspect_ratios need positive values")
        if self.tile_overlap < 0 or self.min_size < 1 or self.max_objects < 1:
            raise ConfigError(
                f"instances: tile_overlap ({self.tile_overlap}) must be >= 0, min_size and max_objects at least 1"
            )


@dataclass(frozen=True)
class Plan:
    """Everything needed to preprocess cases and build the networks for one dataset.

    ``target_spacing`` is in mm along the canonical (closest-RAS) i, j, k axes; ``config_2d``
    works on slices across ``slice_axis`` (its patch axes are the other two canonical axes in
    increasing order). ``labels`` includes ``0: "background"``. ``fingerprint`` holds dataset
    statistics: training does not read them; inference compares inputs with them
    (:mod:`medseg.inference.suitability`). ``pixel_grid``: images are used on their own voxel grid,
    never resampled (datasets whose images state no spacing, such as PNG microscopy; the model
    then works in pixels). ``bright_objects``: after normalisation, an image whose objects are
    darker than its background is negated, so every image shows bright objects on a dark
    background (microscopy: fluorescence as it is, bright-field and H&E inverted; see
    :func:`medseg.model.preprocess.dark_objects`). ``instances``: the object plan of an instance
    dataset (else None).
    """

    name: str
    channels: tuple[str, ...]
    labels: dict[int, str]
    target_spacing: tuple[float, float, float]
    normalization: tuple[Normalization, ...]
    config_3d: NetworkConfig
    config_2d: NetworkConfig
    slice_axis: int
    fingerprint: dict = field(default_factory=dict)
    image_interpolation: str = "linear"
    pixel_grid: bool = False
    bright_objects: bool = False
    instances: InstancePlan | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        object.__setattr__(self, "labels", {int(k): str(v) for k, v in sorted(self.labels.items())})
        object.__setattr__(self, "target_spacing", tuple(float(v) for v in self.target_spacing))
        object.__setattr__(self, "normalization", tuple(self.normalization))
        if not self.channels:
            raise ConfigError("a plan needs at least one input channel")
        if len(self.normalization) != len(self.channels):
            raise ConfigError(
                f"the plan has {len(self.channels)} channel(s) but {len(self.normalization)} "
                "normalization entries; give one per channel"
            )
        if 0 not in self.labels or len(self.labels) < 2:
            raise ConfigError("plan labels need 0 (background) and at least one foreground class")
        if len(self.target_spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.target_spacing):
            raise ConfigError(f"target_spacing needs 3 positive values in mm, got {list(self.target_spacing)}")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")
        if self.config_3d.spatial_dims != 3 or self.config_2d.spatial_dims != 2:
            raise ConfigError("config_3d needs a 3D patch size and config_2d a 2D patch size")
        if self.image_interpolation not in IMAGE_INTERPOLATIONS:
            raise ConfigError(
                f"unknown image_interpolation {self.image_interpolation!r}; use one of "
                f"{', '.join(IMAGE_INTERPOLATIONS)}"
            )

    # ------------------------------------------------------------------ access
    @property
    def num_classes(self) -> int:
        """Number of network outputs: the largest label value + 1."""
        return max(self.labels) + 1

    def config(self, spatial_dims: int) -> NetworkConfig:
        """``config_3d`` for 3, ``config_2d`` for 2."""
        if spatial_dims == 3:
            return self.config_3d
        if spatial_dims == 2:
            return self.config_2d
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")

    @property
    def in_plane_axes(self) -> tuple[int, int]:
        """The two canonical axes a 2D slice keeps (increasing order)."""
        return tuple(a for a in range(3) if a != self.slice_axis)  # type: ignore[return-value]

    def with_config(self, spatial_dims: int, config: NetworkConfig) -> Plan:
        """A copy with the 3D or 2D network configuration replaced."""
        if spatial_dims == 3:
            return replace(self, config_3d=config)
        return replace(self, config_2d=config)

    def preprocessing_fields(self) -> dict[str, Any]:
        """The fields that decide the preprocessed arrays (what a cache key must cover)."""
        return {
            "channels": list(self.channels),
            "labels": {str(k): v for k, v in self.labels.items()},
            "target_spacing": list(self.target_spacing),
            "normalization": [asdict(n) for n in self.normalization],
            "image_interpolation": self.image_interpolation,
            **({"pixel_grid": True} if self.pixel_grid else {}),  # older cache keys stay valid
            **({"bright_objects": True} if self.bright_objects else {}),
        }

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with a ``version`` field (lists for tuples, string label keys)."""
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return {"version": PLAN_VERSION, **_lists(data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Build a validated Plan from :meth:`to_dict` output (raises ConfigError naming the problem)."""
        version = data.get("version")
        if version != PLAN_VERSION:
            raise ConfigError(f"plan version {version!r} is not supported; this medseg reads version {PLAN_VERSION}")
        try:
            fields = {k: v for k, v in data.items() if k != "version"}
            fields["labels"] = {int(k): v for k, v in fields["labels"].items()}
            fields["normalization"] = tuple(Normalization(**n) for n in fields["normalization"])
            fields["config_3d"] = NetworkConfig(**fields["config_3d"])
            fields["config_2d"] = NetworkConfig(**fields["config_2d"])
            if fields.get("instances") is not None:
                fields["instances"] = InstancePlan(**fields["instances"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"the plan is malformed ({type(exc).__name__}: {exc}); regenerate it with 'medseg plan'"
            ) from None

    def save(self, path: str | Path) -> Path:
        """Write the plan as indented JSON, atomically; returns the path."""
        from medseg.io.atomic import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan JSON written by :meth:`save` (possibly edited by hand)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"plan file {path} does not exist; create one with 'medseg plan DATASET -o {path}'")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}); fix or regenerate it") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _lists(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON shows them the same; keeps equality after a round trip)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
