"""The default is the fast path: the README's set-up command installs the fastest CPU backend, and
``medseg predict`` / ``medseg batch`` say which backend and precision they chose and why, in the log
and the run manifest."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shlex
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.model.runtime import cpu_supports_bf16
from tests.inference_stubs import make_plan, save_random_model

REPO = Path(__file__).resolve().parents[1]
CPU_PRECISION = (
    "precision bf16 (auto: native bf16 on this CPU)"
    if cpu_supports_bf16()
    else "precision fp32 (auto: no native bf16 on this CPU)"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("m") / "model", make_plan(patch=(16, 24, 16)))


@pytest.fixture()
def case(shared_data: Path) -> Path:
    return shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_003.nii.gz"


def predict(model: Path, case: Path, out: Path, *args: str) -> dict:
    """Run ``medseg predict`` on one case (no QC) and return its manifest."""
    assert (
        main(
            [
                "predict",
                "-m",
                str(model),
                "-i",
                str(case),
                "-o",
                str(out),
                "--no-qc",
                "--device",
                "cpu",
                "--threads",
                "1",
                *args,
            ]
        )
        == 0
    )
    return json.loads((out / "medseg_run.json").read_text())


def hide_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name.split(".")[0] == "openvino" else find_spec(name, *a, **k),
    )


def test_auto_on_a_cpu_with_openvino_says_so(model, case, tmp_path, caplog) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    with caplog.at_level(logging.INFO, logger="medseg"):
        manifest = predict(model, case, tmp_path / "out")
    line = f"backend openvino (auto: fastest installed on this CPU), {CPU_PRECISION}"
    assert line in caplog.messages
    (choice,) = manifest["predictor"]["choices"]
    assert choice["backend"] == "openvino" and choice["backend_reason"] == "auto: fastest installed on this CPU"
    assert f"precision {choice['precision']} ({choice['precision_reason']})" == CPU_PRECISION


def test_auto_without_openvino_names_the_missing_package(model, case, tmp_path, caplog, monkeypatch) -> None:
    hide_openvino(monkeypatch)
    with caplog.at_level(logging.INFO, logger="medseg"):
        manifest = predict(model, case, tmp_path / "out")
    (line,) = [m for m in caplog.messages if m.startswith("backend ")]
    assert line.startswith("backend torch (auto: OpenVINO is not installed (pip install 'medseg[fast]'")
    assert line.endswith(CPU_PRECISION)
    assert manifest["predictor"]["choices"][0]["backend"] == "torch"


def test_explicit_choices_are_reported_as_asked_for(model, case, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="medseg"):
        manifest = predict(model, case, tmp_path / "out", "--backend", "torch", "--precision", "fp32")
    assert "backend torch (asked for), precision fp32 (asked for)" in caplog.messages
    assert manifest["predictor"]["choices"] == [
        {"backend": "torch", "backend_reason": "asked for", "precision": "fp32", "precision_reason": "asked for"}
    ]


def test_onnxruntime_reports_its_own_precision(model, case, tmp_path, caplog) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    with caplog.at_level(logging.INFO, logger="medseg"):
        predict(model, case, tmp_path / "out", "--backend", "onnxruntime", "--precision", "auto")
    (line,) = [m for m in caplog.messages if m.startswith("backend ")]
    expected = "the onnxruntime backend runs fp32 here" if cpu_supports_bf16() else "auto: no native bf16 on this CPU"
    assert line == f"backend onnxruntime (asked for), precision fp32 ({expected})"


def test_batch_workers_log_their_choice(model, caplog) -> None:
    from medseg.batch.inference_engine import PredictEngine
    from medseg.inference import PredictOptions

    engine = PredictEngine((model,), PredictOptions(device="cpu", backend="torch", precision="fp32"))
    with caplog.at_level(logging.INFO, logger="medseg"):
        engine.load(threads=1).close()
    assert "backend torch (asked for), precision fp32 (asked for)" in caplog.messages


def readme_setup_requirements(machine: str) -> set[str]:
    """The distributions the README's set-up command asks pip for (medseg's own requirements with
    the extras named there, markers evaluated for ``machine``), lower-cased names."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (command,) = [line for line in readme.splitlines() if "pip install -e" in line and "venv" in line]
    words = shlex.split(command)
    target = words[words.index("-e") + 1]  # the project: ".[extra,...]"
    extras = set(re.findall(r"[\w-]+", target.partition("[")[2]))
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
    environment = {"platform_machine": machine, "extra": ""}
    return {r.name.lower() for r in wanted if r.marker is None or r.marker.evaluate(environment)}


def test_readme_setup_installs_the_fastest_cpu_backend_on_x86_64() -> None:
    for machine in ("x86_64", "AMD64"):
        assert {"openvino", "onnx"} <= readme_setup_requirements(machine)
    assert "onnxruntime" not in readme_setup_requirements("x86_64")  # not needed by the fast path
    assert "openvino" not in readme_setup_requirements("aarch64")  # not measured there: the fast extra adds it
