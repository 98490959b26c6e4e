"""The shipped nuclei model segments the shipped held-out DSB2018 images (the README's nuclei job)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.evaluation.instance_eval import evaluate_instances
from medseg.pretrained import PRETRAINED_DIR, available

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "nuclei"
MODEL = PRETRAINED_DIR / "nuclei"

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: the four held-out sample images scored 0.600 (DSB) / 0.845 (AP@0.5) with the shipped model on
#: 2026-12-03 (docs/pretrained.md); bounds leave room for backend and precision differences
DSB_BOUND, AP50_BOUND = 0.58, 0.82


def test_readme_nuclei_command_finds_the_held_out_nuclei(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(["-q", "predict", "-m", "nuclei", "-i", str(SAMPLES / "images"), "-o", str(out), "--backend", "torch"])
        == 0
    )
    for image in sorted((SAMPLES / "images").glob("*.png")):
        written = np.asarray(Image.open(out / image.name))
        assert written.dtype == np.uint16 and written.shape == np.asarray(Image.open(image)).shape[:2]
        assert (out / image.name.replace(".png", "_objects_qc.png")).stat().st_size > 10_000
    summary = evaluate_instances(out, SAMPLES / "labels").summary()
    assert summary["images"] == 4
    assert summary["ap50"] >= AP50_BOUND and summary["dsb_score"] >= DSB_BOUND, summary


def test_shipped_nuclei_model_is_small_complete_and_validated() -> None:
    assert "nuclei" in available()
    files = {p.name for p in MODEL.iterdir()}
    assert {"model.json", "plan.json", "weights.safetensors", "training_log.csv", "curves.png"} <= files
    assert sum(p.stat().st_size for p in MODEL.iterdir()) <= 15_000_000
    spec = json.loads((MODEL / "model.json").read_text())
    assert spec["instances"]["method"] == "watershed" and spec["in_channels"] == 3
    metrics = spec["metrics"]
    assert metrics["validation_cases"] == 108  # the fixed split's validation images, never trained on
    # issue 15's targets on images it was not trained on: DSB >= 0.55 and AP@0.5 >= 0.80
    assert metrics["dsb_score"] >= 0.55 and metrics["ap50"] >= 0.80
    pretrained_doc = (Path(__file__).resolve().parents[1] / "docs" / "pretrained.md").read_text()
    assert f"{metrics['dsb_score']:.3f}" in pretrained_doc and f"{metrics['ap50']:.3f}" in pretrained_doc
