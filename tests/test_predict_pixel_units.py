"""A 2D image without a pixel size (a PNG) is segmented in pixel units: its label statistics count
pixels and never claim millimetres or millilitres."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.inference import OutputOptions, PredictOptions, Predictor, predict_case
from medseg.io import read_volume
from tests.inference_stubs import Threshold, make_plan, stub_info

CPU = PredictOptions(device="cpu", threads=1, precision="fp32")


def test_a_png_gets_pixel_counts_without_mm_or_ml(tmp_path: Path) -> None:
    pixels = np.zeros((40, 30), np.uint8)
    pixels[5:20, 5:15] = 200  # 150 bright pixels
    pixels[25:35, 10:25] = 100  # 150 mid pixels
    Image.fromarray(pixels).save(tmp_path / "cells.png")
    assert read_volume(tmp_path / "cells.png").meta.spacing_known is False
    predictor = Predictor.from_network(Threshold(dims=2), make_plan(), stub_info(dims=2), CPU)
    prediction = predictor.predict([read_volume(tmp_path / "cells.png")])
    assert prediction.labels.meta.spacing_known is False  # carried from the image to the labels

    result = predict_case(predictor, tmp_path / "cells.png", tmp_path / "out", OutputOptions(qc=False))
    stats = json.loads(result.outputs["stats_json"].read_text())
    assert stats["spacing_known"] is False
    assert not {"spacing_mm", "voxel_volume_mm3"} & set(stats)
    assert all({"label", "name", "voxels"} <= set(row) and "volume_ml" not in row for row in stats["labels"])
    assert sum(row["voxels"] for row in stats["labels"]) == 300
    with result.outputs["stats_csv"].open() as handle:
        header = next(csv.reader(handle))
    assert header[:3] == ["label", "name", "voxels"] and "volume_ml" not in header  # intensities follow


def test_a_volume_with_a_known_spacing_keeps_its_ml(tmp_path: Path) -> None:
    from medseg.io.files import write_volume_file
    from medseg.volume import Volume

    array = np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32)
    path = write_volume_file(Volume(array, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "v.nii.gz")
    predictor = Predictor.from_network(Threshold(), make_plan(), stub_info(), CPU)
    stats = predict_case(predictor, path, tmp_path / "out", OutputOptions(qc=False)).stats
    assert stats["voxel_volume_mm3"] == 0.5 and "spacing_known" not in stats
    assert all(row["volume_ml"] == round(row["voxels"] * 0.5 / 1000, 4) for row in stats["labels"])
