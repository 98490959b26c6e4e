"""Box mAP, COCO-style, with pycocotools (the COCO reference implementation).

Every image's reference objects and predicted objects become axis-aligned boxes (their extent in
voxels, :func:`medseg.evaluation.objects.instance_boxes`); ``COCOeval`` matches them greedily by
score at IoU 0.50:0.05:0.95 and averages the 101-point interpolated precision (area range "all",
one class). Reported: **mAP** (mean over the ten thresholds), **AP50** and **AP75**.

* 2D boxes go through ``COCOeval`` unchanged (``bbox = [x, y, width, height]`` with ``x`` the
  column index ``i`` and ``y`` the row index ``j``).
* 3D boxes use ``COCOeval`` with only its IoU step replaced (:class:`_Box3DEval`, as detectron2's
  rotated-box evaluator does): the IoU of two boxes in voxels from MONAI's ``box_iou``; the
  matching, accumulation and interpolation are pycocotools' own.
* Scores: a prediction without scores (a plain label map) gives every object score 1, so the
  ranking inside an image is arbitrary and the AP describes that single operating point.
* Detections per image are not capped at COCO's 100 (nuclei images hold up to ~400 objects): the
  cap is the largest number of predictions in any image.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class ImageBoxes:
    """One image's boxes, ``(n, 2 * ndim)`` start/stop corners in voxels, and the prediction scores."""

    true_boxes: np.ndarray
    pred_boxes: np.ndarray
    pred_scores: np.ndarray


@dataclass(frozen=True)
class BoxAP:
    """COCO box AP over a set of images (``nan`` when no image has a reference object)."""

    map: float
    ap50: float
    ap75: float


def box_map(images: Sequence[ImageBoxes]) -> BoxAP:
    """COCO-style box mAP, AP50 and AP75 of ``images`` (all 2D or all 3D boxes)."""
    ndims = {b.shape[1] // 2 for im in images for b in (im.true_boxes, im.pred_boxes) if len(b)}
    if len(ndims) > 1:
        raise ValueError(f"boxes of different dimensions {sorted(ndims)} cannot be scored together")
    three_d = ndims == {3}
    ground_truth = _coco([(im.true_boxes, None) for im in images], three_d)
    detections = _coco([(im.pred_boxes, im.pred_scores) for im in images], three_d)
    evaluator = (_Box3DEval if three_d else COCOeval)(ground_truth, detections, "bbox")
    evaluator.params.imgIds = list(range(1, len(images) + 1))
    evaluator.params.catIds = [1]
    most = max((len(im.pred_boxes) for im in images), default=0)
    evaluator.params.maxDets = [1, 10, max(100, most)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, 0, 0, -1]  # [threshold, recall] for area "all", most dets
    return BoxAP(_mean(precision), _mean(precision[0]), _mean(precision[5]))


def _mean(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


def _coco(images: Sequence[tuple[np.ndarray, np.ndarray | None]], three_d: bool) -> COCO:
    """An in-memory COCO object (image ids 1..n, one category) of corner boxes and optional scores."""
    annotations: list[dict[str, object]] = []
    for image_id, (boxes, scores) in enumerate(images, start=1):
        for n, box in enumerate(np.asarray(boxes, dtype=np.float64)):
            d = len(box) // 2
            size = np.asarray(box[d:]) - np.asarray(box[:d])
            bbox = (
                [float(v) for v in box] if three_d else [float(box[0]), float(box[1]), float(size[0]), float(size[1])]
            )
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": bbox,
                "area": float(np.prod(size)),
                "iscrowd": 0,
            }
            if scores is not None:
                annotation["score"] = float(scores[n])
            annotations.append(annotation)
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in range(1, len(images) + 1)],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class _Box3DEval(COCOeval):
    """``COCOeval`` for 3D corner boxes ``[i0, j0, k0, i1, j1, k1]``: only the IoU step differs."""

    def computeIoU(self, imgId: int, catId: int) -> np.ndarray | list:
        from monai.data.box_utils import box_iou

        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 or len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: self.params.maxDets[-1]]
        dt_boxes = np.array([dt[i]["bbox"] for i in order], dtype=np.float64)
        gt_boxes = np.array([g["bbox"] for g in gt], dtype=np.float64)
        return np.asarray(box_iou(dt_boxes, gt_boxes), dtype=np.float64)
