"""One registry of network families; every family is built in 2D or 3D from a NetworkConfig."""

from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

from medseg.errors import ConfigError
from medseg.models.deeplab import build_deeplabv3plus
from medseg.models.padding import PadToStride, total_stride
from medseg.models.segnet import build_segnet
from medseg.models.unet import build_resenc_unet, build_unet

Builder = Callable[..., nn.Module]

#: family name -> builder(spatial_dims, in_channels, out_channels, config, deep_supervision)
FAMILIES: dict[str, Builder] = {
    "unet": build_unet,
    "resenc_unet": build_resenc_unet,
    "deeplabv3plus": build_deeplabv3plus,
    "segnet": build_segnet,
}


def check_family(family: str) -> str:
    """Return ``family`` if registered, else raise ConfigError naming the closest valid one."""
    if family in FAMILIES:
        return family
    close = difflib.get_close_matches(str(family), FAMILIES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown model family {family!r}; {hint}choose one of {', '.join(FAMILIES)}")


def check_config(spatial_dims: int, config) -> None:
    """Raise ConfigError unless the config has one kernel and stride per stage of ``spatial_dims`` values."""
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    n = len(config.features)
    if len(config.kernel_sizes) != n or len(config.strides) != n:
        raise ConfigError(
            f"network config has {n} feature stages but {len(config.kernel_sizes)} kernel sizes and "
            f"{len(config.strides)} strides; give one of each per stage"
        )
    for name in ("kernel_sizes", "strides"):
        for stage in getattr(config, name):
            if len(stage) != spatial_dims:
                raise ConfigError(
                    f"network config {name} entry {tuple(stage)} has {len(stage)} values; a "
                    f"{spatial_dims}D model needs {spatial_dims} (use the plan's config_{spatial_dims}d)"
                )


def build_model(family: str, spatial_dims: int, in_channels: int, out_channels: int, config,
                deep_supervision: bool = False) -> nn.Module:
    """Build a network of ``family`` that accepts any input size.

    Needs a NetworkConfig-like ``config`` (``features``, ``kernel_sizes``, ``strides`` per stage,
    first stride all 1s, at least 3 stages). Promises: in eval mode ``forward`` returns logits
    ``(B, out_channels, *input_spatial)``; in train mode with ``deep_supervision`` a list of
    logits, full resolution first, then lower resolutions (covering the input extent).
    Inputs are zero-padded to a multiple of the total stride and outputs cropped back.
    """
    builder = FAMILIES[check_family(family)]
    check_config(spatial_dims, config)
    net = builder(spatial_dims, in_channels, out_channels, config, deep_supervision=deep_supervision)
    return PadToStride(net, total_stride(config.strides))
