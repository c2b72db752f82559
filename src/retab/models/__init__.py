"""Networks of the pipeline, built by kind: `build_model('cls' | 'aff' | 'boundary' | 'seg', width)`.

Other model kinds join with `register_model(kind, factory)`.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from retab.misc.errors import RetabError
from retab.models.resnet38 import AffinityNet, BoundaryNet, ClassificationNet, ResNet38
from retab.models.segmentation import SegmentationNet

# kind -> factory(width=...) returning an nn.Module
MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "cls": ClassificationNet,
    "aff": AffinityNet,
    "boundary": BoundaryNet,
    "seg": SegmentationNet,
}


def register_model(kind: str, factory: Callable[..., nn.Module]) -> None:
    """Make `build_model(kind, width)` call `factory(width=width)`."""
    MODEL_FACTORIES[kind] = factory


def build_model(kind: str, width: float = 1.0) -> nn.Module:
    """A freshly initialised network of the given kind (backbone not loaded: see retab.models.weights)."""
    if kind not in MODEL_FACTORIES:
        raise RetabError(f"unknown model kind {kind!r}; known: {', '.join(sorted(MODEL_FACTORIES))}")
    if not width > 0:
        raise RetabError(f"--width must be positive, got {width}")
    return MODEL_FACTORIES[kind](width=width)


__all__ = ["ResNet38", "ClassificationNet", "AffinityNet",
           "BoundaryNet", "SegmentationNet", "MODEL_FACTORIES", "register_model", "build_model"]
