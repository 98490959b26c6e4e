"""Tiny stand-ins for trained models, shared by the inference tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch

from medseg.model.folder import ModelSpec
from medseg.model.plan import NetworkConfig, Normalization, Plan

LABELS = {0: "background", 1: "Anterior", 2: "Posterior"}


class Threshold(torch.nn.Module):
    """Pointwise stub: class 1 where t1 < x <= t2, class 2 where x > t2 (first channel), else 0."""

    def __init__(self, t1: float = 0.0, t2: float = 1.0, dims: int = 3) -> None:
        super().__init__()
        self.t1, self.t2, self.dims = t1, t2, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.dims + 2:
            raise ValueError(f"expected a {self.dims}D batch, got {tuple(x.shape)}")
        v = x[:, :1]
        c1 = 10 * (v - self.t1)
        return torch.cat([torch.zeros_like(v), c1, c1 + 10 * (v - self.t2)], dim=1)


def expected_labels(x: np.ndarray, t1: float = 0.0, t2: float = 1.0) -> np.ndarray:
    """What :class:`Threshold` should produce on normalised intensities ``x``."""
    return np.where(x > t2, 2, np.where(x > t1, 1, 0)).astype(np.uint8)


def make_plan(
    spacing=(1.0, 1.0, 1.0),
    patch=(16, 16, 16),
    patch_2d=(16, 16),
    scheme: str = "zscore",
    slice_axis: int = 2,
    channels: int = 1,
) -> Plan:
    """A valid plan with a small three-stage network configuration."""
    config_3d = NetworkConfig(patch, 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2)))
    config_2d = NetworkConfig(patch_2d, 2, (4, 8, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2)))
    return Plan(
        name="stub",
        channels=("MRI",) * channels,
        labels=LABELS,
        target_spacing=spacing,
        normalization=(Normalization(scheme),) * channels,
        config_3d=config_3d,
        config_2d=config_2d,
        slice_axis=slice_axis,
    )


def stub_info(dims: int = 3, channels: int = 1, labels=None, postprocessing=None) -> ModelSpec:
    """The ModelSpec of a stub network (no registry family: used with Predictor.from_network)."""
    labels = labels or LABELS
    return ModelSpec(
        family="stub",
        spatial_dims=dims,
        in_channels=channels,
        out_channels=max(labels) + 1,
        labels=labels,
        network={},
        postprocessing=postprocessing or {},
    )


def save_random_model(folder, plan: Plan, labels=None, seed: int = 0, postprocessing=None):
    """A model folder (through the trainer's save_model_folder) holding a randomly initialised
    nnU-Net-style U-Net for ``plan``'s 3D configuration."""
    from dataclasses import asdict

    from medseg.model.folder import ModelSpec, save_model_folder
    from medseg.networks import build_model

    labels = labels or LABELS
    torch.manual_seed(seed)
    network = build_model("unet", 3, len(plan.channels), max(labels) + 1, plan.config_3d)
    spec = ModelSpec(
        family="unet",
        spatial_dims=3,
        in_channels=len(plan.channels),
        out_channels=max(labels) + 1,
        labels=dict(labels),
        network=asdict(plan.config_3d),
        postprocessing=postprocessing or {},
    )
    return save_model_folder(folder, network, spec, plan)
