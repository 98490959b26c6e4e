"""ONNX export and the ONNX Runtime / OpenVINO backends (skipped when the packages are absent)."""

from __future__ import annotations

import json

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
    model, folder = exported
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
    reference = Predictor.from_folders([model], PredictOptions(device="cpu", threads=1, precision="fp32"))
    expected = reference.predict([hippo]).labels
    with Predictor.from_folders([folder], PredictOptions(device="cpu", threads=1, precision="fp32",
                                                         backend=backend)) as predictor:
        labels = predictor.predict([hippo]).labels
    assert labels.same_grid(hippo)
    assert (labels.array == expected.array).mean() > 0.995


def test_model_folder_is_exported_on_the_fly_for_onnxruntime(exported, hippo):
    pytest.importorskip("onnxruntime")
    model, _ = exported
    with Predictor.from_folders([model], PredictOptions(device="cpu", threads=1, backend="onnxruntime")) as predictor:
        workdir = predictor._resources[0].name
        assert predictor.predict([hippo]).labels.same_grid(hippo)
    import os
    assert not os.path.exists(workdir)  # the temporary export is removed on close


def test_export_folder_needs_an_onnx_backend(exported):
    _, folder = exported
    with pytest.raises(ConfigError, match="is an ONNX export"):
        Predictor.from_folders([folder], PredictOptions(device="cpu"))


@pytest.mark.slow
def test_dynamic_spatial_export_runs_other_sizes(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    import torch

    from medseg.training.model_folder import load_model_folder

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
