"""Instances from the U-Net instance heads: a seeded watershed (scikit-image).

The network predicts three classes per voxel, background / object interior / object boundary
(targets: :mod:`medseg.training.instance_targets`). Instances are made on the **whole** stitched
probability map, after the sliding window has blended every tile (so no object is ever cut at a
tile border):

1. foreground: ``P(background) < 1 - foreground_threshold`` (interior + boundary);
2. seeds: connected components (face connectivity) of ``P(interior) > seed_threshold`` inside the
   foreground; seeds smaller than ``min_seed`` voxels are dropped (specks between touching
   objects);
3. ``skimage.segmentation.watershed`` floods ``1 - P(interior)`` from the seeds inside the
   foreground, so each boundary voxel joins the seed it is closest to in probability;
4. foreground components that hold no seed become objects of their own; objects smaller than
   ``min_size`` voxels are removed and ids are renumbered 1..N.

2D images (one slice) are processed as 2D arrays; 3D volumes in 3D.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medseg.errors import ConfigError


@dataclass(frozen=True)
class WatershedSettings:
    """The thresholds and sizes of the seeded watershed (``model.json``'s ``instances``)."""

    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_seed: int = 3
    min_size: int = 10

    def __post_init__(self) -> None:
        for name in ("foreground_threshold", "seed_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"instances.{name} must lie in (0, 1), got {getattr(self, name)}")
        if self.min_seed < 1 or self.min_size < 1:
            raise ConfigError("instances.min_seed and min_size must be at least 1")

    @classmethod
    def from_spec(cls, instances: Mapping[str, Any]) -> WatershedSettings:
        """The settings stored in ``model.json``'s ``instances`` (other keys ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in instances.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def watershed_instances(probabilities: np.ndarray, settings: WatershedSettings) -> np.ndarray:
    """Instance ids (uint16; uint32 beyond 65535 objects) from (3, X, Y, Z) class probabilities.

    Needs probabilities of background, interior and boundary (the U-Net instance head's softmax).
    Promises an array of shape (X, Y, Z), 0 = background, objects numbered 1..N.
    """
    if probabilities.ndim != 4 or probabilities.shape[0] != 3:
        raise ValueError(f"the watershed needs (3, X, Y, Z) probabilities, got {probabilities.shape}")
    one_slice = probabilities.shape[3] == 1
    probs = probabilities[..., 0] if one_slice else probabilities
    labels = _watershed(probs[0], probs[1], settings)
    return (labels[..., None] if one_slice else labels).astype(
        np.uint16 if labels.max(initial=0) <= 65535 else np.uint32
    )


def _watershed(background: np.ndarray, interior: np.ndarray, settings: WatershedSettings) -> np.ndarray:
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential, watershed

    foreground = background < 1.0 - settings.foreground_threshold
    seeds = drop_small(label((interior > settings.seed_threshold) & foreground, connectivity=1), settings.min_seed)
    labels = watershed(1.0 - interior, markers=seeds, mask=foreground, connectivity=1)
    unreached = foreground & (labels == 0)  # foreground pieces without a seed keep their own ids
    if unreached.any():
        extra = label(unreached, connectivity=1)
        labels[unreached] = extra[unreached] + labels.max()
    return relabel_sequential(drop_small(labels, settings.min_size))[0]


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` with every id covering fewer than ``min_size`` voxels set to 0 (in place)."""
    if min_size <= 1 or not labels.any():
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels[small[labels]] = 0
    return labels
