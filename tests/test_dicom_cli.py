"""`medseg series FOLDER [--all]`: the table on stdout, exit 0; errors on stderr, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.cli import main

TCIA = "dicom_tcia_brain_tumor_progression/dicom/PGBM-003"
RT_UTILS = "dicom_seg_rtstruct_examples/rt-utils/mock_data"


def test_series_prints_the_table(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["series", str(shared_data / TCIA)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    header = ["#", "UID", "modality", "description", "slices", "matrix", "spacing", "(mm)", "orient", "note"]
    assert lines[0].split() == header
    for index, name in enumerate(["T1post", "T1pre_reg", "FLAIR_reg", "T2_reg"], start=1):
        row = lines[index].split()
        assert row[0] == str(index) and row[2:6] == ["MR", name, "22", "320x280"] and row[-2:] == ["LPS", "-"]
    assert "4 series (4 image, 0 other)" in out and err == ""


def test_series_all_marks_non_image_objects(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["series", str(shared_data / RT_UTILS), "--all"]) == 0
    out = capsys.readouterr().out
    assert "folder" in out.splitlines()[0] and "PHANTOM_EXAMPLE" in out
    assert out.count("not an image (RTSTRUCT)") == 2 and "3 series (1 image, 2 other)" in out


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_series_errors_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str) -> None:
    folder = tmp_path / "nowhere" if make == "missing" else tmp_path
    assert main(["series", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("medseg: error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and ("does not exist" in err or "empty folder" in err)
