"""The segmentation network of the mixed-supervision step (SPEC 7): ResNet-38 + a DeepLab-v2 head.

The published work stops at the pseudo labels; this network is the usual final step of weakly
and weak-shot supervised segmentation: the ResNet-38 backbone (output stride 8, frozen BatchNorms,
frozen conv1a/b2*, width factor as elsewhere) with DeepLab-v2's atrous spatial pyramid pooling
classifier: four parallel 3x3 convolutions of dilation 6, 12, 18 and 24 on conv6, each straight to
the 21 labels (with bias), summed. Keys: the backbone's published ones plus
`aspp.{0..3}.{weight,bias}` (branch i has dilation ASPP_RATES[i]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retab.models.resnet38 import ResNet38
from retab.voc import IGNORE, NUM_LABELS

ASPP_RATES = (6, 12, 18, 24)  # DeepLab-v2 (ASPP-L)
HEAD_INIT_STD = 0.01  # DeepLab's classifier init: normal(0, 0.01), bias 0


class SegmentationHead(nn.Module):
    """`forward(x)` -> label logits [B, 21, ceil(H/8), ceil(W/8)] (a head of retab.models.heads' kind)."""

    head_names = ("aspp",)  # trained from scratch: the optimizer's lr x10 / x20 groups

    def __init__(self, width: float = 1.0, num_labels: int = NUM_LABELS, rates=ASPP_RATES):
        super().__init__(width)
        channels = self.feature_channels["conv6"]
        self.aspp = nn.ModuleList(
            nn.Conv2d(channels, num_labels, 3, padding=rate, dilation=rate, bias=True) for rate in rates)
        for conv in self.aspp:
            nn.init.normal_(conv.weight, 0.0, HEAD_INIT_STD)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        features = super().forward(x)
        return sum(branch(features) for branch in self.aspp)


class SegmentationNet(SegmentationHead, ResNet38):
    """The segmentation network on ResNet-38."""


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose label is not 255.

    logits [B, 21, h, w] (the network's 1/8 grid) are upsampled bilinearly (align_corners=False)
    to the labels' size [B, H, W] first, so every labelled pixel of the crop counts. A batch
    without a single labelled pixel gives a zero loss (still connected to the graph) instead of
    the NaN of an empty mean.
    """
    if logits.shape[2:] != labels.shape[1:]:
        logits = F.interpolate(logits, size=labels.shape[1:], mode="bilinear", align_corners=False)
    labels = labels.long()
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)
