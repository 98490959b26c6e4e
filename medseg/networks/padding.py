"""Make any network accept any input size: pad to a multiple of its total stride, crop back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def total_stride(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per-axis product of the per-stage strides, e.g. ((1,1,1),(2,2,2),(2,2,1)) -> (4,4,2)."""
    result = [1] * len(strides[0])
    for stage in strides:
        result = [r * int(s) for r, s in zip(result, stage)]
    return tuple(result)


class PadToStride(nn.Module):
    """Wrap ``net``: zero-pad inputs at the far end of each axis to a multiple of ``multiple``,
    run ``net``, and crop every output back so it covers exactly the input extent.

    A list output (deep supervision, lower resolutions) is cropped per item to
    ``ceil(input_size * output_size / padded_size)`` along each axis.
    """

    def __init__(self, net: nn.Module, multiple: Sequence[int]) -> None:
        super().__init__()
        self.net = net
        self.multiple = tuple(int(m) for m in multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        spatial = tuple(x.shape[2:])
        pads = [(-s) % m for s, m in zip(spatial, self.multiple)]
        if any(pads):
            pad_arg: list[int] = []
            for p in reversed(pads):  # F.pad lists the last axis first
                pad_arg += [0, p]
            x = F.pad(x, pad_arg)
        out = self.net(x)
        if not any(pads):
            return out
        padded = tuple(x.shape[2:])
        if isinstance(out, (list, tuple)):
            return [_crop(o, spatial, padded) for o in out]
        return _crop(out, spatial, padded)


def _crop(out: torch.Tensor, spatial: Sequence[int], padded: Sequence[int]) -> torch.Tensor:
    sizes = [-(-s * o // p) for s, o, p in zip(spatial, out.shape[2:], padded)]
    index: tuple[Any, ...] = (Ellipsis, *[slice(0, n) for n in sizes])
    return out[index]
