"""Bad input through the CLI: exit code 2, one actionable line on stderr, no traceback, no output.

Table-driven over ``medseg.cli.main``: each case builds its input under ``tmp_path`` (or points at
real broken data) and names words the message must contain.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main

FAILING = "dicom_dicom2nifti_testdata/tests/data/failing"
EXAMPLES = "dicom_seg_rtstruct_examples"


def empty_folder(tmp: Path, data: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return [str(tmp / "empty")]


def folder_without_dicom(tmp: Path, data: Path) -> list[str]:
    (tmp / "docs").mkdir()
    (tmp / "docs" / "readme.txt").write_text("not an image\n")
    (tmp / "docs" / "scan.dcm").write_bytes(b"\x00" * 64)
    return [str(tmp / "docs")]


def truncated_dicom(tmp: Path, data: Path) -> list[str]:
    source = data / EXAMPLES / "dcmqi/segmentations/ct-3slice"
    (tmp / "ct").mkdir()
    for path in source.glob("*.dcm"):
        (tmp / "ct" / path.name).write_bytes(path.read_bytes())
    whole = (source / "02.dcm").read_bytes()
    (tmp / "ct" / "02.dcm").write_bytes(whole[: len(whole) // 2])  # cut inside the pixel data
    return [str(tmp / "ct")]


def only_structured_report(tmp: Path, data: Path) -> list[str]:
    (tmp / "sr").mkdir()
    shutil.copy(data / EXAMPLES / "dcmqi/sr-example/sr.dcm", tmp / "sr" / "sr.dcm")
    return [str(tmp / "sr")]


def only_rtstruct(tmp: Path, data: Path) -> list[str]:
    (tmp / "rt").mkdir()
    shutil.copy(data / EXAMPLES / "rt-utils/mock_data/rt.dcm", tmp / "rt" / "rt.dcm")
    return [str(tmp / "rt")]


def several_series(tmp: Path, data: Path) -> list[str]:
    return [str(data / "dicom_tcia_brain_tumor_progression/dicom/PGBM-003")]


def failing(name: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, data: [str(data / FAILING / name)]


def nifti_with_nan(tmp: Path, data: Path) -> list[str]:
    array = np.ones((5, 6, 7), np.float32)
    array[1, 2, 3], array[2, 2, 2] = np.nan, np.inf
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp / "nan.nii.gz"))
    return [str(tmp / "nan.nii.gz")]


def nifti_4d(tmp: Path, data: Path) -> list[str]:
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7, 3), np.int16), np.eye(4)), str(tmp / "4d.nii.gz"))
    return [str(tmp / "4d.nii.gz")]


def missing_path(tmp: Path, data: Path) -> list[str]:
    return [str(tmp / "no" / "such" / "scan")]


def seg_without_its_series(tmp: Path, data: Path) -> list[str]:
    shutil.copy(data / EXAMPLES / "highdicom/seg_image_ct_binary.dcm", tmp / "seg.dcm")
    return [str(tmp / "seg.dcm")]


def unknown_roi(tmp: Path, data: Path) -> list[str]:
    return [str(data / EXAMPLES / "rt-utils/mock_data/rt.dcm"), "--roi", "Lung"]


# (case, input builder, words the one-line message must contain)
CASES = [
    ("empty folder", empty_folder, ["empty folder"]),
    ("folder without DICOM", folder_without_dicom, ["no DICOM files"]),
    ("truncated DICOM", truncated_dicom, ["truncated", "02.dcm"]),
    ("only a structured report", only_structured_report, ["no image series", "SR"]),
    ("only an RTSTRUCT", only_rtstruct, ["no image series", "RTSTRUCT"]),
    ("several series, no choice", several_series, ["4 image series", "--series"]),
    ("gantry tilt", failing("gantrytilting/001"), ["tilt", "--resample"]),
    ("uneven slice increment", failing("sliceincrement/001"), ["slice increment", "--resample"]),
    ("too few slices", failing("slicecount/001"), ["fewer than"]),
    ("mixed orientations", failing("sliceorientation/001"), ["orientation", "--series"]),
    ("not a volume", failing("notavolume/001"), ["not a volume"]),
    ("NIfTI with NaN/Inf", nifti_with_nan, ["2 NaN/Inf"]),
    ("4D NIfTI", nifti_4d, ["3D", "(5, 6, 7, 3)"]),
    ("missing path", missing_path, ["does not exist"]),
    (
        "SEG without its image series",
        seg_without_its_series,
        ["1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2", "--reference"],
    ),
    ("unknown RTSTRUCT ROI", unknown_roi, ["no ROI named 'Lung'", "ROI-1"]),
]


def assert_clean_failure(code: int, err: str, output: Path, words: list[str]) -> None:
    """Exit 2, exactly one 'medseg: error:' line naming ``words``, no traceback, nothing written."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("medseg: error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not output.exists()
    if output.parent.is_dir():
        assert list(output.parent.iterdir()) == []  # no temp or partial file beside the target


@pytest.mark.parametrize("name, build, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(name, build, words, shared_data: Path, tmp_path: Path, capsys) -> None:
    argv = build(tmp_path, shared_data)
    output = tmp_path / "out" / "result.nii.gz"
    code = main(["convert", argv[0], str(output), *argv[1:]])
    assert_clean_failure(code, capsys.readouterr().err, output, words)


@pytest.mark.parametrize(
    "target, words",
    [
        ("file.txt/out.nii.gz", ["cannot create output folder", "file.txt"]),  # a path under a regular file
        ("out/result.txt", ["output format", ".nii.gz"]),
    ],
)
def test_unusable_output_exits_2(target: str, words: list[str], shared_data: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file.txt").write_text("a regular file, not a folder\n")
    output = tmp_path / target
    source = shared_data / EXAMPLES / "dcmqi/segmentations/ct-3slice"
    code = main(["convert", str(source), str(output)])
    assert_clean_failure(code, capsys.readouterr().err, output, words)


def test_internal_fault_exits_1_and_debug_shows_it(monkeypatch, tmp_path: Path, capsys) -> None:
    import medseg.cli.convert as convert

    def broken(path: Path) -> str:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(convert, "input_kind", broken)
    (tmp_path / "in").mkdir()
    args = ["convert", str(tmp_path / "in"), str(tmp_path / "out.nii.gz")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: simulated bug" in err and "--debug" in err
    assert "Traceback" not in err
    with pytest.raises(RuntimeError, match="simulated bug"):
        main(["--debug", *args])


def test_real_process_prints_one_line_or_a_traceback_with_debug(shared_data: Path, tmp_path: Path) -> None:
    """Through a real interpreter: logging on, so any stray log line would show up on stderr."""
    nifti_with_nan(tmp_path, shared_data)
    output = tmp_path / "out" / "o.nrrd"
    command = [sys.executable, "-m", "medseg", "convert", str(tmp_path / "nan.nii.gz"), str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert_clean_failure(result.returncode, result.stderr, output, ["NaN/Inf"])
    script = (
        "import sys, medseg.cli.convert as c\n"
        "def boom(path): raise RuntimeError('simulated bug')\n"
        "c.input_kind = boom\n"
        "from medseg.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    debug = subprocess.run(
        [sys.executable, "-c", script, "--debug", "convert", str(tmp_path), str(tmp_path / "o.nii.gz")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "RuntimeError: simulated bug" in debug.stderr


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--tta", "mirror", ["--tta", "invalid choice: 'mirror'", "'off'", "'all'"]),
        ("--device", "gpu", ["--device", "invalid choice: 'gpu'", "'cuda'"]),
        ("--precision", "fp8", ["--precision", "invalid choice: 'fp8'", "'bf16'"]),
        ("--largest-component", "yes", ["--largest-component", "invalid choice: 'yes'", "'on'"]),
        ("--backend", "ray", ["'ray' is a batch executor", "use --executor ray", "onnxruntime"]),
        ("--backend", "local", ["use --executor local"]),
    ],
)
def test_batch_refuses_a_bad_prediction_choice_in_one_line(
    option: str, value: str, words: list[str], tmp_path: Path, capsys
) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", str(tmp_path / "in"), "-m", "hippocampus", "-o", str(tmp_path / "out"), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"medseg batch: error: argument {option}: ")
    assert all(word in err for word in words), err
    assert "medseg batch --help" in err and not (tmp_path / "out").exists()
