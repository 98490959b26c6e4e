"""``medseg batch`` with the real Predictor in worker processes, on real MSD hippocampus cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.batch.ledger import Ledger
from medseg.cli import main
from tests.inference_stubs import make_plan, save_random_model


@pytest.fixture()
def hippocampus(shared_data: Path, tmp_path: Path) -> Path:
    """Two real hippocampus images in a folder of their own."""
    folder = tmp_path / "in"
    folder.mkdir()
    for image in sorted((shared_data / "msd_hippocampus" / "imagesTr").glob("*.nii.gz"))[:2]:
        (folder / image.name).symlink_to(image)
    return folder


@pytest.mark.slow  # worker start-up (torch, MONAI, model) dominates: 8-20 s on 2 shared cores
def test_batch_workers_predict_like_predict_case_on_the_source_grid(hippocampus: Path, tmp_path: Path) -> None:
    from medseg.inference import OutputOptions, PredictOptions, Predictor, predict_case

    model = save_random_model(tmp_path / "model", make_plan())
    out = tmp_path / "out"
    code = main(
        [
            "-q",
            "batch",
            str(hippocampus),
            "-m",
            str(model),
            "-o",
            str(out),
            "--workers",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    with Ledger(out / "ledger.sqlite") as ledger:
        rows = ledger.rows()
        loads = ledger.model_loads()
    assert len(loads) == 1 and all(r.status == "done" for r in rows) and len(rows) == 2
    options = PredictOptions(device="cpu", threads=1)
    with Predictor.from_folders([model], options) as predictor:
        for row in rows:
            source = hippocampus / row.source
            labels_path = out / next(o.path for o in row.outputs if o.name == "labels")
            written, image = nib.load(str(labels_path)), nib.load(str(source))
            assert written.shape == image.shape and np.allclose(written.affine, image.affine)
            direct = predict_case(predictor, source, tmp_path / "direct", OutputOptions(qc=False), case_id=row.case_id)
            expected = np.asarray(nib.load(str(direct.outputs["labels"])).dataobj)
            assert np.array_equal(np.asarray(written.dataobj), expected)
            assert set(row.timings) >= {"read", "preprocess", "network", "inverse", "write"}
            assert "source" not in row.stats
    with open(out / "summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert {"volume_ml_Anterior", "volume_ml_Posterior"} <= set(table[0])
    page = (out / "report.html").read_text()
    assert all(f'src="cases/{r.case_id}/{r.case_id}_qc.png"' in page for r in rows)


def test_predict_engine_names_outputs_by_case_and_keeps_paths_out_of_stats(hippocampus: Path, tmp_path: Path) -> None:
    from medseg.batch.engine import execute_case
    from medseg.batch.inference_engine import PredictEngine
    from medseg.cases import Namer, SelectionRules, discover_cases
    from medseg.inference import OutputOptions, PredictOptions

    model = save_random_model(tmp_path / "model", make_plan())
    engine = PredictEngine((model,), PredictOptions(device="cpu"), OutputOptions(qc=False))
    assert engine.identity().id == "model" and len(engine.identity().version) == 16
    case = discover_cases(hippocampus, SelectionRules(), Namer(b"s" * 32)).cases[0]
    predictor = engine.load(threads=1)
    outcome = execute_case(engine, predictor, case, tmp_path / "out")
    assert outcome.ok, outcome.error
    names = {o.name: o.path for o in outcome.outputs}
    assert names["labels"] == f"cases/{case.case_id}/{case.case_id}.nii.gz" and case.case_id.startswith("F")
    assert "hippocampus" not in str(outcome.stats) and outcome.timings["network"] > 0
    labels = nib.load(str(tmp_path / "out" / names["labels"]))
    assert np.allclose(labels.affine, nib.load(str(case.images[0])).affine)
    assert [l["name"] for l in outcome.stats["labels"]] == ["Anterior", "Posterior"]
    broken = type(case)(case_id="broken", kind="file", source="x.nii.gz", images=(tmp_path / "x.nii.gz",))
    (tmp_path / "x.nii.gz").write_bytes(b"not a nifti")
    failed = execute_case(engine, predictor, broken, tmp_path / "out")
    assert not failed.ok and "could not be read" in failed.error


@pytest.mark.slow  # worker start-up, as above
def test_predict_and_batch_name_the_same_cases_alike_and_batch_post_processes(
    mixed_input: Path, tmp_path: Path
) -> None:
    """One input through both commands: the same case ids and output file names (flat in predict's
    OUTDIR, in cases/<case>/ for batch); batch applies --largest-component on to what predict gives."""
    from scipy import ndimage

    from medseg.inference.postprocess import keep_largest_component

    model = save_random_model(tmp_path / "model", make_plan(spacing=(2.75, 2.75, 6.5), patch=(32, 32, 8)))
    common = ["--device", "cpu", "--threads", "1", "--no-qc"]
    assert (
        main(
            [
                "-q",
                "predict",
                "-m",
                str(model),
                "-i",
                str(mixed_input),
                "-o",
                str(tmp_path / "p"),
                *common,
                "--largest-component",
                "off",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "batch",
                str(mixed_input),
                "-m",
                str(model),
                "-o",
                str(tmp_path / "b"),
                *common,
                "--largest-component",
                "on",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "p" / "medseg_run.json").read_text())
    by_predict = {c["case_id"]: {k: Path(v) for k, v in c["outputs"].items()} for c in manifest["cases"]}
    with Ledger(tmp_path / "b" / "ledger.sqlite") as ledger:
        rows = {r.case_id: r for r in ledger.rows()}
    by_batch = {case: {o.name: tmp_path / "b" / o.path for o in row.outputs} for case, row in rows.items()}
    assert len(by_predict) == 4 and sum(r.kind == "dicom" for r in rows.values()) == 2
    assert {c: {k: p.name for k, p in o.items()} for c, o in by_predict.items()} == {
        c: {k: p.name for k, p in o.items()} for c, o in by_batch.items()
    }
    assert all(p.parent.name == case for case, o in by_batch.items() for p in o.values())
    several = 0
    for case, outputs in by_predict.items():
        raw = np.asarray(nib.load(str(outputs["labels"])).dataobj)
        batch = np.asarray(nib.load(str(by_batch[case]["labels"])).dataobj)
        assert np.array_equal(batch, keep_largest_component(raw))
        several += any(ndimage.label(raw == value, np.ones((3, 3, 3)))[1] > 1 for value in (1, 2))
    assert several  # the option changed something, so the comparison can fail
