"""DeepLabV3+ in 2D and 3D from MONAI blocks.

Encoder: one MONAI ``ResidualUnit`` per stage of the NetworkConfig (features, kernels, strides);
the last stage is atrous (dilation 2, no stride), so the encoder's output stride is the product
of all but the last stage's strides. ``SimpleASPP`` (dilations 1, 2, 4, 6) on the encoder output,
projected by a 1x1 convolution. Decoder: the ASPP features are upsampled (bi/trilinear) to the
low-level skip (the first downsampled stage), concatenated with its 1x1 projection, refined by
two 3x3 convolutions, classified, and upsampled to the input size.

Deep supervision (training mode only) returns ``[full, logits at the skip resolution,
logits from the ASPP features]``, full resolution first, like the U-Nets.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ResidualUnit, SimpleASPP
from torch import nn

from medseg.networks.layers import ACT, NORM, conv_norm_act, he_init, head, stage_count_check, upsample_to


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ for ``spatial_dims`` 2 or 3; ``features``/``kernel_sizes``/``strides`` per stage."""

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
        n = len(features)
        self.deep_supervision = deep_supervision
        self.skip_index = next(i for i, s in enumerate(strides) if any(v > 1 for v in s))
        stages, prev = [], in_channels
        for i in range(n):
            last = i == n - 1
            stages.append(
                ResidualUnit(
                    spatial_dims,
                    prev,
                    features[i],
                    strides=1 if last else tuple(strides[i]),
                    kernel_size=tuple(kernel_sizes[i]),
                    subunits=2,
                    act=ACT,
                    norm=NORM,
                    dilation=2 if last else 1,
                )
            )
            prev = features[i]
        self.encoder = nn.ModuleList(stages)
        branch = max(features[-1] // 4, 2)
        decoder_ch = features[min(self.skip_index + 1, n - 1)]
        skip_ch = max(features[0] // 2, 2)
        self.aspp = SimpleASPP(spatial_dims, features[-1], branch, norm_type=NORM, acti_type=ACT)
        self.aspp_project = conv_norm_act(spatial_dims, 4 * branch, decoder_ch, kernel_size=1)
        self.skip_project = conv_norm_act(spatial_dims, features[self.skip_index], skip_ch, kernel_size=1)
        self.decoder = nn.Sequential(
            conv_norm_act(spatial_dims, decoder_ch + skip_ch, decoder_ch, kernel_size=3),
            conv_norm_act(spatial_dims, decoder_ch, decoder_ch, kernel_size=3),
        )
        self.classifier = head(spatial_dims, decoder_ch, out_channels)
        self.aux_head = head(spatial_dims, decoder_ch, out_channels) if deep_supervision else None
        self.apply(he_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        skip = x
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i == self.skip_index:
                skip = x
        context = self.aspp_project(self.aspp(x))
        merged = torch.cat([upsample_to(context, skip.shape[2:]), self.skip_project(skip)], dim=1)
        low = self.classifier(self.decoder(merged))
        out = upsample_to(low, size)
        if self.training and self.aux_head is not None:
            return [out, low, self.aux_head(context)]
        return out


def build_deeplabv3plus(
    spatial_dims: int, in_channels: int, out_channels: int, config, deep_supervision: bool = False
) -> nn.Module:
    """DeepLabV3+ sized by a NetworkConfig."""
    return DeepLabV3Plus(
        spatial_dims,
        in_channels,
        out_channels,
        tuple(config.features),
        [tuple(k) for k in config.kernel_sizes],
        [tuple(s) for s in config.strides],
        deep_supervision,
    )
