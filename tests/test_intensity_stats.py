"""Per-label and per-instance intensity statistics of the source image."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medseg.inference.outputs import INTENSITY_KEYS, intensity_stats, label_stats
from medseg.io.files import read_volume_file
from medseg.volume import Volume


def expected(values: np.ndarray) -> dict[str, float]:
    values = values.astype(np.float64)
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return dict(zip(INTENSITY_KEYS, (values.mean(), values.std(), median, p5, p95)))


def test_label_stats_match_numpy_on_a_real_case(sample_data: Path) -> None:
    image = read_volume_file(sample_data / "hippocampus" / "imagesTs" / "hippocampus_217.nii.gz")
    labels = read_volume_file(sample_data / "hippocampus" / "labelsTs" / "hippocampus_217.nii.gz", kind="label")
    stats = label_stats(labels, {0: "background", 1: "anterior", 2: "posterior", 3: "absent"}, image)
    rows = {row["label"]: row for row in stats["labels"]}
    for value in (1, 2):
        inside = np.asarray(image.array)[np.asarray(labels.array) == value]
        for key, number in expected(inside).items():
            assert rows[value][key] == pytest.approx(number, rel=1e-6, abs=1e-3)
    assert rows[3]["voxels"] == 0 and all(rows[3][key] is None for key in INTENSITY_KEYS)


def test_statistics_need_the_image_on_the_label_grid() -> None:
    labels = Volume(np.ones((4, 4, 4), np.uint8), np.eye(4), "label")
    shifted = Volume(np.zeros((4, 4, 4), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    stats = label_stats(labels, {1: "a"}, shifted)
    assert "intensity_mean" not in stats["labels"][0]


def test_four_d_image_uses_its_first_channel_and_instances_work() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(100, 20, (10, 10, 10, 2)).astype(np.float32)
    image = Volume(data, np.eye(4))
    instances = np.zeros((10, 10, 10), np.int32)
    instances[:3, :3, :3], instances[6:, 6:, 6:] = 1, 2
    result = intensity_stats(image, instances, [1, 2, 3])
    assert result[1]["intensity_mean"] == pytest.approx(float(data[:3, :3, :3, 0].mean()), abs=1e-3)
    assert result[2]["intensity_p95"] == pytest.approx(float(np.percentile(data[6:, 6:, 6:, 0], 95)), abs=1e-3)
    assert result[3]["intensity_median"] is None


def test_predicted_stats_csv_carries_the_intensity_columns(tmp_path: Path) -> None:
    from medseg.inference.outputs import write_stats

    labels = Volume(np.pad(np.ones((2, 2, 2), np.uint8), 1), np.eye(4), "label")
    image = Volume(np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4))
    write_stats(label_stats(labels, {1: "cube"}, image), tmp_path / "s.json", tmp_path / "s.csv")
    with open(tmp_path / "s.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["intensity_mean"]) == pytest.approx(float(np.asarray(image.array)[1:3, 1:3, 1:3].mean()))
    assert float(row["intensity_p5"]) <= float(row["intensity_median"]) <= float(row["intensity_p95"])
