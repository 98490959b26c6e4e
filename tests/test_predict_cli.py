"""``medseg predict`` / ``medseg export`` end to end on real hippocampus cases and a real DICOM series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.io.files import read_volume_file
from tests.inference_stubs import make_plan, save_random_model

CASES = ("hippocampus_003", "hippocampus_004")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "hippo"
    return save_random_model(folder, make_plan(patch=(16, 24, 16)), postprocessing={"keep_largest_component": [1]})


@pytest.fixture()
def inputs(shared_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for case in CASES:
        shutil.copy(shared_data / "msd_hippocampus" / "imagesTr" / f"{case}.nii.gz", folder)
    return folder


def predict(*args: str) -> int:
    return main(["-q", "predict", "--device", "cpu", "--threads", "1", *args])


def test_predict_folder_writes_outputs_on_the_source_grid(model, inputs, tmp_path):
    out = tmp_path / "out"
    assert predict("-m", str(model), "-i", str(inputs), "-o", str(out), "--instances", "Anterior") == 0
    manifest = json.loads((out / "medseg_run.json").read_text())
    assert [c["case_id"] for c in manifest["cases"]] == list(CASES) and manifest["failures"] == []
    assert manifest["predictor"]["runtime"]["device"] == "cpu" and "torch" in manifest["versions"]
    assert {"read", "preprocess", "network", "inverse", "write"} <= set(manifest["cases"][0]["timings"])
    for case in CASES:
        source = read_volume_file(inputs / f"{case}.nii.gz")
        labels = read_volume_file(out / f"{case}.nii.gz", kind="label")
        assert labels.spatial_shape == source.spatial_shape and np.allclose(labels.affine, source.affine)
        assert labels.array.max() <= 2
        for suffix in ("_stats.json", "_stats.csv", "_qc.png", "_instances.nii.gz", "_instances.csv", ".json"):
            assert (out / f"{case}{suffix}").is_file(), suffix


def test_ensemble_and_fast_mode(model, inputs, tmp_path):
    single = inputs / f"{CASES[0]}.nii.gz"
    assert predict("-m", str(model), "-m", str(model), "-i", str(single), "-o", str(tmp_path / "ens"), "--no-qc") == 0
    assert (
        predict(
            "-m",
            str(model),
            "-i",
            str(single),
            "-o",
            str(tmp_path / "one"),
            "--no-qc",
            "--largest-component",
            "off",
            "--fast",
            "--save-probabilities",
        )
        == 0
    )
    a = read_volume_file(tmp_path / "ens" / f"{CASES[0]}.nii.gz", kind="label").array
    b = read_volume_file(tmp_path / "one" / f"{CASES[0]}.nii.gz", kind="label").array
    # an ensemble of one model twice equals that model (here without the largest-component step)
    from medseg.inference.postprocess import keep_largest_component

    assert np.array_equal(a, keep_largest_component(b, [1]))
    assert (tmp_path / "one" / f"{CASES[0]}_probabilities.nii.gz").is_file()


def test_dicom_series_gives_labels_on_its_oblique_grid_and_a_seg(sample_data, tmp_path):
    from medseg.io.dicom import discover_series, load_series

    series_dir = sample_data / "dicom" / "PGBM-003" / "11-T1post-18670"
    if not series_dir.is_dir():
        pytest.skip("sample DICOM series missing")
    model = save_random_model(tmp_path / "m", make_plan(spacing=(2.75, 2.75, 6.5), patch=(32, 32, 8)))
    out = tmp_path / "out"
    assert predict("-m", str(model), "-i", str(series_dir), "-o", str(out), "--no-qc") == 0
    manifest = json.loads((out / "medseg_run.json").read_text())
    (case,) = manifest["cases"]
    source = load_series(discover_series(series_dir)[0]).volume
    labels = read_volume_file(case["outputs"]["labels"], kind="label")
    assert labels.spatial_shape == source.spatial_shape == (280, 320, 22)
    np.testing.assert_allclose(labels.affine, source.affine, atol=1e-4)
    assert np.abs(labels.direction - np.round(labels.direction)).max() > 0.1  # really oblique
    assert labels.array.any()  # this seed predicts some foreground, so the SEG is written
    from medseg.io.seg import read_seg

    seg = read_seg(case["outputs"]["seg"], load_series(discover_series(series_dir)[0]))
    assert np.array_equal(seg.array, labels.array)


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "{tmp}/missing"], "does not exist"),
        (["-m", "{tmp}"], "not a medseg model folder"),
    ],
)
def test_bad_model_folder_is_a_one_line_error(args, message, inputs, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    assert predict(*args, "-i", str(inputs), "-o", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_incompatible_ensemble_and_bad_input(model, inputs, tmp_path, capsys):
    other = save_random_model(tmp_path / "other", make_plan(), labels={0: "background", 1: "liver"})
    assert predict("-m", str(model), "-m", str(other), "-i", str(inputs), "-o", str(tmp_path / "o")) == 2
    assert "different labels" in capsys.readouterr().err
    assert predict("-m", str(model), "-i", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "o")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert predict("-m", str(model), "-i", str(inputs), "-o", str(tmp_path / "o"), "--instances", "tumour") == 2
    assert "unknown class 'tumour'" in capsys.readouterr().err


def test_one_bad_case_in_a_folder_does_not_stop_the_others(model, inputs, tmp_path):
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    assert predict("-m", str(model), "-i", str(inputs), "-o", str(out), "--no-qc") == 3
    manifest = json.loads((out / "medseg_run.json").read_text())
    assert len(manifest["cases"]) == 2 and manifest["failures"][0]["case_id"] == "broken"


def test_export_cli_then_predict_with_onnxruntime(model, inputs, tmp_path):
    pytest.importorskip("onnxruntime")
    assert main(["-q", "export", "-m", str(model), "-o", str(tmp_path / "onnx")]) == 0
    single = inputs / f"{CASES[1]}.nii.gz"
    assert (
        predict(
            "-m",
            str(tmp_path / "onnx"),
            "--backend",
            "onnxruntime",
            "-i",
            str(single),
            "-o",
            str(tmp_path / "ort"),
            "--no-qc",
            "--precision",
            "fp32",
        )
        == 0
    )
    assert (
        predict(
            "-m",
            str(model),
            "-i",
            str(single),
            "-o",
            str(tmp_path / "pt"),
            "--no-qc",
            "--precision",
            "fp32",
            "--backend",
            "torch",
        )
        == 0
    )
    a = read_volume_file(tmp_path / "ort" / f"{CASES[1]}.nii.gz", kind="label").array
    b = read_volume_file(tmp_path / "pt" / f"{CASES[1]}.nii.gz", kind="label").array
    assert (a == b).mean() > 0.995


def test_discover_cases_for_files_folders_and_dicom(shared_data, tmp_path):
    from medseg.cases import discover_cases
    from medseg.errors import InputError

    def find_cases(*args, **kwargs):
        return list(discover_cases(*args, **kwargs).cases)

    folder = shared_data / "dicom_tcia_brain_tumor_progression" / "dicom" / "PGBM-003"
    cases = find_cases(folder)
    assert len(cases) == 4 and len({c.case_id for c in cases}) == 4 and all(c.series.is_image for c in cases)
    one_file = sorted((folder / "11-T1post-18670").glob("*.dcm"))[3]
    (case,) = find_cases(one_file)
    assert one_file in case.series.files
    images = shared_data / "msd_hippocampus" / "imagesTr"
    for n, name in enumerate(("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz")):
        shutil.copy(images / f"{CASES[n % 2]}.nii.gz", tmp_path / name)
    grouped = find_cases(tmp_path, channels=2)
    assert [c.case_id for c in grouped] == ["a", "b"] and grouped[0].images[1].name == "a_0001.nii.gz"
    (tmp_path / "b_0001.nii.gz").unlink()
    with pytest.raises(InputError, match="channels 0..1"):
        find_cases(tmp_path, channels=2)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM files found|neither a volume file"):
        find_cases(tmp_path / "notes.txt")


def batch_dry_run(capsys, *args: str) -> dict[str, tuple[str, str]]:
    """``medseg batch --dry-run`` listing as case id -> (action, reason)."""
    assert main(["batch", *args, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:-1]
    return {line.split()[0]: (line.split()[1], line.split(None, 2)[2]) for line in lines}


def test_predict_and_batch_name_the_same_series_and_files_alike(mixed_input, tmp_path, capsys):
    model = save_random_model(tmp_path / "m", make_plan(spacing=(2.75, 2.75, 6.5), patch=(32, 32, 8)))
    out = tmp_path / "out"
    assert predict("-m", str(model), "-i", str(mixed_input), "-o", str(out), "--no-qc", "--no-seg") == 0
    manifest = json.loads((out / "medseg_run.json").read_text())
    listed = batch_dry_run(capsys, str(mixed_input), "-m", str(model), "-o", str(tmp_path / "b"))
    assert sorted(c["case_id"] for c in manifest["cases"]) == sorted(listed) and len(listed) == 4
    assert {p.name.split(".")[0] for p in mixed_input.glob("*.nii.gz")} <= set(listed)
    dicom = sorted(c for c in listed if not c.startswith("hippocampus"))
    assert [c.split("_")[0] for c in dicom] == ["PGBM-003", "PGBM-003"] and dicom[0].endswith("_S11_T1post")
    for case in manifest["cases"]:
        assert Path(case["outputs"]["labels"]) == out / f"{case['case_id']}.nii.gz"
    # --series chooses the same series in both; batch lists the other one as skipped, with the reason
    chosen = batch_dry_run(capsys, str(mixed_input / "export"), "-o", str(tmp_path / "b"), "--series", "T1post")
    assert sorted(a for a, _ in chosen.values()) == ["run", "skip"]
    (skipped,) = [r for a, r in chosen.values() if a == "skip"]
    assert "not chosen by --series T1post" in skipped
    one = tmp_path / "one"
    assert (
        predict(
            "-m",
            str(model),
            "-i",
            str(mixed_input / "export"),
            "-o",
            str(one),
            "--no-qc",
            "--no-seg",
            "--series",
            "T1post",
        )
        == 0
    )
    ran = [c["case_id"] for c in json.loads((one / "medseg_run.json").read_text())["cases"]]
    assert ran == [c for c, (a, _) in chosen.items() if a == "run"] == [dicom[0]]


def test_batch_passes_every_prediction_option_to_its_workers(model, inputs, tmp_path):
    from medseg.batch.engine import execute_case
    from medseg.cases import discover_cases
    from medseg.cli import build_parser
    from medseg.cli.batch import make_engine
    from medseg.inference import OutputOptions, PredictOptions, Predictor, predict_case
    from medseg.inference.postprocess import keep_largest_component, remap_labels

    args = build_parser().parse_args(
        [
            "batch",
            str(inputs),
            "-m",
            str(model),
            "-o",
            str(tmp_path / "b"),
            "--backend",
            "torch",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--threads",
            "1",
            "--overlap",
            "0.25",
            "--tiles-per-batch",
            "3",
            "--no-qc",
            "--largest-component",
            "on",
            "--remap",
            "2:1",
            "--instances",
            "Anterior",
            "--save-probabilities",
        ]
    )
    engine = make_engine(args)
    assert engine.predict == PredictOptions(
        device="cpu", backend="torch", precision="fp32", overlap=0.25, tiles_per_batch=3, threads=1
    )
    assert engine.output.probabilities and not engine.output.qc and engine.output.postprocess.instances == (1,)
    case = discover_cases(inputs).cases[0]
    with engine.load(threads=1) as predictor:
        outcome = execute_case(engine, predictor, case, tmp_path / "b")
    assert outcome.ok, outcome.error
    written = {o.name: tmp_path / "b" / o.path for o in outcome.outputs}
    assert {"probabilities", "instances"} <= set(written) and "qc" not in written
    plain = OutputOptions(qc=False, postprocess=replace_largest(OutputOptions().postprocess, "off"))
    with Predictor.from_folders([model], engine.predict) as predictor:
        raw = predict_case(predictor, case, tmp_path / "raw", plain)
    raw_labels = read_volume_file(raw.outputs["labels"], kind="label").array
    batch_labels = read_volume_file(written["labels"], kind="label").array
    assert np.array_equal(batch_labels, remap_labels(keep_largest_component(raw_labels), {2: 1}))
    assert batch_labels.max() == 1 and (raw_labels == 2).any()


def replace_largest(options, mode: str):
    from dataclasses import replace

    return replace(options, largest_component=mode)


def test_predict_and_batch_offer_the_same_prediction_options():
    import argparse

    from medseg import choices
    from medseg.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices

    def options(name: str) -> dict[str, tuple]:
        return {
            flag: (a.dest, tuple(a.choices or ()), a.default, a.nargs, type(a).__name__, a.type)
            for a in commands[name]._actions
            for flag in a.option_strings
        }

    predict_opts, batch_opts = options("predict"), options("batch")
    prediction = set(predict_opts) - {"-m", "--model", "-i", "--input", "-o", "--output"}
    assert len(prediction) > 15 and {flag: batch_opts.get(flag) for flag in prediction} == {
        flag: predict_opts[flag] for flag in prediction
    }
    assert predict_opts["--backend"][1] == choices.BACKENDS and batch_opts["--executor"][1] == choices.EXECUTORS
    assert {"--tta", "--device", "--precision", "--largest-component"} <= {f for f in prediction if predict_opts[f][1]}
    assert "--probabilities" not in batch_opts and "--save-probabilities" in batch_opts
