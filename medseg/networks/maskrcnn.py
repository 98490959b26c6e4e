"""Mask R-CNN (2D) from torchvision, sized for a CPU and trained from scratch.

torchvision's detection model (ResNet + FPN backbone, a **region proposal network**, RoI box and
mask heads) with:

* a small ResNet (18 or 34; 50 for GPUs) built with ``weights=None`` (nothing is downloaded) and
  **GroupNorm** everywhere (backbone, FPN, mask head): BatchNorm statistics of tiny CPU batches
  are noise, and torchvision's default frozen BatchNorm only makes sense with pretrained weights;
* FPN levels P2-P6 with ``fpn_channels`` channels, one anchor size per level taken from the
  plan's object sizes (:class:`medseg.model.plan.InstancePlan`), not the COCO defaults 32-512;
* lighter heads than COCO's (box head ``box_head`` wide, mask head ``mask_channels`` wide);
* no resizing and no normalisation inside the model: images arrive preprocessed by the plan and
  tiled to ``tile_size`` (:mod:`medseg.inference.detection`).

torchvision is an optional dependency (extra ``detection``): without it, building the model is a
one-line ConfigError with the install command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from medseg.errors import ConfigError

BACKBONES = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}
FPN_LEVELS = 5
INSTALL_HINT = (
    "the Mask R-CNN family needs torchvision's detection models: pip install torch==2.14.1 "
    "torchvision==0.29.1 (or: pip install 'medseg[detection]' beside your torch)"
)


@dataclass(frozen=True)
class DetectionConfig:
    """The Mask R-CNN of one model folder (``model.json``'s ``network``).

    ``anchor_sizes``: one per FPN level (P2..P6, strides 4..64), in pixels. ``tile_size``: the
    (fixed) image size the network sees. ``max_detections``: detections kept per tile.
    ``groups``: GroupNorm groups (each norm uses ``min(groups, channels)``).
    """

    backbone: str = "resnet18"
    fpn_channels: int = 128
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    tile_size: tuple[int, ...] = (256, 256)
    num_classes: int = 2
    max_detections: int = 300
    box_head: int = 256
    mask_channels: int = 128
    groups: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor_sizes", tuple(int(v) for v in self.anchor_sizes))
        object.__setattr__(self, "aspect_ratios", tuple(float(v) for v in self.aspect_ratios))
        object.__setattr__(self, "tile_size", tuple(int(v) for v in self.tile_size))
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown Mask R-CNN backbone {self.backbone!r}; use one of {', '.join(BACKBONES)}")
        if len(self.anchor_sizes) != FPN_LEVELS or min(self.anchor_sizes) < 1:
            raise ConfigError(
                f"Mask R-CNN needs {FPN_LEVELS} positive anchor sizes (one per FPN level), "
                f"got {list(self.anchor_sizes)}"
            )
        if len(self.tile_size) != 2 or min(self.tile_size) < 32 or any(t % 32 for t in self.tile_size):
            raise ConfigError(f"Mask R-CNN tile_size needs 2 multiples of 32, got {list(self.tile_size)}")
        small = [
            n for n in ("fpn_channels", "box_head", "mask_channels", "groups", "max_detections") if getattr(self, n) < 1
        ]
        if small or self.num_classes < 2 or not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ConfigError(f"Mask R-CNN settings out of range: {', '.join(small) or 'num_classes/aspect_ratios'}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectionConfig:
        """Validated config from ``model.json``'s ``network`` (ConfigError naming what is wrong)."""
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(f"model.json: the Mask R-CNN network is malformed ({exc})") from None


def _torchvision() -> Any:
    """The torchvision module, or a ConfigError with the install command."""
    try:
        import torchvision
        from torchvision.models.detection import MaskRCNN  # noqa: F401  (needs torchvision's compiled ops)
    except (ImportError, RuntimeError, OSError):
        raise ConfigError(INSTALL_HINT) from None
    return torchvision


def group_norm(groups: int):
    """A ``norm_layer(channels)`` factory: GroupNorm with ``min(groups, channels)`` groups."""

    def make(channels: int) -> nn.GroupNorm:
        count = min(groups, channels)
        while channels % count:
            count -= 1
        return nn.GroupNorm(count, channels)

    return make


def _backbone(in_channels: int, config: DetectionConfig) -> nn.Module:
    """ResNet (random weights, GroupNorm) + FPN with an extra max-pooled level (P2..P6)."""
    torchvision = _torchvision()
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    norm = group_norm(config.groups)
    resnet = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=norm)
    if in_channels != 3:
        resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    layers = {f"layer{i + 1}": str(i) for i in range(4)}
    return BackboneWithFPN(
        resnet,
        layers,
        list(BACKBONES[config.backbone]),
        config.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=norm,
    )


def build_maskrcnn(in_channels: int, config: DetectionConfig) -> nn.Module:
    """torchvision ``MaskRCNN`` for ``in_channels``-channel tiles of ``config.tile_size``.

    Train mode: ``model(images, targets)`` -> dict of losses (RPN objectness and box, RoI class,
    box and mask). Eval mode: ``model(images)`` -> per image ``boxes`` (x0, y0, x1, y1 in pixels of
    the tile: x along the tile's last axis), ``scores``, ``labels``, ``masks`` (N, 1, H, W) in [0, 1].
    Raises ConfigError without torchvision.
    """
    _torchvision()
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead

    channels = config.fpn_channels
    anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes), (config.aspect_ratios,) * FPN_LEVELS)
    size = min(config.tile_size)
    return MaskRCNN(
        _backbone(in_channels, config),
        num_classes=None,
        min_size=size,
        max_size=max(config.tile_size),
        image_mean=[0.0] * in_channels,
        image_std=[1.0] * in_channels,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=1000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=1000,
        box_head=TwoMLPHead(channels * 7 * 7, config.box_head),
        box_predictor=FastRCNNPredictor(config.box_head, config.num_classes),
        box_detections_per_img=config.max_detections,
        box_batch_size_per_image=256,
        mask_head=MaskRCNNHeads(channels, [config.mask_channels] * 4, 1, norm_layer=group_norm(config.groups)),
        mask_predictor=MaskRCNNPredictor(config.mask_channels, config.mask_channels, config.num_classes),
    )
