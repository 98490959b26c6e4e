"""Model folders: a round trip gives the same predictions, deep-supervision heads are dropped,
loading reads JSON + safetensors only (no unpickling), and broken folders fail clearly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from medseg.errors import ConfigError, InputError
from medseg.model.folder import ModelSpec, load_model_folder, save_model_folder
from medseg.model.plan import NetworkConfig, Normalization, Plan
from medseg.model.runtime import package_versions
from medseg.networks import FAMILIES, build_model

LABELS = {0: "background", 1: "Anterior", 2: "Posterior"}
CONFIG_3D = NetworkConfig((16, 16, 16), 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2)))
CONFIG_2D = NetworkConfig((16, 16), 2, (4, 8, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2)))
PLAN = Plan("t", ("MRI",), LABELS, (1.0, 1.0, 1.0), (Normalization("zscore"),), CONFIG_3D, CONFIG_2D, slice_axis=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def network_dict(config: NetworkConfig) -> dict:
    return {
        "patch_size": list(config.patch_size),
        "batch_size": config.batch_size,
        "features": list(config.features),
        "kernel_sizes": [list(k) for k in config.kernel_sizes],
        "strides": [list(s) for s in config.strides],
    }


def make_spec(family: str, dims: int) -> ModelSpec:
    config = CONFIG_3D if dims == 3 else CONFIG_2D
    return ModelSpec(
        family,
        dims,
        1,
        3,
        LABELS,
        network_dict(config),
        {"keep_largest_component": [1]},
        {"name": "t"},
        package_versions(),
        {"mean_dice": 0.5},
    )


def trained_network(family: str, dims: int) -> torch.nn.Module:
    """A deep-supervised network after one SGD step (so its weights differ from any fresh init)."""
    torch.manual_seed(0)
    config = CONFIG_3D if dims == 3 else CONFIG_2D
    net = build_model(family, dims, 1, 3, config, deep_supervision=True).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    outputs = net(torch.randn(2, 1, *config.patch_size))
    sum(o.square().mean() for o in outputs).backward()
    opt.step()
    return net


@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_predicts_the_same(family: str, tmp_path: Path) -> None:
    dims = 2 if family in ("deeplabv3plus", "segnet") else 3
    net = trained_network(family, dims).eval()
    folder = save_model_folder(tmp_path / "model", net, make_spec(family, dims), PLAN)
    loaded = load_model_folder(folder)
    assert not loaded.network.training
    assert loaded.spec == make_spec(family, dims) and loaded.plan == PLAN
    x = torch.randn(1, 1, *((19, 23, 17) if dims == 3 else (37, 29)))
    with torch.no_grad():
        assert torch.equal(loaded.network(x), net(x))


def test_saved_weights_have_no_deep_supervision_heads(tmp_path: Path) -> None:
    from safetensors import safe_open

    folder = save_model_folder(tmp_path / "m", trained_network("unet", 3), make_spec("unet", 3), PLAN)
    with safe_open(str(folder / "weights.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and not [k for k in keys if "deep_supervision" in k or "super_head" in k]


def test_every_file_follows_the_umask(tmp_path: Path) -> None:
    import os

    previous = os.umask(0o022)
    try:
        folder = save_model_folder(tmp_path / "m", trained_network("unet", 3), make_spec("unet", 3), PLAN)
    finally:
        os.umask(previous)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    assert modes and set(modes.values()) == {"0o644"}, modes  # safetensors alone would leave 0o600


def test_loading_never_unpickles(tmp_path: Path, monkeypatch) -> None:
    folder = save_model_folder(tmp_path / "m", trained_network("segnet", 2), make_spec("segnet", 2), PLAN)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert load_model_folder(folder).spec.family == "segnet"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "plan.json", "weights.safetensors"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "m", trained_network("unet", 2), make_spec("unet", 2), PLAN)
    (folder / "plan.json").unlink()
    with pytest.raises(InputError, match="plan.json is missing"):
        load_model_folder(folder)


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "m", trained_network("unet", 2), make_spec("unet", 2), PLAN)
    data = json.loads((folder / "model.json").read_text())
    data["format_version"] = 99
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="format version 99"):
        load_model_folder(folder)


def test_weights_that_do_not_fit_the_spec_are_refused(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "m", trained_network("unet", 2), make_spec("unet", 2), PLAN)
    data = json.loads((folder / "model.json").read_text())
    data["network"]["features"] = [8, 16, 32]
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="does not match model.json"):
        load_model_folder(folder)
