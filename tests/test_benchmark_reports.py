"""The training benchmark's report: rows of models not retrained are carried over with their date."""

from __future__ import annotations

from benchmarks.report import read_section, update_section
from benchmarks.train_hippocampus import earlier_rows, report

EARLIER = """
## Training on MSD hippocampus

Measured 2026-11-28 on x86_64.

| model | recipe | patch | batch | precision | iterations | iterations/s | Dice Anterior | Dice Posterior | mean Dice | keeps largest component |
|---|---|---|---|---|---|---|---|---|---|---|
| 3D U-Net (a) | `hippocampus.toml` | 40x56x40 | 2 | bf16 | 7352 | 4.10 | 0.8897 | 0.8650 | 0.8773 | [1] |
| 3D DeepLabV3+ | `hippocampus_deeplab.toml` | 40x56x40 | 2 | bf16 | 6298 | 3.52 | 0.8797 | 0.8598 | 0.8697 | [1] |
| 2D U-Net (b) | `hippocampus_2d.toml` | 56x40 | 32 | bf16 | 13772 | 7.69 | 0.8675 | 0.8490 | 0.8582 | [1] |

(b) not retrained in this run: measured 2026-11-20 on this machine with the same recipe and budget.
"""


def _result(mean: float) -> dict:
    metrics = {
        "device": "cpu",
        "precision": "bf16",
        "iterations": 11000,
        "iterations_per_second": 6.1,
        "dice": {"Anterior": mean + 0.01, "Posterior": mean - 0.01},
        "mean_dice": mean,
    }
    return {"metrics": metrics, "patch": [40, 56, 40], "batch": 2, "postprocessing": {"keep_largest_component": [1]}}


def test_earlier_rows_drop_marks_and_keep_each_rows_date() -> None:
    rows = earlier_rows(EARLIER)
    assert rows["3D U-Net"][0].startswith("| 3D U-Net | `hippocampus.toml` |")
    assert rows["3D U-Net"][1] == "2026-11-28"
    assert rows["3D DeepLabV3+"][1] == "2026-11-28"
    assert rows["2D U-Net"] == (
        "| 2D U-Net | `hippocampus_2d.toml` | 56x40 | 32 | bf16 | 13772 | 7.69 | 0.8675 | 0.8490 | 0.8582 | [1] |",
        "2026-11-20",
    )


def test_report_retrains_one_model_and_carries_the_others(tmp_path) -> None:
    doc = tmp_path / "benchmarks.md"
    update_section("train_hippocampus", EARLIER, doc)
    speed = {"fp32": 3.0, "bf16": 6.0}
    text = report({"3D U-Net": _result(0.8812)}, speed, 30.0, earlier_rows(read_section("train_hippocampus", doc)))
    table = [line for line in text.splitlines() if line.startswith("| 3D") or line.startswith("| 2D")]
    assert table[0].startswith("| 3D U-Net | `hippocampus.toml` |") and "| 0.8812 |" in table[0]
    assert table[1].startswith("| 3D DeepLabV3+ (b) |") and "| 0.8697 |" in table[1]
    assert table[2].startswith("| 2D U-Net (b) |") and "| 0.8582 |" in table[2]
    assert "(b) not retrained in this run: measured 2026-11-20 and 2026-11-28" in text
    assert "7352" not in text  # the retrained model's old row is gone
