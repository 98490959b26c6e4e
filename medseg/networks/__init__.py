"""Segmentation networks, one registry, 2D and 3D: ``build_model(family, spatial_dims, ...)``.

Families: ``unet`` (nnU-Net's U-Net on MONAI DynUNet), ``resenc_unet`` (residual-encoder U-Net),
``deeplabv3plus`` (DeepLabV3+ from MONAI blocks), ``segnet`` (SegNet with max-pooling indices).
"""

from __future__ import annotations

from medseg.networks.padding import PadToStride, total_stride
from medseg.networks.registry import FAMILIES, build_model, check_family

__all__ = ["FAMILIES", "PadToStride", "build_model", "check_family", "total_stride"]
