"""One registry of network families; every family is built in 2D or 3D from a NetworkConfig."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medseg.errors import ConfigError, check_choice
from medseg.networks.config import NetworkConfig
from medseg.networks.deeplab import build_deeplabv3plus
from medseg.networks.padding import PadToStride, total_stride
from medseg.networks.segnet import build_segnet
from medseg.networks.unet import build_resenc_unet, build_unet

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
    return check_choice("model family", str(family), tuple(FAMILIES))


def build_model(
    family: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    config: NetworkConfig,
    deep_supervision: bool = False,
) -> nn.Module:
    """Build a network of ``family`` that accepts any input size.

    Needs a :class:`NetworkConfig` of ``spatial_dims`` dimensions (validated when it was made:
    one kernel and stride per stage, first stride all 1s). Promises: in eval mode ``forward`` returns logits
    ``(B, out_channels, *input_spatial)``; in train mode with ``deep_supervision`` a list of
    logits, full resolution first, then lower resolutions (covering the input extent).
    Inputs are zero-padded to a multiple of the total stride and outputs cropped back.
    """
    builder = FAMILIES[check_family(family)]
    if config.spatial_dims != spatial_dims:
        raise ConfigError(
            f"a {spatial_dims}D model needs a {spatial_dims}D network config, got a {config.spatial_dims}D one "
            f"(use the plan's config_{spatial_dims}d)"
        )
    net = builder(spatial_dims, in_channels, out_channels, config, deep_supervision=deep_supervision)
    return PadToStride(net, total_stride(config.strides))
