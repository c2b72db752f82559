"""The heads of the pipeline's networks (SPEC 2), written once for every backbone.

A network is a head class followed by a backbone class (`class AffinityNet(AffinityHead,
ResNet38)`), so that the head's layers are top-level modules with the published names (`fc8`,
`f8_3`, ..., `f9`). A backbone provides `width`, `feature_channels` ({'conv4', 'conv5', 'conv6'}:
an early stride-8 level, a middle level and the last level), `feature_dict(x)` with those three
maps at 1/8 of the input and `forward(x)` = conv6.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retab.voc import NUM_CLASSES


def scaled(channels: int, width: float) -> int:
    """Channel count of a width-scaled network: max(8, round(c * width))."""
    return max(8, round(channels * width))


class ClassificationHead(nn.Module):
    """CAM network: logits = fc8(global average pool(dropout2d(conv6))); CAM = relu(fc8 * conv6)."""

    head_names = ("fc8",)

    def __init__(self, width: float = 1.0):
        super().__init__(width)
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(self.feature_channels["conv6"], NUM_CLASSES, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)

    def forward(self, x):
        """Class logits [B, 20]."""
        x = self.dropout7(super().forward(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc8(x).flatten(1)

    def cam(self, x):
        """Class activation maps [B, 20, ceil(H/8), ceil(W/8)] (no dropout)."""
        return F.relu(F.conv2d(super().forward(x), self.fc8.weight))


class MultiLevelHead(nn.Module):
    """f8_3 / f8_4 / f8_5 (1x1, ELU) on conv4 / conv5 / conv6, concatenated, then f9 (1x1)."""

    head_names = ("f8_3", "f8_4", "f8_5", "f9")

    def __init__(self, width: float, f9_out: int | None):
        super().__init__(width)
        ch = self.feature_channels
        c = lambda n: scaled(n, width)  # noqa: E731
        self.f8_3 = nn.Conv2d(ch["conv4"], c(64), 1, bias=False)
        self.f8_4 = nn.Conv2d(ch["conv5"], c(128), 1, bias=False)
        self.f8_5 = nn.Conv2d(ch["conv6"], c(256), 1, bias=False)
        self.concat_channels = c(64) + c(128) + c(256)
        self.f9 = nn.Conv2d(self.concat_channels, f9_out or self.concat_channels, 1, bias=False)
        for conv in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def f9_input(self, x):
        feats = self.feature_dict(x)
        return torch.cat([F.elu(self.f8_3(feats["conv4"])),
                          F.elu(self.f8_4(feats["conv5"])),
                          F.elu(self.f8_5(feats["conv6"]))], dim=1)


class AffinityHead(MultiLevelHead):
    """Affinity features [B, 448, ceil(H/8), ceil(W/8)] (448 scaled by width); pair affinities
    exp(-mean |f_i - f_j|) are computed in retab.affinity."""

    def __init__(self, width: float = 1.0):
        super().__init__(width, f9_out=None)

    def forward(self, x):
        return F.elu(self.f9(self.f9_input(x)))


class BoundaryHead(MultiLevelHead):
    """Boundary logits [B, 1, H, W]: f9 (448 -> 1, no ELU), bilinearly upsampled to the input."""

    def __init__(self, width: float = 1.0):
        super().__init__(width, f9_out=1)

    def forward(self, x):
        logits = self.f9(self.f9_input(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)
