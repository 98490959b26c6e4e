"""The medseg -> nnU-Net weight mapping used by the nnU-Net benchmark: reversed kernels make the
network compute the spatially transposed function, every PlainConvUNet key is present, and the
plans describe the same network on reversed axes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.benchmarks.nnunet_format import (
    _reverse,
    check_storage_order,
    nnunet_plans,
    nnunet_state_dict,
    write_nnunet_model,
)
from medseg.networks import build_model
from medseg.model.folder import ModelSpec, save_model_folder
from medseg.model.plan import NetworkConfig, Normalization, Plan

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
    plan = Plan(name="t", channels=("CT",), labels={0: "background", 1: "a", 2: "b"}, target_spacing=(0.5, 1.0, 2.0),
                normalization=(Normalization("ct", -100.0, 200.0, 40.0, 80.0),), config_3d=CONFIG,
                config_2d=NetworkConfig((8, 12), 2, (4, 8), ((3, 3),) * 2, ((1, 1), (2, 2))), slice_axis=2)
    plans = nnunet_plans(plan, CONFIG, 3)
    config = plans["configurations"]["3d_fullres"]
    assert config["patch_size"] == [16, 12, 8]
    assert config["spacing"] == [2.0, 1.0, 0.5]
    assert config["normalization_schemes"] == ["CTNormalization"]
    assert config["architecture"]["arch_kwargs"]["conv_bias"] is False
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert (props["percentile_00_5"], props["percentile_99_5"], props["mean"], props["std"]) == (-100, 200, 40, 80)


def test_write_model_folder(tmp_path) -> None:
    plan = Plan(name="t", channels=("MRI",), labels={0: "background", 1: "a", 2: "b"}, target_spacing=(1.0, 1.0, 1.0),
                normalization=(Normalization("zscore", None, None, None, None),), config_3d=CONFIG,
                config_2d=NetworkConfig((8, 12), 2, (4, 8), ((3, 3),) * 2, ((1, 1), (2, 2))), slice_axis=2)
    spec = ModelSpec(family="unet", spatial_dims=3, in_channels=1, out_channels=3, labels=dict(plan.labels),
                     network={"patch_size": [8, 12, 16], "batch_size": 2, "features": [4, 8, 16],
                              "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]})
    folder = save_model_folder(tmp_path / "m", _network(), spec, plan)
    out = write_nnunet_model(folder, tmp_path / "nn")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "a": 1, "b": 2}
    checkpoint = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"


def test_storage_order_with_flips_is_refused() -> None:
    check_storage_order(np.diag([1.0, 2.0, 3.0, 1.0]))
    with pytest.raises(ValueError, match="flips"):
        check_storage_order(np.diag([-1.0, 1.0, 1.0, 1.0]))


def test_speed_recipe_is_a_valid_two_epoch_copy(tmp_path) -> None:
    from pathlib import Path

    from medseg.benchmarks.nnunet import SPEED_TRAINER, short_recipe
    from medseg.training.recipe import load_recipe

    source = Path(__file__).resolve().parents[1] / "pipelines" / "hippocampus_full.toml"
    copy = tmp_path / "elsewhere" / "speed.toml"
    copy.parent.mkdir()
    copy.write_text(short_recipe(source, 7, "fp32"))
    recipe, full = load_recipe(copy), load_recipe(source)
    assert (recipe.budget.epochs, recipe.budget.iterations_per_epoch) == (2, 7)
    assert recipe.runtime.precision == "fp32" and recipe.validation.every == 1000
    assert recipe.dataset.path == full.dataset.path
    assert (recipe.model, recipe.plan, recipe.optimizer) == (full.model, full.plan, full.optimizer)
    compile(SPEED_TRAINER.format(iterations=7), "nnUNetTrainer_medsegSpeed.py", "exec")


def test_prepare_writes_a_v2_raw_dataset_with_medsegs_split(tmp_path) -> None:
    from pathlib import Path

    from medseg.benchmarks.nnunet import prepare_nnunet
    from medseg.training.recipe import load_recipe
    from medseg.training.splits import make_splits

    source = tmp_path / "msd"
    for sub in ("imagesTr", "labelsTr"):
        (source / sub).mkdir(parents=True)
    ids = [f"case_{i:03d}" for i in range(10)]
    for case in ids:
        for sub in ("imagesTr", "labelsTr"):
            (source / sub / f"{case}.nii.gz").write_bytes(b"")
    (source / "dataset.json").write_text(json.dumps(
        {"labels": {"0": "background", "1": "Anterior", "2": "Posterior"}, "modality": {"0": "MRI"},
         "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids]}))
    recipe = Path(__file__).resolve().parents[1] / "pipelines" / "hippocampus.toml"
    raw, splits = prepare_nnunet(tmp_path / "nnunet", recipe, source)
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert meta["channel_names"] == {"0": "MRI"} and meta["numTraining"] == 10
    assert (raw / "imagesTr" / "case_003_0000.nii.gz").resolve() == (source / "imagesTr" / "case_003.nii.gz").resolve()
    assert (raw / "labelsTr" / "case_003.nii.gz").is_symlink()
    split = load_recipe(recipe).dataset
    fold = make_splits(tuple(ids), split.split, split.folds, split.seed)[split.fold]
    assert json.loads(splits.read_text()) == [{"train": list(fold.train), "val": list(fold.val)}]
    prepare_nnunet(tmp_path / "nnunet", recipe, source)  # again: existing links are kept
