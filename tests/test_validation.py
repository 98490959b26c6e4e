"""Validation runs the shipped predictor: the metrics a training run writes into model.json are
what `medseg predict` + `medseg evaluate` report on the run's validation cases, and the
keep-largest-component decision scores exactly like `--largest-component auto`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.evaluation import evaluate_volumes
from medseg.inference.postprocess import PostprocessOptions, largest_component_classes, postprocess
from medseg.training.trainer import TrainOptions, train
from medseg.training.validation import ValidationResult, decide_postprocessing, score_case
from medseg.volume import Volume
from tests.training_stubs import LABELS, tiny_recipe, write_tiny_data

#: 10 real cases: the fixed 80/20 split validates 2 of them
CASES = (
    "hippocampus_003",
    "hippocampus_004",
    "hippocampus_007",
    "hippocampus_008",
    "hippocampus_019",
    "hippocampus_020",
    "hippocampus_023",
    "hippocampus_024",
    "hippocampus_025",
    "hippocampus_033",
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def copy_cases(source: Path, case_ids: list[str], kind: str, folder: Path) -> Path:
    """``source/<kind>/<case>.nii.gz`` of every case copied into ``folder``."""
    folder.mkdir(parents=True)
    for case_id in case_ids:
        shutil.copy(source / kind / f"{case_id}.nii.gz", folder)
    return folder


def evaluated_dice(prediction: Path, reference: Path, csv_path: Path) -> dict[int, float]:
    """Mean Dice per class from the per-case CSV of ``medseg evaluate PRED REF -o CSV``."""
    assert main(["evaluate", str(prediction), str(reference), "-o", str(csv_path)]) == 0
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = sorted({int(r["label"]) for r in rows})
    return {label: float(np.mean([float(r["dice"]) for r in rows if int(r["label"]) == label])) for label in labels}


def predicted_then_evaluated(model: Path, images: Path, labels: Path, out: Path, *extra: str) -> dict[str, float]:
    """``medseg predict -m MODEL -i IMAGES -o OUT [extra]`` then ``medseg evaluate``: Dice by class name.

    ``--backend torch``: with the optional OpenVINO package installed, predict's ``auto`` backend
    on a CPU is OpenVINO, another runtime with its own rounding; validation runs PyTorch.
    """
    assert (
        main(
            [
                "-q",
                "predict",
                "-m",
                str(model),
                "-i",
                str(images),
                "-o",
                str(out),
                "--backend",
                "torch",
                "--no-qc",
                *extra,
            ]
        )
        == 0
    )
    dice = evaluated_dice(out, labels, out.with_suffix(".csv"))
    return {LABELS[label]: value for label, value in dice.items()}


def test_model_json_metrics_are_what_predict_and_evaluate_report(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "msd_hippocampus"
    (tmp_path / "data").mkdir()
    data = write_tiny_data(tmp_path / "data", source, CASES)
    run = tmp_path / "run"
    model = train(tiny_recipe(data), TrainOptions(run, progress_bar=False))
    val_ids = json.loads((run / "splits.json").read_text())["folds"][0]["val"]
    assert len(val_ids) == 2
    images = copy_cases(source, val_ids, "imagesTr", tmp_path / "images")
    labels = copy_cases(source, val_ids, "labelsTr", tmp_path / "labels")
    spec = json.loads((model / "model.json").read_text())
    metrics, post = spec["metrics"], spec["postprocessing"]
    assert metrics["validation_cases"] == 2 and metrics["validation"]["tta"] == "off"
    assert metrics["validation"]["largest_component"] == "auto" and metrics["validation"]["grid"] == "source"

    default = predicted_then_evaluated(model, images, labels, tmp_path / "default")
    without = predicted_then_evaluated(model, images, labels, tmp_path / "off", "--largest-component", "off")
    with_ = predicted_then_evaluated(model, images, labels, tmp_path / "on", "--largest-component", "on")
    # model.json rounds to 6 decimals; the evaluate CSV keeps 6 significant digits per case
    assert metrics["dice"] == pytest.approx(default, abs=1e-6)
    assert metrics["mean_dice"] == pytest.approx(np.mean(list(default.values())), abs=1e-6)
    assert post["dice_without"] == pytest.approx(without, abs=1e-6)
    assert post["dice_with"] == pytest.approx(with_, abs=1e-6)
    with open(run / "training_log.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]  # the final validation, logged before post-processing
    assert {name: float(last[f"dice_{name}"]) for name in without} == pytest.approx(without, abs=1e-6)


def blocks(shape: tuple[int, int, int], *boxes: tuple[int, tuple[slice, slice, slice]]) -> np.ndarray:
    """A uint8 label array with ``value`` written into each ``(value, box)``."""
    array = np.zeros(shape, dtype=np.uint8)
    for value, box in boxes:
        array[box] = value
    return array


def test_the_largest_component_choice_scores_like_predict_auto() -> None:
    """Class 1: a spurious blob (keeping the largest component helps); class 2: a true second
    part (it hurts). The decision keeps class 1 only, and the scores it reports are those of
    `medseg predict --largest-component auto` on these labels, scored as `medseg evaluate` does."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    s = np.s_
    reference = blocks((24, 24, 24), (1, s[2:8, 2:8, 2:8]), (2, s[12:18, 2:8, 2:8]), (2, s[12:16, 14:18, 14:18]))
    prediction = blocks(
        (24, 24, 24),
        (1, s[2:8, 2:8, 3:8]),
        (1, s[2:4, 14:16, 20:22]),
        (2, s[12:18, 2:8, 2:8]),
        (2, s[12:16, 14:18, 15:18]),
    )
    ref, pred = Volume(reference, affine, "label"), Volume(prediction, affine, "label")
    plain, kept = score_case("c", pred, ref, [1, 2], LABELS)
    result = ValidationResult(("c",), (1, 2), np.array([plain]), np.array([kept]))
    decision = decide_postprocessing(result, LABELS)
    assert decision["keep_largest_component"] == [1]
    classes = largest_component_classes("auto", decision, LABELS)
    applied = postprocess(prediction, ref.spacing, PostprocessOptions(), classes)
    scored = evaluate_volumes("c", pred.with_array(applied), ref, [1, 2])
    final = result.with_postprocessing(decision["keep_largest_component"])
    assert list(final.dice[0]) == [m.dice for m in scored.metrics]
    assert final.dice[0, 0] > plain[0] and final.dice[0, 1] == plain[1]
