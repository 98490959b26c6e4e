"""Evaluation on real hippocampus labels (MSD Task04): self-agreement, shifted copies with a known
HD95, explicit empty-mask rules, folder matching, grid checks and the CLI."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.errors import GeometryError, InputError
from medseg.evaluation import evaluate, evaluate_volumes, format_summary, summarize
from medseg.io import read_volume, write_volume
from medseg.volume import Volume

CASES = ("hippocampus_003", "hippocampus_004", "hippocampus_007")


@pytest.fixture(scope="module")
def labels_dir(shared_data: Path) -> Path:
    return shared_data / "msd_hippocampus" / "labelsTr"


@pytest.fixture(scope="module")
def label(labels_dir: Path) -> Volume:
    return read_volume(labels_dir / f"{CASES[0]}.nii.gz", kind="label")


def shifted(array: np.ndarray, voxels: int, axis: int) -> np.ndarray:
    """``array`` moved by ``voxels`` towards higher indices along ``axis`` (zeros shifted in)."""
    out = np.zeros_like(array)
    dst, src = [slice(None)] * 3, [slice(None)] * 3
    dst[axis], src[axis] = slice(voxels, None), slice(0, -voxels)
    out[tuple(dst)] = array[tuple(src)]
    return out


def test_a_label_against_itself_is_perfect(label: Volume) -> None:
    result = evaluate_volumes("self", label, label)
    assert [m.label for m in result.metrics] == [1, 2]
    for m in result.metrics:
        assert (m.dice, m.hd95, m.nsd, m.presence) == (1.0, 0.0, 1.0, "both")


@pytest.mark.parametrize("voxels", [1, 2, 3])
def test_a_shifted_copy_has_hd95_equal_to_the_shift_in_mm(label: Volume, voxels: int) -> None:
    array = np.asarray(label.array)
    result = evaluate_volumes("shift", label.with_array(shifted(array, voxels, axis=1)), label)
    for m in result.metrics:
        assert m.dice < 1.0 and m.nsd <= 1.0
        assert m.hd95 == pytest.approx(float(voxels))
    # same voxels on a grid with 2.5 mm along that axis: distances are in mm
    affine = label.affine.copy()
    affine[:3, 1] *= 2.5
    wide = evaluate_volumes("shift", Volume(shifted(array, voxels, 1), affine, "label"), Volume(array, affine, "label"))
    assert [m.hd95 for m in wide.metrics] == pytest.approx([2.5 * voxels] * 2)
    assert [m.dice for m in wide.metrics] == pytest.approx([m.dice for m in result.metrics])


def test_nsd_counts_surface_within_tolerance(label: Volume) -> None:
    moved = label.with_array(shifted(np.asarray(label.array), 2, axis=1))
    strict = evaluate_volumes("t", moved, label, tolerance_mm=1.0).metrics
    loose = evaluate_volumes("t", moved, label, tolerance_mm=2.0).metrics
    assert all(s.nsd < 1.0 for s in strict) and all(lo.nsd == pytest.approx(1.0) for lo in loose)


def test_empty_masks_follow_the_documented_rules() -> None:
    affine = np.eye(4)
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    pred = np.zeros_like(ref)
    pred[1:4, 1:4, 1:4] = 2  # class 1 missing from the prediction, class 2 missing from the reference
    result = evaluate_volumes("e", Volume(pred, affine, "label"), Volume(ref, affine, "label"), classes=[1, 2, 3])
    one, two, three = result.metrics
    assert (one.dice, one.hd95, one.nsd, one.presence) == (0.0, math.inf, 0.0, "reference_only")
    assert (two.dice, two.hd95, two.nsd, two.presence) == (0.0, math.inf, 0.0, "prediction_only")
    assert (three.dice, three.hd95, three.nsd, three.presence) == (1.0, 0.0, 1.0, "neither")
    summary = summarize([result])
    assert [s.hd95_inf for s in summary] == [1, 1, 0] and [s.both_empty for s in summary] == [0, 0, 1]
    assert math.isnan(summary[0].hd95_mean)
    assert "one empty -> Dice 0, HD95 inf" in format_summary(summary)


def test_grids_must_match(label: Volume) -> None:
    moved = Volume(np.asarray(label.array), label.affine @ np.diag([1, 1, 1.5, 1]), "label")
    with pytest.raises(GeometryError, match="differs from the reference grid"):
        evaluate_volumes("g", moved, label)


def test_folders_match_by_case_name_and_missing_predictions_are_named(labels_dir: Path, tmp_path: Path) -> None:
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for case in CASES:
        shutil.copy(labels_dir / f"{case}.nii.gz", ref_dir)
    for case in CASES[:2]:
        shutil.copy(labels_dir / f"{case}.nii.gz", pred_dir)
    with pytest.raises(InputError, match="1 reference case.*hippocampus_007"):
        evaluate(pred_dir, ref_dir)
    shutil.copy(labels_dir / f"{CASES[2]}.nii.gz", pred_dir)
    results = evaluate(pred_dir, ref_dir)
    assert [r.case for r in results] == list(CASES)
    assert all(m.dice == 1.0 for r in results for m in r.metrics)


def test_cli_writes_csv_and_summary(label: Volume, tmp_path: Path, capsys) -> None:
    ref_path = write_volume(label, tmp_path / "ref" / "case.nii.gz")
    moved = label.with_array(shifted(np.asarray(label.array), 2, axis=1))
    pred_path = write_volume(moved, tmp_path / "pred" / "case.nii.gz")
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(pred_path), str(ref_path), "-o", str(out), "--labels", "1=Anterior", "2"]) == 0
    printed = capsys.readouterr().out
    assert "1 Anterior" in printed and "HD95" in printed
    rows = list(csv.DictReader(out.open()))
    assert [(r["case"], r["label"], r["name"], r["hd95_mm"], r["presence"]) for r in rows] == [
        ("case", "1", "Anterior", "2", "both"),
        ("case", "2", "", "2", "both"),
    ]
    assert all(0 < float(r["dice"]) < 1 for r in rows)


def test_cli_grid_mismatch_exits_2(label: Volume, tmp_path: Path, capsys) -> None:
    ref_path = write_volume(label, tmp_path / "ref.nii.gz")
    other = Volume(np.asarray(label.array)[:-1], label.affine, "label")
    pred_path = write_volume(other, tmp_path / "pred.nii.gz")
    assert main(["evaluate", str(pred_path), str(ref_path)]) == 2
    assert "differs from the reference grid" in capsys.readouterr().err


def test_class_dice_is_the_dice_of_class_metrics_with_its_empty_mask_rules(label: Volume) -> None:
    from medseg.evaluation import class_dice, class_metrics

    reference = np.asarray(label.array)
    prediction = np.roll(reference, 2, axis=0)
    prediction[prediction == 2] = 4  # class 2: reference only; class 4: prediction only; class 3: neither
    classes = [1, 2, 3, 4]
    full = class_metrics(prediction, reference, classes, label.spacing)
    dice = class_dice(prediction, reference, classes)
    assert dice == [m.dice for m in full]
    assert dice[1:] == [0.0, 1.0, 0.0] and 0.3 < dice[0] < 0.95
