"""The short Python API (docs/python-api.md): its runnable example, and its option errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import medseg
from medseg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "hippocampus"


def _example() -> str:
    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/python-api.md should hold exactly one runnable example"
    return blocks[0]


def test_the_documented_example_runs_from_the_checkout(capsys, monkeypatch, tmp_path):
    """The page's example, executed as a script from the repository root, prints real Dice values
    and finishes a two-case batch."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    exec(compile(_example(), "docs/python-api.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    dice = [float(v) for v in re.findall(r"Dice ([0-9.]+)", out)]
    assert len(dice) == 2 and min(dice) > 0.7, out
    assert "2 done, 0 failed" in out


def test_segment_equals_predict_case_outputs(tmp_path):
    """segment() post-processes exactly as `medseg predict` writes (same labels, same grid)."""
    from medseg.cli import main

    case = sorted((SAMPLE / "imagesTs").glob("*.nii.gz"))[0]
    assert (
        main(
            [
                "-q",
                "predict",
                "-m",
                "hippocampus",
                "-i",
                str(case),
                "-o",
                str(tmp_path),
                "--backend",
                "torch",
                "--no-qc",
                "--largest-component",
                "on",
            ]
        )
        == 0
    )
    written = medseg.read(next(tmp_path.glob("*.nii.gz")), kind="label")
    result = medseg.segment(case, model="hippocampus", backend="torch", largest_component="on")
    assert result.labels.same_grid(written)
    np.testing.assert_array_equal(np.asarray(result.labels.array), np.asarray(written.array))
    assert result.labels.meta.label_names == {0: "background", 1: "Anterior", 2: "Posterior"}


def test_unknown_options_name_the_closest_valid_one():
    image = medseg.read(sorted((SAMPLE / "imagesTs").glob("*.nii.gz"))[0])
    with pytest.raises(ConfigError, match="did you mean 'tta'"):
        medseg.segment(image, model="hippocampus", ttta="all")
    with pytest.raises(ConfigError, match="did you mean 'workers'"):
        medseg.run_batch(SAMPLE / "imagesTs", "hippocampus", "unused", worker=2)


def test_a_loaded_model_takes_no_prediction_options():
    image = medseg.read(sorted((SAMPLE / "imagesTs").glob("*.nii.gz"))[0])
    with medseg.load_model("hippocampus", backend="torch", threads=1) as model:
        with pytest.raises(ConfigError, match="must be given to load_model"):
            medseg.segment(image, model=model, tta="all")
        assert medseg.segment(image, model=model).labels.same_grid(image)


def test_import_medseg_stays_light():
    """`import medseg` must not pull torch (the CLI's --help and small scripts stay instant)."""
    import subprocess
    import sys

    code = "import sys, medseg; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert out.strip() == "False"
