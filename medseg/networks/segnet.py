"""SegNet in 2D and 3D: an encoder-decoder that upsamples with the encoder's max-pooling indices.

Encoder stage ``i``: max-pooling by ``strides[i]`` (``return_indices=True``; none for stage 0),
then two conv-InstanceNorm-LeakyReLU layers to ``features[i]``. Decoder step ``i`` (deepest
first): a convolution back to ``features[i-1]`` channels, ``MaxUnpool`` with stage ``i``'s
indices, and a convolution; a 1x1 head gives the logits. Deep supervision heads sit on the
decoder outputs at the stage resolutions 1 .. n-2, giving ``[full, 1/2, 1/4, ...]`` in training.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.networks.layers import conv_norm_act, he_init, head, stage_count_check


class SegNet(nn.Module):
    """SegNet for ``spatial_dims`` 2 or 3; ``features``/``kernel_sizes``/``strides`` per stage."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features,
        kernel_sizes,
        strides,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        stage_count_check(strides)
        n, d = len(features), spatial_dims
        pool = nn.MaxPool3d if d == 3 else nn.MaxPool2d
        unpool = nn.MaxUnpool3d if d == 3 else nn.MaxUnpool2d
        self.deep_supervision = deep_supervision
        self.pools = nn.ModuleList(pool(tuple(s), tuple(s), return_indices=True) for s in strides[1:])
        self.unpools = nn.ModuleList(unpool(tuple(s), tuple(s)) for s in strides[1:])
        self.encoder = nn.ModuleList(
            nn.Sequential(
                conv_norm_act(d, in_channels if i == 0 else features[i - 1], features[i], kernel_sizes[i]),
                conv_norm_act(d, features[i], features[i], kernel_sizes[i]),
            )
            for i in range(n)
        )
        self.reduce = nn.ModuleList(
            conv_norm_act(d, features[i], features[i - 1], kernel_sizes[i]) for i in range(1, n)
        )
        self.refine = nn.ModuleList(
            conv_norm_act(d, features[i - 1], features[i - 1], kernel_sizes[i - 1]) for i in range(1, n)
        )
        self.head = head(d, features[0], out_channels)
        self.ds_heads = (
            nn.ModuleList(head(d, features[i], out_channels) for i in range(1, n - 1)) if deep_supervision else None
        )
        self.apply(he_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.encoder[0](x)
        skips: list[tuple[torch.Size, torch.Tensor]] = []
        for pool, stage in zip(self.pools, self.encoder[1:]):
            pooled, indices = pool(x)
            skips.append((x.shape, indices))
            x = stage(pooled)
        lower: list[torch.Tensor] = []
        for i in range(len(self.unpools), 0, -1):  # decoder step i ends at stage i-1's resolution
            shape, indices = skips[i - 1]
            x = self.unpools[i - 1](self.reduce[i - 1](x), indices, output_size=shape[2:])
            x = self.refine[i - 1](x)
            if self.ds_heads is not None and self.training and i >= 2:
                lower.insert(0, self.ds_heads[i - 2](x))
        out = self.head(x)
        if self.ds_heads is not None and self.training:
            return [out, *lower]
        return out


def build_segnet(
    spatial_dims: int, in_channels: int, out_channels: int, config, deep_supervision: bool = False
) -> nn.Module:
    """SegNet sized by a NetworkConfig."""
    return SegNet(
        spatial_dims,
        in_channels,
        out_channels,
        tuple(config.features),
        [tuple(k) for k in config.kernel_sizes],
        [tuple(s) for s in config.strides],
        deep_supervision,
    )
