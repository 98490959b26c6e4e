"""`medseg series FOLDER [--all]`: the table on stdout, exit 0; errors on stderr, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pydicom
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


# --- header text reaching the terminal (issue 14 item 4) ----------------------------------------

HITACHI = "dicom_dicom2nifti_testdata/tests/data/hitachi/anatomical/001"
HOSTILE = "\x00\x1b[2J\x1b]0;owned\x07T1\r\nFAKE ROW\u202eevil\u200b\x00"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("T1 post", "T1 post"),
        ("Müller 頭部", "Müller 頭部"),  # ordinary non-ASCII text stays
        ("a\r\nb\tc", "a  b c"),  # line breaks and tabs become spaces: one line
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # terminal escapes shown, not run
        ("abc\u202eevil", "abc\\u202eevil"),  # bidi override shown
        ("T1\x00\x00", "T1"),  # NUL padding dropped
        ("in\x00side", "in\\x00side"),
        ("x\udcff", "x\\udcff"),  # undecodable file-name byte (surrogate escape)
    ],
)
def test_printable(text: str, expected: str) -> None:
    from medseg.errors import printable

    assert printable(text) == expected


def _hostile_export(shared_data: Path, root: Path) -> Path:
    """The Hitachi series with control characters in its headers, in a folder whose name holds ESC."""
    folder = Path(os.fsdecode(bytes(root) + b"/export\x1b[31m\xff"))
    folder.mkdir()
    for path in sorted((shared_data / HITACHI).iterdir()):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, so U+202E is stored as is
        ds.SeriesDescription, ds.PatientID, ds.ProtocolName = HOSTILE, "ID\x1b[8m", HOSTILE
        ds.save_as(folder / path.name)
    return folder


def _visible(stream: str) -> bool:
    """Nothing a terminal would interpret: no control or format character except line ends."""
    return all(char == "\n" or unicodedata.category(char) not in ("Cc", "Cf", "Cs") for char in stream)


def test_series_shows_header_text_without_control_characters(shared_data: Path, tmp_path: Path) -> None:
    folder = _hostile_export(shared_data, tmp_path)
    (folder / "002.dcm").write_bytes((folder / "002.dcm").read_bytes()[:-100])  # a warning naming the file too
    command = [sys.executable, "-m", "medseg", "series", "--all", os.fsdecode(folder)]
    result = subprocess.run(command, capture_output=True, timeout=120)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert _visible(out) and _visible(err)
    assert "\\x1b[2J\\x1b]0;owned\\x07T1  FAKE ROW\\u202eevil\\u200b" in out and "ID\\x1b[8m" in out
    assert "export\\x1b[31m\\udcff" in out and "truncated at" in err and "Warning" not in err
    assert len(out.splitlines()) == 4  # header, one series, blank, summary: no injected rows


def test_messages_quoting_header_text_are_clean(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _hostile_export(shared_data, tmp_path)
    assert main(["convert", str(folder), str(tmp_path / "o.nii.gz"), "--series", "nothing-matches"]) == 2
    err = capsys.readouterr().err
    assert _visible(err) and len(err.splitlines()) == 1 and "\\x1b[2J" in err
