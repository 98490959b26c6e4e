"""Instance metrics: DSB2018 score, AP@0.5, COCO box mAP and counts, on hand-made maps with answers
worked out by hand, on real DSB2018 labels, and through `medseg evaluate --instances`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.evaluation.boxes import ImageBoxes, box_map
from medseg.evaluation.instance_eval import evaluate_instances, image_boxes
from medseg.evaluation.instances import DSB_THRESHOLDS, score_instances


def _squares(shift: int = 0, second: bool = True) -> np.ndarray:
    """Two 10x10 squares (ids 1 and 2); the second shifted by ``shift`` columns."""
    labels = np.zeros((40, 40), dtype=np.uint16)
    labels[2:12, 2:12] = 1
    if second:
        labels[20:30, 20 + shift : 30 + shift] = 2
    return labels


def test_thresholds_are_the_dsb_ones() -> None:
    assert DSB_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_one_object_shifted_by_half() -> None:
    # shift 5: intersection 50, union 150, IoU 1/3 -> never matched; the other square always is.
    # TP 1, FP 1, FN 1 at every threshold: 1 / 3.
    scores = score_instances("a", _squares(5), _squares())
    assert (scores.n_true, scores.n_pred, scores.matched50) == (2, 2, 1)
    assert scores.ap50 == pytest.approx(1 / 3) and scores.dsb_score == pytest.approx(1 / 3)


def test_one_object_shifted_by_two() -> None:
    # shift 2: intersection 80, union 120, IoU 2/3: matched at 0.50-0.65 (precision 1), not at
    # 0.70-0.95 (precision 1/3): DSB = (4 * 1 + 6 / 3) / 10 = 0.6.
    scores = score_instances("b", _squares(2), _squares())
    assert scores.matched == (2, 2, 2, 2, 1, 1, 1, 1, 1, 1)
    assert scores.dsb_score == pytest.approx(0.6) and scores.ap50 == 1.0


def test_iou_of_exactly_one_half_is_not_a_match() -> None:
    reference = np.zeros((20, 20), np.uint8)
    reference[0:10, 0:10] = 1
    prediction = np.zeros_like(reference)
    prediction[0:10, 0:5] = 1  # 50 of 100 pixels: IoU exactly 0.5
    scores = score_instances("c", prediction, reference)
    assert scores.matched50 == 0 and scores.ap50 == 0.0 and scores.dsb_score == 0.0


def test_empty_maps_and_sparse_ids() -> None:
    empty = np.zeros((40, 40), np.uint16)
    assert score_instances("d", empty, _squares()).dsb_score == 0.0
    assert score_instances("e", _squares(), empty).dsb_score == 0.0
    both = score_instances("f", empty, empty)
    assert (both.n_true, both.n_pred, both.dsb_score) == (0, 0, 1.0)
    sparse = _squares(2).astype(np.int32)
    sparse[sparse == 1], sparse[sparse == 2] = 7, 1000
    assert score_instances("g", sparse, _squares()).dsb_score == pytest.approx(0.6)


def _spheres() -> np.ndarray:
    """Two balls of radius 6 touching at one face (ids 1, 2) in a 3D volume."""
    grid = np.indices((30, 20, 20)).astype(np.float64)
    volume = np.zeros((30, 20, 20), np.uint16)
    for iid, centre in ((1, (8.5, 10, 10)), (2, (20.5, 10, 10))):
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 36
        volume[inside & (volume == 0)] = iid
    return volume


def test_3d_touching_spheres_merged_and_kept() -> None:
    spheres = _spheres()
    sizes = np.bincount(spheres.ravel())
    assert sizes[1] == sizes[2]  # mirror images
    assert score_instances("h", spheres, spheres).dsb_score == 1.0
    # one merged object covering both: IoU with each ball = V / 2V = 0.5, not > 0.5: TP 0, FP 1, FN 2
    merged = score_instances("i", (spheres > 0).astype(np.uint8), spheres)
    assert (merged.matched50, merged.n_pred, merged.dsb_score) == (0, 1, 0.0)


# ------------------------------------------------------------------------------ box mAP
def _boxes(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


def test_box_map_perfect_empty_and_ranked_false_positive() -> None:
    truth = _boxes((0, 0, 10, 10), (20, 20, 30, 30))
    perfect = box_map([ImageBoxes(truth, truth, np.ones(2))])
    assert (perfect.map, perfect.ap50, perfect.ap75) == (1.0, 1.0, 1.0)
    assert box_map([ImageBoxes(truth, np.zeros((0, 4)), np.ones(0))]).map == 0.0
    with_fp = np.vstack([truth, _boxes((50, 50, 60, 60))])
    # a false positive ranked after both true positives costs nothing: precision 1 up to recall 1
    assert box_map([ImageBoxes(truth, with_fp, np.array([0.8, 0.7, 0.1]))]).map == pytest.approx(1.0)
    # ranked first: precision 1/2 at recall 1/2 and 2/3 at recall 1; interpolated 2/3 everywhere
    assert box_map([ImageBoxes(truth, with_fp, np.array([0.8, 0.7, 0.9]))]).map == pytest.approx(2 / 3)


def test_3d_box_evaluation_agrees_with_2d_pycocotools() -> None:
    rng = np.random.default_rng(3)
    images_2d, images_3d = [], []
    for _ in range(4):
        start = rng.integers(0, 80, size=(6, 2)).astype(float)
        truth = np.hstack([start, start + rng.integers(4, 20, size=(6, 2))])
        pred = truth + rng.normal(0, 2.0, size=truth.shape)
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
        scores = rng.random(6)
        images_2d.append(ImageBoxes(truth, pred, scores))
        lift = lambda b: np.hstack([b[:, :2], np.zeros((len(b), 1)), b[:, 2:], np.ones((len(b), 1))])  # noqa: E731
        images_3d.append(ImageBoxes(lift(truth), lift(pred), scores))
    flat, deep = box_map(images_2d), box_map(images_3d)
    assert 0.05 < flat.map < 0.95  # a non-trivial case
    assert deep.map == pytest.approx(flat.map, abs=1e-6) and deep.ap50 == pytest.approx(flat.ap50, abs=1e-6)


def test_image_boxes_from_maps_use_column_as_x() -> None:
    labels = _squares()[:, :, None]  # (I, J, 1): i first
    boxes = image_boxes(labels, labels, None)
    assert boxes.true_boxes.tolist() == [[2, 2, 12, 12], [20, 20, 30, 30]]
    assert boxes.pred_scores.tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------ real labels
def _dsb_labels(shared_data: Path, n: int) -> list[Path]:
    return sorted((shared_data / "dsb2018_nuclei" / "labels").glob("*.png"))[:n]


def test_real_labels_against_themselves_and_with_one_nucleus_removed(shared_data: Path, tmp_path: Path) -> None:
    import shutil

    paths = _dsb_labels(shared_data, 3)
    (tmp_path / "pred").mkdir(), (tmp_path / "ref").mkdir()
    expected = []
    for n, path in enumerate(paths):
        shutil.copy(path, tmp_path / "ref" / path.name)
        labels = np.asarray(Image.open(path))
        count = len(np.unique(labels)) - 1
        if n == 0:  # remove nucleus 1: TP = N - 1, FP = 0, FN = 1 at every threshold: (N - 1) / N
            labels = np.where(labels == 1, 0, labels).astype(np.uint16)
            expected.append((count - 1) / count)
        else:
            expected.append(1.0)
        Image.fromarray(labels).save(tmp_path / "pred" / path.name)
    itself = evaluate_instances(tmp_path / "ref", tmp_path / "ref").summary()
    assert (itself["dsb_score"], itself["ap50"], itself["box_map"]) == (1.0, 1.0, 1.0)
    evaluation = evaluate_instances(tmp_path / "pred", tmp_path / "ref")
    scores = {s.case: s.dsb_score for s in evaluation.images}
    assert [scores[p.stem] for p in paths] == pytest.approx(expected)
    assert expected[0] < 1.0
    assert evaluation.summary()["dsb_score"] == pytest.approx(np.mean(expected))
    assert evaluation.boxes.map < 1.0


# ------------------------------------------------------------------------------ CLI
def test_cli_evaluate_instances_with_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli import main

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir(), ref.mkdir()
    Image.fromarray(_squares()).save(ref / "a.png")
    Image.fromarray(_squares(2)).save(pred / "a.png")
    (pred / "a_objects.json").write_text(
        json.dumps({"objects": [{"instance": 1, "score": 0.9}, {"instance": 2, "score": 0.4}]})
    )
    code = main(["evaluate", str(pred), str(ref), "--instances", "-o", str(tmp_path / "m.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "DSB score (mean IoU 0.50-0.95): 0.6000" in out and "2 true, 2 predicted, 2 matched" in out
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].startswith("case,true,predicted,matched50,ap50,dsb_score,precision_0.50")
    assert rows[1].startswith("a,2,2,2,1,0.6,")
    summary = json.loads((tmp_path / "m_summary.json").read_text())
    assert summary["images"] == 1 and summary["box_ap50"] == 1.0
