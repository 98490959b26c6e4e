"""The shipped hippocampus model segments the shipped held-out sample cases (the README's main job)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.pretrained import PRETRAINED_DIR, available, resolve_model_path

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "hippocampus"


def test_shipped_model_is_found_by_name(tmp_path, monkeypatch) -> None:
    assert "hippocampus" in available()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("hippocampus") == PRETRAINED_DIR / "hippocampus"
    (tmp_path / "hippocampus").mkdir()  # a real path always wins over a shipped name
    assert resolve_model_path("hippocampus") == Path("hippocampus")


def test_readme_main_command_segments_held_out_cases(tmp_path) -> None:
    out = tmp_path / "out"
    code = main(
        ["-q", "predict", "-m", "hippocampus", "-i", str(SAMPLES / "imagesTs"), "-o", str(out), "--backend", "torch"]
    )
    assert code == 0
    for image in sorted((SAMPLES / "imagesTs").glob("*.nii.gz")):
        ref = nib.load(SAMPLES / "labelsTs" / image.name)
        pred = nib.load(out / image.name)
        assert pred.shape == ref.shape and np.allclose(pred.affine, nib.load(image).affine)
        p, r = np.asarray(pred.dataobj), np.asarray(ref.dataobj).astype(np.uint8)
        for label in (1, 2):
            dice = 2 * np.sum((p == label) & (r == label)) / (np.sum(p == label) + np.sum(r == label))
            assert dice > 0.75, f"{image.name} label {label}: Dice {dice:.3f}"
        assert (out / image.name.replace(".nii.gz", "_qc.png")).stat().st_size > 10_000
    manifest = json.loads((out / "medseg_run.json").read_text())
    assert len(manifest["cases"]) == 3


@pytest.mark.parametrize("name", ["model.json", "plan.json", "weights.safetensors", "training_log.csv", "curves.png"])
def test_shipped_model_folder_is_complete(name: str) -> None:
    assert (PRETRAINED_DIR / "hippocampus" / name).is_file()
