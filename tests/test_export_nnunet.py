"""``medseg export --format nnunet`` (medseg.inference.export_nnunet): reversed kernels make the
network compute the spatially transposed function, every PlainConvUNet key is present, the plans
describe the same network on reversed axes, and the CLI writes nnU-Net's model-folder layout or
refuses bad options with one line and exit code 2."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.errors import GeometryError
from medseg.inference.export_nnunet import (
    _reverse,
    check_storage_order,
    nnunet_plans,
    nnunet_state_dict,
    write_nnunet_model,
)
from medseg.model.folder import ModelSpec, load_model_folder, save_model_folder
from medseg.model.plan import NetworkConfig, Normalization, Plan
from medseg.networks import build_model
from tests.inference_stubs import make_plan, save_random_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = NetworkConfig((8, 12, 16), 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2)))


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", 3, 1, 3, CONFIG).eval()


def test_reversed_kernels_compute_the_transposed_function() -> None:
    network = _network()
    transposed = _network()
    state = {k: _reverse(v) if v.ndim == 5 else v for k, v in network.state_dict().items()}
    transposed.load_state_dict(state)
    x = torch.randn(1, 1, 8, 12, 16)
    with torch.inference_mode():
        expected = network(x).permute(0, 1, 4, 3, 2)
        got = transposed(x.permute(0, 1, 4, 3, 2))
    assert torch.allclose(got, expected, atol=1e-4)


def test_state_dict_has_every_plain_conv_unet_key() -> None:
    state = nnunet_state_dict(_network())
    for s, width in enumerate(CONFIG.features):
        for j in (0, 1):
            for prefix in ("encoder", "decoder.encoder"):
                key = f"{prefix}.stages.{s}.0.convs.{j}"
                assert state[f"{key}.conv.weight"].shape[0] == width
                assert torch.equal(state[f"{key}.conv.weight"], state[f"{key}.all_modules.0.weight"])
                assert torch.equal(state[f"{key}.norm.bias"], state[f"{key}.all_modules.1.bias"])
    assert state["decoder.transpconvs.0.weight"].shape == (16, 8, 2, 2, 2)
    assert state["decoder.seg_layers.1.weight"].shape == (3, 4, 1, 1, 1)
    assert not state["decoder.seg_layers.0.weight"].any()  # deep-supervision head, unused at inference
    assert not any(k.endswith("conv.bias") for k in state)  # conv_bias False in the plans


def test_plans_reverse_the_axes_and_keep_normalisation() -> None:
    plan = Plan(
        name="t",
        channels=("CT",),
        labels={0: "background", 1: "a", 2: "b"},
        target_spacing=(0.5, 1.0, 2.0),
        normalization=(Normalization("ct", -100.0, 200.0, 40.0, 80.0),),
        config_3d=CONFIG,
        config_2d=NetworkConfig((8, 12), 2, (4, 8), ((3, 3),) * 2, ((1, 1), (2, 2))),
        slice_axis=2,
    )
    plans = nnunet_plans(plan, CONFIG)
    config = plans["configurations"]["3d_fullres"]
    assert config["patch_size"] == [16, 12, 8]
    assert config["spacing"] == [2.0, 1.0, 0.5]
    assert config["normalization_schemes"] == ["CTNormalization"]
    assert config["architecture"]["arch_kwargs"]["conv_bias"] is False
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert (props["percentile_00_5"], props["percentile_99_5"], props["mean"], props["std"]) == (-100, 200, 40, 80)


def test_write_model_folder(tmp_path) -> None:
    plan = Plan(
        name="t",
        channels=("MRI",),
        labels={0: "background", 1: "a", 2: "b"},
        target_spacing=(1.0, 1.0, 1.0),
        normalization=(Normalization("zscore", None, None, None, None),),
        config_3d=CONFIG,
        config_2d=NetworkConfig((8, 12), 2, (4, 8), ((3, 3),) * 2, ((1, 1), (2, 2))),
        slice_axis=2,
    )
    spec = ModelSpec(
        family="unet",
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        labels=dict(plan.labels),
        network={
            "patch_size": [8, 12, 16],
            "batch_size": 2,
            "features": [4, 8, 16],
            "kernel_sizes": [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        },
    )
    folder = save_model_folder(tmp_path / "m", _network(), spec, plan)
    out = write_nnunet_model(folder, tmp_path / "nn")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "a": 1, "b": 2}
    checkpoint = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"
    assert checkpoint["init_args"]["plans"] == json.loads((out / "plans.json").read_text())
    assert checkpoint["init_args"]["plans"]["configurations"]["3d_fullres"]["normalization_schemes"] == [
        "ZScoreNormalization"
    ]
    expected = nnunet_state_dict(load_model_folder(folder).network)
    assert checkpoint["network_weights"].keys() == expected.keys()
    assert all(torch.equal(checkpoint["network_weights"][k], v) for k, v in expected.items())


def test_storage_order_with_flips_is_refused() -> None:
    check_storage_order(np.diag([1.0, 2.0, 3.0, 1.0]))
    with pytest.raises(GeometryError, match="flips"):
        check_storage_order(np.diag([-1.0, 1.0, 1.0, 1.0]))


# ----------------------------------------------------------------------------- medseg export --format nnunet
@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("models") / "unet", make_plan(patch=(16, 24, 16)))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_cli_writes_nnunet_model_folder_layout(unet_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "nnunet"
    assert main(["-q", "export", "--format", "nnunet", "-m", str(unet_folder), "-o", str(out), "--fold", "2"]) == 0
    assert _files(out) == ["dataset.json", "fold_2/checkpoint_final.pth", "plans.json"]
    checkpoint = torch.load(out / "fold_2" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["init_args"]["fold"] == 2
    assert checkpoint["init_args"]["dataset_json"] == json.loads((out / "dataset.json").read_text())
    plans = json.loads((out / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert plans["patch_size"] == [16, 24, 16][::-1] and plans["architecture"]["arch_kwargs"]["n_stages"] == 3


def _model_2d(root: Path) -> Path:
    plan = make_plan()
    network = build_model("unet", 2, 1, 3, plan.config_2d)
    spec = ModelSpec(
        family="unet",
        spatial_dims=2,
        in_channels=1,
        out_channels=3,
        labels=dict(plan.labels),
        network=asdict(plan.config_2d),
    )
    return save_model_folder(root / "unet2d", network, spec, plan)


def _gapped_labels(root: Path) -> Path:
    return save_random_model(root / "gapped", make_plan(), labels={0: "background", 1: "a", 3: "b"})


# (case, extra options, model builder or None for the 3D U-Net, words the one-line message must contain)
BAD = [
    ("unknown format", ["--format", "nnUnet"], None, ["unknown export format 'nnUnet'", "did you mean 'nnunet'"]),
    (
        "dynamic spatial for nnunet",
        ["--format", "nnunet", "--dynamic-spatial"],
        None,
        ["--dynamic-spatial applies to --format onnx only"],
    ),
    ("fold for onnx", ["--fold", "1"], None, ["--fold applies to --format nnunet only"]),
    ("negative fold", ["--format", "nnunet", "--fold", "-1"], None, ["--fold must be 0 or more"]),
    ("2D model", ["--format", "nnunet"], _model_2d, ["3D 'unet'", "2D 'unet'", "--format onnx"]),
    ("labels with a gap", ["--format", "nnunet"], _gapped_labels, ["labels 0..3", "[0, 1, 3]"]),
]


@pytest.mark.parametrize("name, options, build, words", BAD, ids=[c[0] for c in BAD])
def test_cli_bad_option_exits_2_with_one_line(
    name, options, build, words, unet_folder: Path, tmp_path: Path, capsys
) -> None:
    model = build(tmp_path) if build else unet_folder
    out = tmp_path / "out"
    code = main(["-q", "export", "-m", str(model), "-o", str(out), *options])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("medseg: error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()  # nothing written
