"""ONNX export and the ONNX Runtime / OpenVINO backends (skipped when the packages are absent)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.inference import PredictOptions, Predictor
from medseg.inference.export import export_model_folder, load_export
from medseg.io.files import read_volume_file
from tests.inference_stubs import make_plan, save_random_model

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = save_random_model(root / "model", make_plan(patch=(16, 24, 16)))
    onnx_path = export_model_folder(model, root / "onnx")
    return model, onnx_path.parent


@pytest.fixture(scope="module")
def hippo(shared_data):
    return read_volume_file(shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_007.nii.gz")


def test_export_folder_holds_model_plan_and_spec(exported):
    _model, folder = exported
    spec = json.loads((folder / "medseg_export.json").read_text())
    assert spec["format"] == "medseg-onnx" and spec["patch_size"] == [16, 24, 16]
    assert spec["input"]["shape"] == ["batch", 1, 16, 24, 16]
    assert spec["model"]["labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    if spec["max_abs_diff_vs_torch"] is not None:
        assert spec["max_abs_diff_vs_torch"] < 1e-3
    plan, info, onnx_path = load_export(folder)
    assert plan.config_3d.patch_size == (16, 24, 16) and info.out_channels == 3 and onnx_path.is_file()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_backends_agree_with_torch_fp32(exported, hippo, backend):
    pytest.importorskip(backend)
    model, folder = exported
    reference = Predictor.from_folders(
        [model], PredictOptions(device="cpu", threads=1, precision="fp32", backend="torch")
    )
    expected = reference.predict([hippo]).labels
    with Predictor.from_folders(
        [folder], PredictOptions(device="cpu", threads=1, precision="fp32", backend=backend)
    ) as predictor:
        assert predictor.models[0].backend.name == backend
        labels = predictor.predict([hippo]).labels
    assert labels.same_grid(hippo)
    assert (labels.array == expected.array).mean() > 0.995


def test_model_folder_is_exported_once_into_the_cache(exported, hippo, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    model, _ = exported
    options = PredictOptions(device="cpu", threads=1, backend="onnxruntime", cache_dir=str(tmp_path / "cache"))
    with Predictor.from_folders([model], options) as predictor:
        assert predictor.predict([hippo]).labels.same_grid(hippo)
    (entry,) = (tmp_path / "cache").iterdir()
    assert (entry / "model.onnx").is_file() and (entry / "medseg_export.json").is_file()
    stamp = (entry / "model.onnx").stat().st_mtime_ns

    def no_network(*args, **kwargs):
        raise AssertionError("a cached export must load without building the torch network")

    monkeypatch.setattr("medseg.model.folder.build_inference_network", no_network)
    with Predictor.from_folders([model], options) as predictor:
        assert predictor.predict([hippo]).labels.same_grid(hippo)
    assert (entry / "model.onnx").stat().st_mtime_ns == stamp  # reused, not exported again


def test_unwritable_cache_falls_back_to_a_temporary_export(exported, tmp_path):
    pytest.importorskip("onnxruntime")
    model, _ = exported
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    options = PredictOptions(device="cpu", threads=1, backend="onnxruntime", cache_dir=str(blocked / "cache"))
    with Predictor.from_folders([model], options) as predictor:
        workdir = predictor._resources[0]._temporary.name
        assert Path(workdir).is_dir()
    assert not Path(workdir).exists()  # removed on close


def test_auto_backend_prefers_openvino_on_cpu_and_falls_back_to_torch(exported, tmp_path, monkeypatch):
    model, _ = exported
    options = PredictOptions(device="cpu", threads=1, cache_dir=str(tmp_path / "cache"))
    with Predictor.from_folders([model], options) as predictor:
        expected = "openvino" if importlib.util.find_spec("openvino") else "torch"
        assert predictor.models[0].backend.name == expected
    import medseg.inference.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(export, "export_onnx", broken)
    options = PredictOptions(device="cpu", threads=1, cache_dir=str(tmp_path / "other"))
    with Predictor.from_folders([model], options) as predictor:
        assert predictor.models[0].backend.name == "torch"
    if importlib.util.find_spec("onnxruntime"):
        with pytest.raises(RuntimeError, match="exploded"):
            Predictor.from_folders(
                [model], PredictOptions(device="cpu", backend="onnxruntime", cache_dir=str(tmp_path / "third"))
            )


def test_export_folder_needs_an_onnx_backend(exported):
    _, folder = exported
    with pytest.raises(ConfigError, match="is an ONNX export"):
        Predictor.from_folders([folder], PredictOptions(device="cpu", backend="torch"))


@pytest.mark.slow
def test_dynamic_spatial_export_runs_other_sizes(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    import torch

    from medseg.model.folder import load_model_folder

    model = save_random_model(tmp_path / "model", make_plan(patch=(16, 24, 16)))
    onnx_path = export_model_folder(model, tmp_path / "onnx", dynamic_spatial=True)
    spec = json.loads((tmp_path / "onnx" / "medseg_export.json").read_text())
    assert spec["input"]["shape"][2:] == ["dynamic"] * 3
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 1, 20, 28, 12)  # sizes must be multiples of the total stride (4)
    with torch.inference_mode():
        expected = load_model_folder(model).network(x).numpy()
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3
