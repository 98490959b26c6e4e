"""U-Net as nnU-Net configures it, and the residual-encoder U-Net, both on MONAI's ``DynUNet``.

nnU-Net's U-Net: per stage two 3x3(x3) convolutions with InstanceNorm + LeakyReLU, the first
strided (strided-conv downsampling), transposed-convolution upsampling, skip concatenation, and
deep supervision heads on the decoder stages. With deep supervision the training-mode output is
a list of logits at their native resolutions, full resolution first (MONAI's own ``DynUNet``
upsamples them instead; labels are downsampled by the loss here, as in nnU-Net).

The residual-encoder U-Net (nnU-Net ResEnc "M" layout) replaces every encoder stage by a stack
of residual blocks (1, 3, 4, 6, 6, ... per stage) and keeps the plain decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from monai.networks.blocks.dynunet_block import UnetResBlock
from monai.networks.nets import DynUNet
from torch import nn

from medseg.networks.layers import ACT, NORM, stage_count_check

#: residual blocks per encoder stage of nnU-Net's ResEnc U-Net (M/L presets)
RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6)


class UNet(DynUNet):
    """``DynUNet`` whose deep-supervision output is a native-resolution list (full resolution first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.output_block(self.skip_layers(x))
        if self.training and self.deep_supervision:
            return [out, *self.heads]
        return out


class ResEncUNet(UNet):
    """U-Net with ``blocks_per_stage[i]`` residual blocks in encoder stage ``i`` (first one strided)."""

    def __init__(self, *args, blocks_per_stage: Sequence[int], **kwargs) -> None:
        object.__setattr__(self, "_blocks_per_stage", tuple(int(b) for b in blocks_per_stage))
        super().__init__(*args, res_block=True, **kwargs)  # type: ignore[misc]

    @property
    def _blocks(self) -> tuple[int, ...]:
        return cast(tuple[int, ...], self.__dict__["_blocks_per_stage"])

    @property
    def _stage_filters(self) -> list[int]:
        return cast(list[int], self.filters)

    @property
    def _stage_kernels(self) -> list[Any]:
        return cast(list[Any], self.kernel_size)

    def _stack(self, first: nn.Module, channels: int, kernel, n_blocks: int) -> nn.Module:
        if n_blocks <= 1:
            return first
        extra = [
            UnetResBlock(
                self.spatial_dims, channels, channels, kernel, 1, self.norm_name, self.act_name, dropout=self.dropout
            )
            for _ in range(n_blocks - 1)
        ]
        return nn.Sequential(first, *extra)

    def get_input_block(self) -> nn.Module:
        blocks = self._blocks
        return self._stack(super().get_input_block(), self._stage_filters[0], self._stage_kernels[0], blocks[0])

    def get_downsamples(self) -> nn.ModuleList:
        plain = super().get_downsamples()
        blocks = self._blocks[1:-1]
        return nn.ModuleList(
            self._stack(layer, f, k, n)
            for layer, f, k, n in zip(plain, self._stage_filters[1:-1], self._stage_kernels[1:-1], blocks)
        )

    def get_bottleneck(self) -> nn.Module:
        n = self._blocks[len(self._stage_kernels) - 1]
        return self._stack(super().get_bottleneck(), self._stage_filters[-1], self._stage_kernels[-1], n)


def _dynunet_args(config, deep_supervision: bool) -> dict:
    strides = [tuple(s) for s in config.strides]
    stage_count_check(strides)
    return dict(
        kernel_size=[tuple(k) for k in config.kernel_sizes],
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(config.features),
        norm_name=NORM,
        act_name=ACT,
        deep_supervision=deep_supervision,
        deep_supr_num=max(1, len(strides) - 2),
    )


def build_unet(
    spatial_dims: int, in_channels: int, out_channels: int, config, deep_supervision: bool = False
) -> nn.Module:
    """nnU-Net's plain U-Net for a NetworkConfig (features/kernel_sizes/strides per stage)."""
    return UNet(spatial_dims, in_channels, out_channels, **_dynunet_args(config, deep_supervision))


def build_resenc_unet(
    spatial_dims: int, in_channels: int, out_channels: int, config, deep_supervision: bool = False
) -> nn.Module:
    """nnU-Net's residual-encoder U-Net for a NetworkConfig."""
    n = len(config.strides)
    blocks = tuple(RESENC_BLOCKS[min(i, len(RESENC_BLOCKS) - 1)] for i in range(n))
    return ResEncUNet(
        spatial_dims, in_channels, out_channels, blocks_per_stage=blocks, **_dynunet_args(config, deep_supervision)
    )
