"""Shared layer settings and helpers for every network family (nnU-Net's choices).

All families use instance normalisation with affine parameters and LeakyReLU(0.01), the
settings nnU-Net uses for every configuration, and He (Kaiming) initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: MONAI norm/act specs shared by all families
NORM: tuple = ("INSTANCE", {"affine": True})
ACT: tuple = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


def conv_norm_act(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int] | int = 3,
    strides: Sequence[int] | int = 1,
    dilation: Sequence[int] | int = 1,
) -> nn.Module:
    """One MONAI ``Convolution`` (conv -> InstanceNorm -> LeakyReLU), 'same' padding."""
    from monai.networks.blocks import Convolution

    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        strides=strides,
        kernel_size=kernel_size,
        act=ACT,
        norm=NORM,
        dilation=dilation,
        bias=True,
    )


def head(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """A 1x1(x1) convolution to logits, no norm, no activation."""
    from monai.networks.blocks import Convolution

    return Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, conv_only=True, bias=True)


def he_init(module: nn.Module) -> None:
    """Kaiming-normal init (negative slope 0.01) of conv weights, zero biases (nnU-Net's InitWeights_He)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def stage_count_check(strides: Sequence[Sequence[int]], minimum: int = 3) -> None:
    """Raise ConfigError when a network config has fewer stages than the families need."""
    from medseg.errors import ConfigError

    if len(strides) < minimum:
        raise ConfigError(
            f"the network config has {len(strides)} stage(s); at least {minimum} are needed "
            "(edit features/kernel_sizes/strides in plan.json)"
        )


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linear (bi/trilinear) resize of feature maps or logits to ``size``."""
    mode = "trilinear" if x.ndim == 5 else "bilinear"
    return nn.functional.interpolate(x, size=tuple(size), mode=mode, align_corners=False)
