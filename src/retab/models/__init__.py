"""Networks of the pipeline, built by kind and backbone:
`build_model('cls' | 'aff' | 'boundary' | 'seg', width, backbone='resnet38' | 'efficientnet_lite0')`.

Other model kinds join with `register_model(kind, factory, backbone)`.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from retab.misc.errors import RetabError
from retab.models.resnet38 import AffinityNet, BoundaryNet, ClassificationNet, ResNet38
from retab.models.segmentation import SegmentationNet

BACKBONES = ("resnet38", "efficientnet_lite0")
DEFAULT_BACKBONE = "resnet38"  # the published network


def _lite0(name: str) -> Callable[..., nn.Module]:
    # timm is imported only when this backbone is built
    def factory(width: float = 1.0) -> nn.Module:
        from retab.models import efficientnet_lite0
        return getattr(efficientnet_lite0, name)(width=width)
    return factory


# (kind, backbone) -> factory(width=...) returning an nn.Module
MODEL_FACTORIES: dict[tuple[str, str], Callable[..., nn.Module]] = {
    ("cls", "resnet38"): ClassificationNet,
    ("aff", "resnet38"): AffinityNet,
    ("boundary", "resnet38"): BoundaryNet,
    ("seg", "resnet38"): SegmentationNet,
    ("cls", "efficientnet_lite0"): _lite0("Lite0ClassificationNet"),
    ("aff", "efficientnet_lite0"): _lite0("Lite0AffinityNet"),
    ("boundary", "efficientnet_lite0"): _lite0("Lite0BoundaryNet"),
    ("seg", "efficientnet_lite0"): _lite0("Lite0SegmentationNet"),
}


def register_model(kind: str, factory: Callable[..., nn.Module], backbone: str = DEFAULT_BACKBONE) -> None:
    """Make `build_model(kind, width, backbone)` call `factory(width=width)`."""
    MODEL_FACTORIES[(kind, backbone)] = factory


def build_model(kind: str, width: float = 1.0, backbone: str = DEFAULT_BACKBONE) -> nn.Module:
    """A freshly initialised network of the given kind (backbone not loaded: see retab.models.weights)."""
    if (kind, backbone) not in MODEL_FACTORIES:
        backbones = sorted({b for _, b in MODEL_FACTORIES})
        if backbone not in backbones:
            raise RetabError(f"unknown backbone {backbone!r}; known: {', '.join(backbones)}")
        kinds = sorted({k for k, b in MODEL_FACTORIES if b == backbone})
        raise RetabError(f"unknown model kind {kind!r}; known: {', '.join(kinds)}")
    if not width > 0:
        raise RetabError(f"--width must be positive, got {width}")
    return MODEL_FACTORIES[(kind, backbone)](width=width)


__all__ = ["ResNet38", "ClassificationNet", "AffinityNet", "BoundaryNet", "SegmentationNet", "BACKBONES",
           "DEFAULT_BACKBONE", "MODEL_FACTORIES", "register_model", "build_model"]
