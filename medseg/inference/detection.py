"""Mask R-CNN on images of any size: fixed tiles, detections merged across tile borders, one instance map.

The network (:mod:`medseg.networks.maskrcnn`) sees tiles of its training patch size. An image is
zero-padded to at least one tile (the preprocessed image is z-scored, so 0 is its mean) and
covered by tiles that overlap by at least ``overlap`` voxels (the plan's 99th-percentile object
extent; :func:`medseg.inference.sliding.tile_starts` spreads them evenly). Merging:

1. **ownership**: a detection is kept only from the tile whose *core* holds its box centre (the
   tile minus half the overlap on every side shared with another tile). Cores tile the image
   without gaps or overlaps, so every object is reported once, and by a tile in which an object
   up to ``overlap`` voxels across lies whole (not cut at the tile's border);
2. detections under ``score_threshold`` are dropped; box non-maximum suppression over the whole
   image (IoU > ``nms_threshold``) removes what ownership could not (objects larger than the
   overlap);
3. masks (thresholded at ``mask_threshold``) are painted from the highest score down, each voxel
   kept by the first object that claims it; objects left with fewer than ``min_size`` voxels are
   dropped and ids renumbered 1..N in that order, so id 1 is the most confident object.

Axes: the preprocessed image is (C, X, Y) (X = column index i, Y = row index j of the source);
torchvision's ``(C, H, W)`` is read as ``H = X``, ``W = Y``, so its boxes ``(x0, y0, x1, y1)`` span
``Y`` then ``X``. Training builds its targets the same way (:mod:`medseg.training.detection_step`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medseg.errors import ConfigError
from medseg.inference.sliding import tile_starts

if TYPE_CHECKING:
    from torch import nn

    from medseg.model.runtime import Runtime


@dataclass(frozen=True)
class DetectionSettings:
    """How detections become an instance map (``model.json``'s ``instances``)."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    nms_threshold: float = 0.3
    min_size: int = 10
    overlap: int = 64

    def __post_init__(self) -> None:
        for name in ("score_threshold", "mask_threshold", "nms_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"instances.{name} must lie in (0, 1), got {getattr(self, name)}")
        if self.min_size < 1 or self.overlap < 0:
            raise ConfigError("instances.min_size must be at least 1 and overlap at least 0")

    @classmethod
    def from_spec(cls, instances: Mapping[str, Any]) -> DetectionSettings:
        """The settings stored in ``model.json``'s ``instances`` (other keys ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in instances.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Detections:
    """Kept detections of one image: scores (N,), boxes (N, 4) as (x0, x1, y0, y1) voxel bounds
    along X then Y (start inclusive, stop exclusive), and a boolean mask per box (its box region)."""

    scores: np.ndarray
    boxes: np.ndarray
    masks: tuple[np.ndarray, ...]


def tile_origins(shape: tuple[int, int], tile: tuple[int, int], overlap: int) -> list[tuple[int, int]]:
    """Tile origins covering ``shape`` (each >= tile) with at least ``overlap`` voxels of overlap."""
    starts = [tile_starts(s, t, min(overlap, t - 1) / t) for s, t in zip(shape, tile)]
    return [(a, b) for a in starts[0] for b in starts[1]]


def core(start: int, size: int, tile: int, starts: list[int]) -> tuple[float, float]:
    """The part of the tile at ``start`` (along one axis) that owns box centres: halfway to each
    neighbouring tile's start / end, the image edge where there is no neighbour."""
    index = starts.index(start)
    low = 0.0 if index == 0 else (start + starts[index - 1] + tile) / 2.0
    high = float(size) if index == len(starts) - 1 else (starts[index + 1] + start + tile) / 2.0
    return low, high


def detect_instances(
    network: nn.Module,
    image: np.ndarray,
    tile: tuple[int, int],
    settings: DetectionSettings,
    runtime: Runtime,
    tiles_per_batch: int = 2,
) -> tuple[np.ndarray, dict[int, float]]:
    """Instance ids (X, Y) uint16 (uint32 beyond 65535 objects) and the score of each id.

    Needs a Mask R-CNN in eval mode and a preprocessed 2D image (C, X, Y). Runs in fp32 on the
    runtime's device (torchvision's detection post-processing is not autocast-safe everywhere).
    """
    shape = image.shape[1:]
    padded = np.zeros((image.shape[0], *(max(s, t) for s, t in zip(shape, tile))), dtype=np.float32)
    padded[:, : shape[0], : shape[1]] = image
    heads: Any = network.get_submodule("roi_heads")
    previous, heads.score_thresh = heads.score_thresh, settings.score_threshold  # no masks for what is dropped
    try:
        detections = _detect(network, padded, tile, settings, runtime, tiles_per_batch)
    finally:
        heads.score_thresh = previous
    ids, scores = paint(detections, padded.shape[1:], settings.min_size)
    ids = ids[: shape[0], : shape[1]]
    return ids.astype(np.uint16 if len(scores) <= 65535 else np.uint32), scores


def _detect(
    network: nn.Module,
    image: np.ndarray,
    tile: tuple[int, int],
    settings: DetectionSettings,
    runtime: Runtime,
    tiles_per_batch: int,
) -> Detections:
    """Owned, confident detections of every tile, then NMS over the whole image."""
    from torchvision.ops import nms

    shape = image.shape[1:]
    origins = tile_origins(shape, tile, settings.overlap)
    starts = [sorted({o[a] for o in origins}) for a in (0, 1)]
    scores: list[float] = []
    boxes: list[tuple[int, int, int, int]] = []
    masks: list[np.ndarray] = []
    tensor = torch.from_numpy(image)
    for first in range(0, len(origins), tiles_per_batch):
        batch = origins[first : first + tiles_per_batch]
        tiles = [tensor[:, x : x + tile[0], y : y + tile[1]].to(runtime.device) for x, y in batch]
        with torch.inference_mode():
            outputs = network.eval()(tiles)
        for (x, y), out in zip(batch, outputs):
            cores = (core(x, shape[0], tile[0], starts[0]), core(y, shape[1], tile[1], starts[1]))
            _keep_owned(out, (x, y), cores, settings, scores, boxes, masks)
    if not scores:
        return Detections(np.zeros(0), np.zeros((0, 4), dtype=np.int64), ())
    score = torch.tensor(scores, dtype=torch.float32)
    box = torch.tensor(np.array(boxes), dtype=torch.float32)
    keep = nms(box[:, [2, 0, 3, 1]], score, settings.nms_threshold).numpy()  # (y0, x0, y1, x1) order is fine for IoU
    return Detections(score.numpy()[keep], np.array(boxes)[keep], tuple(masks[k] for k in keep))


def _keep_owned(
    out: Mapping[str, torch.Tensor],
    origin: tuple[int, int],
    cores: tuple[tuple[float, float], ...],
    settings: DetectionSettings,
    scores: list,
    boxes: list,
    masks: list,
) -> None:
    """Append the confident detections of one tile whose box centre lies in the tile's core."""
    x0, y0 = origin
    for score, box, mask in zip(out["scores"].tolist(), out["boxes"].cpu().numpy(), out["masks"].cpu()):
        if score < settings.score_threshold:
            continue
        cx, cy = x0 + (box[1] + box[3]) / 2.0, y0 + (box[0] + box[2]) / 2.0  # torchvision: (W0, H0, W1, H1)
        if not (cores[0][0] <= cx < cores[0][1] and cores[1][0] <= cy < cores[1][1]):
            continue
        ax0, ax1 = int(np.floor(box[1])), int(np.ceil(box[3]))
        ay0, ay1 = int(np.floor(box[0])), int(np.ceil(box[2]))
        if ax1 <= ax0 or ay1 <= ay0:
            continue
        scores.append(score)
        boxes.append((x0 + ax0, x0 + ax1, y0 + ay0, y0 + ay1))
        masks.append(mask[0, ax0:ax1, ay0:ay1].numpy() > settings.mask_threshold)


def paint(detections: Detections, shape: tuple[int, ...], min_size: int) -> tuple[np.ndarray, dict[int, float]]:
    """An instance map from detections: highest score first, each voxel kept by the first object
    claiming it, objects under ``min_size`` voxels dropped, ids 1..N in score order."""
    ids = np.zeros(shape, dtype=np.int64)
    scores: dict[int, float] = {}
    for n in np.argsort(-detections.scores, kind="stable"):
        x0, x1, y0, y1 = (int(v) for v in detections.boxes[n])
        region = ids[x0:x1, y0:y1]
        free = detections.masks[n] & (region == 0)
        if int(free.sum()) < min_size:
            continue
        new = len(scores) + 1
        region[free] = new
        scores[new] = round(float(detections.scores[n]), 6)
    return ids, scores
