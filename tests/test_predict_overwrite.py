"""Never overwrite an input, never let two cases write one file (issue 14 items 1 and 2).

``medseg predict`` and ``medseg batch`` share the rule (medseg/cases/overwrite.py): refused in one
line, exit 2, before anything is written; inputs stay byte for byte what they were.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.io.files import read_volume_file, write_volume_file
from medseg.volume import Volume
from tests.inference_stubs import make_plan, save_random_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("models") / "m", make_plan(patch=(16, 16, 16)))


def scan(path: Path, shape: tuple[int, int, int] = (20, 22, 18), seed: int = 0) -> Path:
    """A small random image volume written to ``path`` (its format by suffix)."""
    array = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return write_volume_file(Volume(array, np.diag([1.0, 1.0, 1.0, 1.0])), path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def predict(model: Path, *args: str) -> int:
    return main(
        ["-q", "predict", "-m", str(model), "--device", "cpu", "--threads", "1", "--backend", "torch", "--no-qc", *args]
    )


def batch(model: Path, *args: str) -> int:
    return main(
        ["-q", "batch", *args, "-m", str(model), "--device", "cpu", "--threads", "1", "--backend", "torch", "--no-qc"]
    )


def refusal(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("medseg: error: "), lines
    return lines[0]


# --- item 1: an output over an input ---------------------------------------------------------------


def test_predict_into_the_folder_of_its_input_file_is_refused(model: Path, tmp_path: Path, capsys) -> None:
    source = scan(tmp_path / "d" / "x.nii.gz")
    before = digest(source)
    assert predict(model, "-i", str(source), "-o", str(tmp_path / "d")) == 2
    assert "holds the input" in refusal(capsys)
    assert digest(source) == before and sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.nii.gz"]
    assert predict(model, "-i", str(tmp_path / "d"), "-o", str(tmp_path / "d")) == 2  # folder = OUTDIR
    assert "inside the input" in refusal(capsys) and digest(source) == before


def test_batch_into_the_folder_of_its_input_file_is_refused(model: Path, tmp_path: Path, capsys) -> None:
    source = scan(tmp_path / "d" / "x.nii.gz")
    assert batch(model, str(source), "-o", str(tmp_path / "d")) == 2
    assert "holds the input" in refusal(capsys)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.nii.gz"]


def test_a_manifest_naming_a_file_that_an_output_would_replace_is_refused(model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    source = scan(out / "a.nii.gz")  # e.g. a scan kept in the results folder of an earlier run
    before = digest(source)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,image\na,{source}\n")
    assert predict(model, "-i", str(manifest), "-o", str(out)) == 2
    line = refusal(capsys)
    assert f"would overwrite the input {source}" in line and "case a" in line
    assert digest(source) == before and sorted(p.name for p in out.iterdir()) == ["a.nii.gz"]
    # batch owns OUTDIR/cases/<case>/ entirely: an input there is refused too
    kept = scan(out / "cases" / "a" / "a.nii.gz")
    before = digest(kept)
    manifest.write_text(f"case,image\na,{kept}\n")
    assert batch(model, str(manifest), "-o", str(out)) == 2
    assert "would overwrite the input" in refusal(capsys) and digest(kept) == before
    assert sorted(p.name for p in (out / "cases" / "a").iterdir()) == ["a.nii.gz"]
    assert main(["batch", str(manifest), "-o", str(out), "--dry-run"]) == 2  # the dry run says so too


# --- item 2: two cases, one output -----------------------------------------------------------------


def test_one_name_in_several_formats_gives_every_case_its_own_outputs(model: Path, tmp_path: Path) -> None:
    shapes = {"x.nii.gz": (20, 22, 18), "x.nii": (18, 20, 16), "x.nrrd": (16, 18, 20), "x.mha": (22, 16, 18)}
    for n, (name, shape) in enumerate(shapes.items()):
        scan(tmp_path / "in" / name, shape, seed=n)
    assert predict(model, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")) == 0
    cases = json.loads((tmp_path / "out" / "medseg_run.json").read_text())["cases"]
    labels = {Path(c["source"]).name: Path(c["outputs"]["labels"]) for c in cases}
    assert set(labels) == set(shapes) and len(set(labels.values())) == 4
    for name, path in labels.items():  # each label map lies on its own source's grid
        assert read_volume_file(path, kind="label").spatial_shape == shapes[name]
    assert batch(model, str(tmp_path / "in"), "-o", str(tmp_path / "b")) == 0
    assert len(list((tmp_path / "b" / "cases").iterdir())) == 4


def test_ids_differing_only_in_letter_case_get_distinct_outputs(tmp_path: Path) -> None:
    """``X`` and ``x`` are one file name on macOS and Windows: their cases get distinct ids."""
    from medseg.cases import discover_cases

    scan(tmp_path / "X.nii.gz")
    scan(tmp_path / "x.nii")
    ids = [case.case_id for case in discover_cases(tmp_path).cases]
    assert len(ids) == 2 and len({i.casefold() for i in ids}) == 2
    assert all(i.casefold().startswith("x-") for i in ids)


def test_cases_whose_output_files_clash_are_refused_before_anything_runs(model: Path, tmp_path: Path, capsys) -> None:
    """Case ``x`` writes ``x_stats.json``; case ``x_stats`` writes its label names to ``x_stats.json`` too."""
    scan(tmp_path / "in" / "x.nii.gz")
    scan(tmp_path / "in" / "x_stats.nii.gz", seed=1)
    assert predict(model, "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")) == 2
    line = refusal(capsys)
    assert "case x_stats and case x both write" in line and "x_stats.json" in line
    assert not (tmp_path / "out").exists()
    # a case named like the run manifest would replace it
    scan(tmp_path / "in2" / "medseg_run.nii.gz")
    assert predict(model, "-i", str(tmp_path / "in2"), "-o", str(tmp_path / "out")) == 2
    assert "run manifest medseg_run.json" in refusal(capsys) and not (tmp_path / "out").exists()
