"""Planning: nnU-Net's rules on synthetic fingerprints, the real hippocampus plan, plan JSON, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.errors import ConfigError
from medseg.model.plan import NetworkConfig, Plan
from medseg.training.fingerprint import ChannelStats, Fingerprint
from medseg.training.planner import (
    apply_overrides,
    estimate_memory,
    plan_dataset,
    plan_from_fingerprint,
    plan_network,
    plan_spacing,
    topology,
)
from medseg.training.recipe import PlanOverrides

LABELS = {0: "background", 1: "organ"}
STATS = ChannelStats(p00_5=-100.0, median=40.0, p99_5=300.0, mean=50.0, std=80.0, min=-1000.0, max=2000.0)


def fingerprint(spacings, shapes, channels=("MRI",)) -> Fingerprint:
    return Fingerprint(
        n_cases=len(spacings),
        spacings=np.asarray(spacings, float),
        shapes=np.asarray(shapes),
        channels=channels,
        intensities=(STATS,) * len(channels),
        class_voxels={0: 900, 1: 100},
    )


@pytest.fixture(scope="module")
def hippocampus_plan(request) -> Plan:
    data = request.getfixturevalue("shared_data")
    from medseg.training.dataset import load_dataset

    return plan_dataset(load_dataset(data / "msd_hippocampus"))


def test_real_hippocampus_plan_matches_nnunet(hippocampus_plan: Plan) -> None:
    """nnU-Net plans 1 mm, patch 40x56x40, 4 stages 32-256 for MSD hippocampus (median 36x50x35)."""
    plan = hippocampus_plan
    assert plan.fingerprint["n_cases"] == 173 and plan.fingerprint["n_cases_sampled"] == 173
    assert plan.target_spacing == pytest.approx((1.0, 1.0, 1.0))
    c3 = plan.config_3d
    assert all(abs(p - q) <= 8 for p, q in zip(sorted(c3.patch_size), sorted((40, 56, 40))))
    assert c3.features == (32, 64, 128, 256)
    assert all(k == (3, 3, 3) for k in c3.kernel_sizes) and c3.strides[1:] == ((2, 2, 2),) * 3
    # 5% of ~10.8 M dataset voxels / 89,600 patch voxels -> 6 (nnU-Net gets 9 from 260 cases)
    assert 2 <= c3.batch_size <= 9
    assert sorted(plan.config_2d.patch_size) == [40, 56] and plan.config_2d.features == (32, 64, 128, 256)
    assert [n.scheme for n in plan.normalization] == ["zscore"]
    assert plan.fingerprint["shape"]["median"] == [35, 50, 36]
    assert plan.fingerprint["class_frequency"]["1"] == pytest.approx(0.027, abs=0.005)
    # the label volumes added to the shipped model's plan are this fingerprint's (its training data)
    shipped = Plan.load(Path(__file__).resolve().parents[1] / "medseg" / "pretrained" / "hippocampus" / "plan.json")
    assert plan.fingerprint["label_volume_ml"] == shipped.fingerprint["label_volume_ml"]
    assert plan.fingerprint["intensity"] == shipped.fingerprint["intensity"]


def test_plan_json_round_trip_and_edits(hippocampus_plan: Plan, tmp_path: Path) -> None:
    path = hippocampus_plan.save(tmp_path / "plan.json")
    again = Plan.load(path)
    assert again.to_dict() == hippocampus_plan.to_dict() and again.config_3d == hippocampus_plan.config_3d
    data = json.loads(path.read_text())
    data["config_3d"]["patch_size"] = [40, 56, 44]  # not divisible by the total stride 8
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"patch_size \[40, 56, 44\] is not divisible .* e.g. \[40, 56, 48\]"):
        Plan.load(path)
    data["config_3d"]["patch_size"] = [48, 56, 48]  # a valid hand edit is accepted
    data["normalization"][0]["scheme"] = "ct"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="'ct' normalization needs finite clip_low"):
        Plan.load(path)
    data["normalization"][0]["scheme"] = "zscore"
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="plan version 99 is not supported"):
        Plan.load(path)


def test_target_spacing_uses_10th_percentile_on_anisotropic_axis() -> None:
    spacings = [(0.7, 0.7, s) for s in (3.0, 4.0, 5.0, 5.0, 5.0, 6.0, 6.0)]
    shapes = [(512, 512, 40)] * 7
    target = plan_spacing(np.array(spacings), np.array(shapes))
    assert target[:2] == (0.7, 0.7)
    assert target[2] == pytest.approx(np.percentile([3, 4, 5, 5, 5, 6, 6], 10))
    # not anisotropic enough in voxels (few voxels along the axis missing): the median stays
    iso = plan_spacing(np.array([(1.0, 1.0, 2.0)] * 3), np.array([(100, 100, 100)] * 3))
    assert iso == (1.0, 1.0, 2.0)


def test_topology_follows_nnunet_rules() -> None:
    hippo = topology((1.0, 1.0, 1.0), (35, 50, 36))
    assert hippo.patch_size == (40, 56, 40) and len(hippo.strides) == 4
    aniso = topology((0.7, 0.7, 5.0), (192, 224, 32))
    # the coarse axis is pooled only once in-plane pooling has caught up (spacing within 2x)
    assert [s[2] for s in aniso.strides][:3] == [1, 1, 1]
    assert aniso.kernel_sizes[0] == (3, 3, 1) and aniso.kernel_sizes[-1] == (3, 3, 3)
    assert all(
        p % d == 0
        for p, d in zip(
            aniso.patch_size,
            NetworkConfig(aniso.patch_size, 2, (1,) * len(aniso.strides), aniso.kernel_sizes, aniso.strides).divisor,
        )
    )


def test_memory_budget_shrinks_patch_and_batch_respects_limits() -> None:
    large = plan_network((1.0, 1.0, 1.0), (300.0, 300.0, 300.0), 1, 8 * 1024**3, 1e10)
    assert large.patch_size == (128, 128, 128) and large.batch_size == 2 and large.features[-1] == 320
    small = plan_network((1.0, 1.0, 1.0), (300.0, 300.0, 300.0), 1, 2 * 1024**3, 1e10)
    assert np.prod(small.patch_size) < np.prod(large.patch_size)
    topo = topology((1.0, 1.0, 1.0), small.patch_size)
    assert estimate_memory(topo, 1, 2) <= 2 * 1024**3
    # tiny dataset: the 5% cap would give < 2, the batch stays 2
    assert plan_network((1.0, 1.0, 1.0), (20.0, 20.0, 20.0), 1, 8 * 1024**3, 1000.0).batch_size == 2


def test_ct_channels_get_clipping_normalisation() -> None:
    fp = fingerprint([(1.0, 1.0, 1.0)] * 3, [(60, 60, 60)] * 3, channels=("CT", "MRI"))
    plan = plan_from_fingerprint(fp, "toy", LABELS)
    ct, mr = plan.normalization
    assert (ct.scheme, ct.clip_low, ct.clip_high, ct.mean, ct.std) == ("ct", -100.0, 300.0, 50.0, 80.0)
    assert mr.scheme == "zscore"


def test_slice_axis_is_the_coarsest() -> None:
    plan = plan_from_fingerprint(fingerprint([(0.8, 4.0, 0.8)] * 3, [(200, 30, 200)] * 3), "toy", LABELS)
    assert plan.slice_axis == 1 and plan.in_plane_axes == (0, 2)
    assert len(plan.config_2d.patch_size) == 2


def test_recipe_overrides() -> None:
    plan = plan_from_fingerprint(fingerprint([(1.0, 1.0, 1.0)] * 4, [(60, 70, 50)] * 4), "toy", LABELS)
    changed = apply_overrides(plan, PlanOverrides(patch_size=(32, 32, 32), batch_size=3), 3)
    assert changed.config_3d.patch_size == (32, 32, 32) and changed.config_3d.batch_size == 3
    assert changed.config_3d.strides[-1] == (2, 2, 2) and changed.config_2d == plan.config_2d
    with pytest.raises(ConfigError, match="needs 2 values for a 2D model"):
        apply_overrides(plan, PlanOverrides(patch_size=(32, 32, 32)), 2)
    spacing = apply_overrides(plan, PlanOverrides(target_spacing=(1.5, 1.5, 1.5)), 3)
    assert spacing.target_spacing == (1.5, 1.5, 1.5)
    assert replace(spacing, target_spacing=plan.target_spacing).to_dict() == plan.to_dict()


def test_cli_plan(shared_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "p" / "plan.json"
    assert main(["plan", str(shared_data / "msd_hippocampus"), "-o", str(out), "--max-cases", "12"]) == 0
    plan = Plan.load(out)
    assert plan.fingerprint["n_cases_sampled"] == 12 and plan.target_spacing == (1.0, 1.0, 1.0)
    assert "3D: patch" in capsys.readouterr().out
    assert main(["plan", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
