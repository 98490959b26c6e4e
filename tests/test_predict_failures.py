"""Honest exit codes and a manifest whatever happens (issue 14 item 17), no input skipped or option
ignored without a word (item 18), and the DICOM reader options in ``predict`` and ``batch``.

User-caused failures (damaged weights, a wrong-typed model.json, complex voxels, a full disk or a
file-size limit) exit 2 with one line; ``medseg_run.json`` lists the cases done before a run ends.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.io.files import read_volume_file, write_volume_file
from medseg.volume import Volume
from tests.inference_stubs import make_plan, save_random_model
from tests.test_dicom_damaged import HITACHI, _nest, _unnest, copy_series
from tests.test_dicom_values import _with_mapping

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_model(
        tmp_path_factory.mktemp("models") / "m", make_plan(spacing=(2.5, 2.5, 4.0), patch=(16, 16, 8))
    )


def scan(path: Path, shape: tuple[int, int, int] = (20, 22, 18), seed: int = 0) -> Path:
    array = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return write_volume_file(Volume(array, np.diag([2.5, 2.5, 4.0, 1.0])), path)


def predict(model: Path, *args: str) -> int:
    return main(["-q", "predict", "-m", str(model), "--device", "cpu", "--threads", "1", "--no-qc", "--no-seg", *args])


def batch(model: Path, *args: str) -> int:
    return main(
        [
            "-q",
            "batch",
            *args,
            "-m",
            str(model),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--backend",
            "torch",
            "--no-qc",
            "--no-seg",
        ]
    )


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``medseg: error:`` line of a refused run (logged warnings may precede it), no traceback."""
    return one_error(capsys.readouterr().err)


def one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("medseg:")]
    assert len(errors) == 1 and errors[0].startswith("medseg: error: ") and "Traceback" not in stderr, stderr
    return errors[0]


def manifest(out: Path) -> dict:
    return json.loads((out / "medseg_run.json").read_text())


# --- item 17: damaged model folders ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_damaged_weights_exit_2(damage: str, backend: str, model: Path, tmp_path: Path, capsys) -> None:
    broken = Path(shutil.copytree(model, tmp_path / "broken"))
    weights = broken / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x10\0\0\0\0\0\0\0{not json}......")
    assert predict(broken, "--backend", backend, "-i", str(scan(tmp_path / "x.nii.gz")), "-o", str(tmp_path / "o")) == 2
    line = error_line(capsys)
    assert f"{weights} is damaged or incomplete" in line and "copy the model folder again" in line


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("spatial_dims", "3", 'spatial_dims must be a positive whole number, got a string ("3")'),
        ("in_channels", True, "in_channels must be a positive whole number, got true"),
        ("labels", ["background", "a", "b"], "labels must be an object of label values and names"),
        ("labels", {"one": "a"}, 'found "one": a string'),
        ("network", [16, 32], "network must be an object, got a list"),
        ("network", {"patch_size": [16]}, "network is malformed"),
        ("postprocessing", {"keep_largest_component": "1"}, "keep_largest_component must be a list of label values"),
        ("famliy", "unet", "unknown key 'famliy'; did you mean 'family'?"),
    ],
)
def test_a_wrong_typed_model_json_exits_2_naming_the_field(
    key: str, value: object, words: str, model: Path, tmp_path: Path, capsys
) -> None:
    broken = Path(shutil.copytree(model, tmp_path / "broken"))
    spec = json.loads((broken / "model.json").read_text())
    spec[key] = value
    (broken / "model.json").write_text(json.dumps(spec))
    assert predict(broken, "-i", str(scan(tmp_path / "x.nii.gz")), "-o", str(tmp_path / "o")) == 2
    line = error_line(capsys)
    assert f"{broken}: model.json: " in line and words in line


def test_complex_input_exits_2(model: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.complex64), np.eye(4)), path)
    assert predict(model, "-i", str(path), "-o", str(tmp_path / "o")) == 2
    assert "holds complex (complex64) voxels" in error_line(capsys)


# --- item 17: a run that cannot finish writes what it did ------------------------------------------


@pytest.fixture()
def three(tmp_path: Path) -> Path:
    for n, name in enumerate("abc"):
        scan(tmp_path / "in" / f"{name}.nii.gz", seed=n)
    return tmp_path / "in"


def test_a_full_disk_ends_the_run_with_exit_2_and_a_manifest(
    model: Path, three: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medseg.io.files

    real, written = medseg.io.files.save_nifti, []

    def disk_fills_up(image, path):
        written.append(path)
        if len(written) == 2:  # the second case's label file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(image, path)

    monkeypatch.setattr(medseg.io.files, "save_nifti", disk_fills_up)
    out = tmp_path / "out"
    assert predict(model, "--backend", "torch", "-i", str(three), "-o", str(out)) == 2
    line = error_line(capsys)
    assert f"cannot write {out / 'b.nii.gz'}: no space left on device; free space" in line
    assert "1 case(s) done before; see medseg_run.json" in line
    run = manifest(out)
    assert [c["case_id"] for c in run["cases"]] == ["a"] and [f["case_id"] for f in run["failures"]] == ["b"]
    assert run["aborted"].startswith("stopped at case b: cannot write") and run["not_run"] == ["c"]
    assert not [p for p in out.iterdir() if ".part" in p.name]


def test_a_file_size_limit_ends_the_run_with_exit_2_and_a_manifest(model: Path, three: Path, tmp_path: Path) -> None:
    """A real RLIMIT_FSIZE in a child process: the 4D probabilities pass 32 KiB, the manifest does not."""
    limit = "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (32768, 32768)); "
    code = limit + "from medseg.cli import main; sys.exit(main(sys.argv[1:]))"
    out = tmp_path / "out"
    args = [
        "-q",
        "predict",
        "-m",
        str(model),
        "-i",
        str(three / "a.nii.gz"),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--backend",
        "torch",
        "--no-qc",
        "--save-probabilities",
    ]
    scan(three / "a.nii.gz", (48, 48, 48))  # probabilities of 48^3 voxels: far beyond 32 KiB
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "a_probabilities.nii.gz: file too large; raise the file-size limit (ulimit -f)" in one_error(done.stderr)
    run = manifest(out)
    assert run["cases"] == [] and run["failures"][0]["case_id"] == "a" and run["not_run"] == []


def test_an_internal_error_still_writes_the_manifest(
    model: Path, three: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medseg.inference

    real, calls = medseg.inference.predict_case, []

    def fails_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(medseg.inference, "predict_case", fails_second)
    out = tmp_path / "out"
    assert predict(model, "--backend", "torch", "-i", str(three), "-o", str(out)) == 1
    assert "internal error: RuntimeError: a bug" in capsys.readouterr().err
    run = manifest(out)
    assert [c["case_id"] for c in run["cases"]] == ["a"] and run["not_run"] == ["c"]
    assert run["failures"][0]["error"] == "internal error: RuntimeError: a bug"


# --- item 17: folder trees nested deep (the volume-file walk) ---------------------------------------


def test_a_volume_file_1000_folders_deep_is_found(model: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    fds = _nest(tmp_path / "in", 1000, "d")
    try:
        data = scan(tmp_path / "x.nii.gz").read_bytes()
        with os.fdopen(os.open("x.nii.gz", os.O_WRONLY | os.O_CREAT, dir_fd=fds[-1]), "wb") as handle:
            handle.write(data)
        assert predict(model, "--backend", "torch", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o")) == 0
        (case,) = manifest(tmp_path / "o")["cases"]
        assert case["source"].endswith("/d/d/x.nii.gz") and Path(case["outputs"]["labels"]).is_file()
    finally:
        _unnest(fds, "d")


def test_a_volume_tree_deeper_than_the_path_limit_is_a_one_line_error(model: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    fds = _nest(tmp_path / "in", 1000, "folder_" * 2)  # 15,000 characters > PATH_MAX
    try:
        assert predict(model, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o")) == 2
        line = error_line(capsys)
        assert "cannot be listed (file name too long)" in line and len(line) < 600
    finally:
        _unnest(fds, "folder_" * 2)


# --- item 18: --series and volume files; DICOM beside volume files ---------------------------------


@pytest.fixture()
def mixed(shared_data: Path, tmp_path: Path) -> Path:
    """A folder holding a small DICOM series (4 slices) beside one volume file."""
    copy_series(shared_data, HITACHI, tmp_path / "mixed")
    scan(tmp_path / "mixed" / "scan.nii.gz")
    return tmp_path / "mixed"


def test_series_on_volume_files_is_refused_not_ignored(model: Path, tmp_path: Path, capsys) -> None:
    path = scan(tmp_path / "in" / "x.nii.gz")
    for source in (path, path.parent):  # one file; a folder of volume files (and a non-DICOM note)
        assert predict(model, "-i", str(source), "-o", str(tmp_path / "o"), "--series", "T1") == 2
        line = error_line(capsys)
        assert "x: --series T1 selects DICOM series and this is a volume file; run without --series" in line
        (path.parent / "notes.txt").write_text("not DICOM")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\nx,{path}\n")
    assert predict(model, "-i", str(manifest), "-o", str(tmp_path / "o"), "--series", "T1") == 2
    assert "--series does not apply to the CSV manifest" in error_line(capsys)


def test_series_skips_volume_files_with_a_warning_and_both_kinds_run_without_it(
    model: Path, mixed: Path, tmp_path: Path, capsys, caplog
) -> None:
    listed = _dry_run(capsys, str(mixed), "-o", str(tmp_path / "b"))
    assert sorted(action for action, _ in listed.values()) == ["run", "run"]  # DICOM and NIfTI together
    listed = _dry_run(capsys, str(mixed), "-o", str(tmp_path / "b"), "--series", "1")
    assert listed["scan"] == (
        "skip",
        "--series 1 selects DICOM series and this is a volume file; run without --series to segment it",
    )
    out = tmp_path / "o"
    assert predict(model, "--backend", "torch", "-i", str(mixed), "-o", str(out), "--series", "1") == 0
    assert "--series 1: 1 volume file(s) skipped: --series selects DICOM series only" in caplog.text
    assert [c["case_id"] for c in manifest(out)["cases"]] == [c for c, (a, _) in listed.items() if a == "run"]


def _dry_run(capsys, *args: str) -> dict[str, tuple[str, str]]:
    assert main(["batch", *args, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:-1]
    return {line.split()[0]: (line.split()[1], line.split(None, 2)[2]) for line in lines}


# --- DICOM reader options in predict and batch -----------------------------------------------------


def test_predict_refuses_a_series_with_a_missing_file_then_reads_it_when_allowed(
    model: Path, shared_data: Path, tmp_path: Path, capsys, caplog
) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    files[-1].write_bytes(files[-1].read_bytes()[:-1000])
    assert predict(model, "--backend", "torch", "-i", str(tmp_path / "mr"), "-o", str(tmp_path / "o")) == 2
    line = error_line(capsys)
    assert "1 of its 4 files cannot be read" in line and "--allow-missing-slices" in line
    out = tmp_path / "allowed"
    assert (
        predict(model, "--backend", "torch", "-i", str(tmp_path / "mr"), "-o", str(out), "--allow-missing-slices") == 0
    )
    assert "loading without 1 unreadable file(s)" in caplog.text and files[-1].name in caplog.text
    (case,) = manifest(out)["cases"]
    assert read_volume_file(case["outputs"]["labels"], kind="label").spatial_shape == (64, 64, 3)
    assert json.loads(Path(case["outputs"]["stats_json"]).read_text())["unreadable_files"] == 1


def test_a_missing_middle_file_is_a_gap_unless_resampled(
    model: Path, shared_data: Path, tmp_path: Path, capsys
) -> None:
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    files[1].write_bytes(files[1].read_bytes()[:-1000])
    args = ["--backend", "torch", "-i", str(tmp_path / "mr"), "--allow-missing-slices"]
    assert predict(model, *args, "-o", str(tmp_path / "o")) == 2
    assert "inconsistent slice increment" in error_line(capsys)
    assert predict(model, *args, "-o", str(tmp_path / "o2"), "--resample") == 0


def test_batch_takes_the_reader_options(model: Path, shared_data: Path, tmp_path: Path) -> None:
    from medseg.cli import build_parser
    from medseg.cli.batch import make_engine

    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    files[-1].write_bytes(files[-1].read_bytes()[:-1000])
    assert batch(model, str(tmp_path / "mr"), "-o", str(tmp_path / "b1")) == 3  # the case fails, recorded
    assert batch(model, str(tmp_path / "mr"), "-o", str(tmp_path / "b2"), "--allow-missing-slices") == 0
    (folder,) = (tmp_path / "b2" / "cases").iterdir()
    assert read_volume_file(folder / f"{folder.name}.nii.gz", kind="label").spatial_shape == (64, 64, 3)
    args = build_parser().parse_args(
        [
            "batch",
            str(tmp_path / "mr"),
            "-m",
            str(model),
            "-o",
            str(tmp_path / "b3"),
            "--allow-missing-slices",
            "--values",
            "real-world",
            "--resample",
        ]
    )
    output = make_engine(args).output
    assert output.allow_missing_slices and output.values == "real-world" and output.resample


def test_reader_options_reach_read_case_and_read_volume(shared_data: Path, tmp_path: Path) -> None:
    from medseg.cases import discover_cases, read_case
    from medseg.errors import ConfigError
    from medseg.inference import OutputOptions
    from medseg.io import read_volume
    from medseg.io.dicom import load_volume

    _with_mapping(shared_data / HITACHI, tmp_path / "rwv", 2.5, -10.0)
    (case,) = discover_cases(tmp_path / "rwv").cases
    (real,), _ = read_case(case, values="real-world")
    np.testing.assert_array_equal(real.array, load_volume(tmp_path / "rwv", values="real-world").array)
    assert not np.array_equal(real.array, read_case(case)[0][0].array)
    files = copy_series(shared_data, HITACHI, tmp_path / "mr")
    files[0].write_bytes(files[0].read_bytes()[:-1000])
    assert read_volume(tmp_path / "mr", allow_missing_slices=True).shape == (64, 64, 3)
    with pytest.raises(ConfigError, match="unknown values 'raw'; choose one of rescaled, real-world"):
        OutputOptions(values="raw")
