"""Training targets derived from instance maps in the data pipeline, after augmentation.

The case cache keeps instance maps (one id per object); every training patch is cropped and
augmented with its ids (nearest-neighbour, so ids survive rotation, scaling and mirroring), and
only then turned into the target of the model family, so targets are always exact for the patch
the network sees:

* U-Net instance family (:class:`InteriorBoundaryTarget`): three classes, 0 = background,
  1 = object interior, 2 = object boundary: the object voxels within ``width`` voxels (face
  connectivity) of a voxel with another id, background included. Touching objects are thereby
  separated by boundary voxels, and the seeded watershed of
  :mod:`medseg.inference.watershed` rebuilds them from the interiors.
* Mask R-CNN: the ids themselves (``label``); boxes and masks are made in
  :mod:`medseg.training.detection_step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
#: classes of the interior/boundary target
TARGET_CLASSES = 3


def boundary_mask(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """Object voxels within ``width`` face-steps of a voxel holding another id (background included).

    Needs a non-negative integer array (2D or 3D). Promises a boolean array of the same shape,
    False on background.
    """
    from scipy import ndimage

    footprint = ndimage.generate_binary_structure(instances.ndim, 1)
    high, low = instances, instances
    for _ in range(max(1, width)):
        high = ndimage.maximum_filter(high, footprint=footprint, mode="nearest")
        low = ndimage.minimum_filter(low, footprint=footprint, mode="nearest")
    return (instances > 0) & ((high != instances) | (low != instances))


def interior_boundary(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """The three-class target (uint8: background 0, interior 1, boundary 2) of an instance map."""
    target = (instances > 0).astype(np.uint8)
    target[boundary_mask(instances, width)] = BOUNDARY
    return target


@dataclass(frozen=True)
class InteriorBoundaryTarget:
    """Batch-pipeline step: an augmented id patch ``(1, *patch)`` -> its interior/boundary classes.

    Picklable (it travels to DataLoader workers).
    """

    width: int = 1

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        ids = label[0].numpy()
        return torch.from_numpy(interior_boundary(ids, self.width).astype(np.int64))[None]
