"""Inputs compared with the model's training fingerprint (issue 14 item 11): the shipped hippocampus
model on a real hippocampus case (nothing to say), an all-zero volume, a real head CT and a case
resampled to 4 mm; warnings in the case statistics, the run manifest and the batch report;
``--strict`` refuses."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.inference import PredictOptions, Predictor
from medseg.inference.suitability import Finding, UnsuitableInputError, channel_modality, check_input, check_labels
from medseg.io.files import read_volume_file
from medseg.model.plan import Plan
from medseg.pretrained import PRETRAINED_DIR
from medseg.volume import Volume, VolumeMeta
from tests.inference_stubs import make_plan

HIPPOCAMPUS = PRETRAINED_DIR / "hippocampus"
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "hippocampus" / "imagesTs" / "hippocampus_020.nii.gz"
CPU = dict(device="cpu", backend="torch", threads=1, precision="fp32")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shipped_plan() -> Plan:
    return Plan.load(HIPPOCAMPUS / "plan.json")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    with Predictor.from_folders([HIPPOCAMPUS], PredictOptions(**CPU)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def zero_file(tmp_path_factory) -> Path:
    """An all-zero volume on the grid of a real hippocampus case."""
    image = nib.load(SAMPLE)
    path = tmp_path_factory.mktemp("zero") / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine), path)
    return path


def checks(findings) -> set[str]:
    return {f.check for f in findings}


# ---------------------------------------------------------------------- real data, shipped model
def test_a_real_hippocampus_case_gets_no_warning(predictor: Predictor) -> None:
    prediction = predictor.predict([read_volume_file(SAMPLE)])
    assert prediction.warnings == ()
    assert np.asarray(prediction.labels.array).any()


def test_an_all_zero_volume_warns_and_strict_refuses(zero_file: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "-m",
                "hippocampus",
                "-i",
                str(zero_file),
                "-o",
                str(out),
                "--no-qc",
                "--backend",
                "torch",
                "--device",
                "cpu",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    expected = {"check": "constant", "message": "the image is constant (every voxel is 0): there is nothing to segment"}
    (case,) = json.loads((out / "medseg_run.json").read_text())["cases"]
    assert case["warnings"] == [expected]
    assert json.loads((out / "blank_stats.json").read_text())["warnings"] == [expected]
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.getMessage().startswith("blank")]
    assert lines == [f"blank: {expected['message']}"]  # one line per problem per case

    strict = tmp_path / "strict"
    assert (
        main(
            [
                "predict",
                "-m",
                "hippocampus",
                "-i",
                str(zero_file),
                "-o",
                str(strict),
                "--no-qc",
                "--backend",
                "torch",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--strict",
            ]
        )
        == 2
    )
    manifest = json.loads((strict / "medseg_run.json").read_text())
    assert (
        manifest["cases"] == []
        and "does not suit the model (--strict): the image is constant" in manifest["failures"][0]["error"]
    )
    assert not (strict / "blank.nii.gz").exists()


def test_a_real_head_ct_is_not_an_mr_hippocampus(shared_data: Path, shipped_plan: Plan, tmp_path: Path, capsys) -> None:
    import medseg

    folder = shared_data / "dicom_dcm_qa_ct" / "dicom"
    ct = medseg.read(folder, resample=True)
    findings = check_input([ct], shipped_plan)
    assert checks(findings) == {"modality", "intensity", "spacing", "size"}
    assert "the image is CT (DICOM Modality) but the model was trained on MR (MRI)" in [f.message for f in findings]
    # without the DICOM header (e.g. converted to NIfTI) its intensities still give it away
    assert "intensity" in checks(check_input([ct.with_meta(modality=None)], shipped_plan))
    code = main(
        [
            "predict",
            "-m",
            "hippocampus",
            "-i",
            str(folder),
            "-o",
            str(tmp_path / "out"),
            "--resample",
            "--strict",
            "--backend",
            "torch",
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "the image is CT (DICOM Modality)" in capsys.readouterr().err


def test_a_case_resampled_to_4_mm_warns_about_spacing(predictor: Predictor) -> None:
    from scipy.ndimage import zoom

    image = read_volume_file(SAMPLE)
    coarse = zoom(np.asarray(image.array, dtype=np.float32), 0.25, order=1)
    affine = image.affine.copy()
    affine[:3, :3] *= 4.0
    prediction = predictor.predict([Volume(coarse, affine)])
    spacing = [f.message for f in prediction.warnings if f.check == "spacing"]
    assert spacing == ["voxel spacing 4 x 4 x 4 mm is more than 2x outside the training range 1 x 1 x 1 mm"]


def test_python_api_returns_warnings_and_refuses_when_strict(zero_file: Path) -> None:
    import medseg

    blank = medseg.read(zero_file)
    with medseg.load_model("hippocampus", **CPU) as model:
        assert checks(medseg.segment(blank, model=model).warnings) == {"constant"}
    with pytest.raises(UnsuitableInputError, match="image is constant"):
        medseg.segment(blank, model="hippocampus", strict=True, **CPU)


# ---------------------------------------------------------------------- the rules, one by one
def _fingerprinted(plan: Plan, **extra) -> Plan:
    from dataclasses import replace

    fingerprint = {
        "spacing": {"min": [1.0] * 3, "max": [1.0] * 3},
        "shape": {"min": [30] * 3, "max": [50] * 3},
        "intensity": [{"channel": "CT", "p00_5": -100.0, "p99_5": 300.0, "min": -1000.0}],
        "label_volume_ml": {"1": {"min": 2.0, "median": 3.0, "max": 4.0}},
        **extra,
    }
    return replace(plan, fingerprint=fingerprint)


def test_near_constant_and_absolute_intensity_rules() -> None:
    plan = _fingerprinted(make_plan(scheme="zscore"))
    from dataclasses import replace

    from medseg.model.plan import Normalization

    ct = replace(plan, channels=("CT",), normalization=(Normalization("ct", -100.0, 300.0, 50.0, 80.0),))
    array = np.zeros((40, 40, 40), np.float32)
    array[0, 0, :5] = 7.0  # 5 voxels of 64,000
    assert [f.message for f in check_input([Volume(array, np.eye(4))], plan)] == [
        "the image is nearly constant (100.0% of the voxels are 0)"
    ]
    raw = np.random.default_rng(0).uniform(2000, 4000, (40, 40, 40)).astype(np.float32)  # stored values, no rescale
    found = check_input([Volume(raw, np.eye(4))], ct)
    assert checks(found) == {"intensity"} and "lie in the training foreground range [-100, 300]" in found[0].message
    hu = np.random.default_rng(0).uniform(-50, 250, (40, 40, 40)).astype(np.float32)
    assert check_input([Volume(hu, np.eye(4), meta=VolumeMeta(modality="CT"))], ct) == []
    assert checks(check_input([Volume(hu, np.eye(4), meta=VolumeMeta(modality="MR"))], ct)) == {"modality"}


def test_size_rules_with_and_without_a_fingerprint() -> None:
    noise = np.random.default_rng(1).normal(size=(120, 40, 40)).astype(np.float32)
    found = check_input([Volume(noise, np.eye(4))], _fingerprinted(make_plan()))
    assert [f.message for f in found] == [
        "the image spans 120 x 40 x 40 mm, more than 2x the largest training image (50 x 50 x 50 mm)"
    ]
    small = np.random.default_rng(1).normal(size=(40, 40, 5)).astype(np.float32)
    bare = make_plan(patch=(16, 16, 16))  # no fingerprint: only the patch bounds the size
    assert checks(check_input([Volume(small, np.eye(4))], bare)) == {"size"}
    assert check_input([Volume(noise, np.eye(4))], bare) == []
    assert checks(check_input([Volume(small, np.eye(4), meta=VolumeMeta(spacing_known=False))], bare)) == set()


def test_predicted_volume_rule() -> None:
    plan = _fingerprinted(make_plan())
    labels = np.zeros((40, 40, 40), np.uint8)
    assert [f.message for f in check_labels(Volume(labels, np.eye(4), "label"), plan)] == [
        "nothing predicted as Anterior, though every training case has 2-4 mL of it"
    ]
    labels[:30, :30, :30] = 1  # 27 mL
    assert [f.message for f in check_labels(Volume(labels, np.eye(4), "label"), plan)] == [
        "predicted Anterior volume 27 mL is more than 3x outside the training range 2-4 mL per case"
    ]
    labels[:] = 0
    labels[:15, :15, :15] = 1  # 3.4 mL
    assert check_labels(Volume(labels, np.eye(4), "label"), plan) == []
    assert check_labels(Volume(labels, np.eye(4), "label"), make_plan()) == []  # older plans: no statistics


def test_channel_modalities() -> None:
    assert [channel_modality(n, "zscore") for n in ("MRI", "T1w", "t1gd", "FLAIR", "ADC", "CT", "PET")] == [
        "MR",
        "MR",
        "MR",
        "MR",
        "MR",
        "CT",
        None,
    ]
    assert channel_modality("venous", "ct") == "CT"
    assert Finding("size", "x").to_dict() == {"check": "size", "message": "x"}


def test_shipped_plan_carries_label_volumes(shipped_plan: Plan) -> None:
    volumes = shipped_plan.fingerprint["label_volume_ml"]
    assert set(volumes) == {"1", "2"} and all(0 < v["min"] < v["median"] < v["max"] < 5 for v in volumes.values())


# ---------------------------------------------------------------------- batch: ledger stats and report
def test_batch_records_warnings_per_case_and_strict_fails_the_case(zero_file: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from medseg.batch.engine import execute_case
    from medseg.batch.inference_engine import PredictEngine
    from medseg.batch.ledger import CaseRow
    from medseg.batch.report import report_html, summary_csv
    from medseg.cases import Namer, SelectionRules, discover_cases
    from medseg.inference import OutputOptions

    case = discover_cases(zero_file, SelectionRules(), Namer(b"s" * 32)).cases[0]
    engine = PredictEngine((HIPPOCAMPUS,), PredictOptions(**CPU), OutputOptions(qc=False))
    predictor = engine.load(threads=1)
    outcome = execute_case(engine, predictor, case, tmp_path / "out")
    assert outcome.ok and [w["check"] for w in outcome.stats["warnings"]] == ["constant"]
    strict = replace(engine, predict=PredictOptions(strict=True, **CPU))
    failed = execute_case(strict, strict.load(threads=1), case, tmp_path / "strict")
    assert not failed.ok and "the image is constant" in failed.error

    row = CaseRow(
        case.case_id,
        "file",
        "blank.nii.gz",
        None,
        None,
        None,
        None,
        "done",
        None,
        1,
        1,
        "w0",
        1.0,
        {},
        dict(outcome.stats),
        "hippocampus",
        "v",
        (),
    )
    table = summary_csv([row], pseudonymised=False).splitlines()
    assert table[0].split(",")[-2:] == ["warnings", "error"]
    assert "the image is constant (every voxel is 0)" in table[1]
    assert "the image is constant (every voxel is 0)" in report_html([row], pseudonymised=False)
