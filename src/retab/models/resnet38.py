"""ResNet-38 ("model A1" of Wu et al.), output stride 8, and the three PSA/RETAB networks on it (SPEC 2).

Every layer carries the published name, so `state_dict()` keys equal those of the published
checkpoints (`conv1a.weight`, `b2.bn_branch2a.weight`, ..., `bn7.*`, `fc8.weight`, `f9.weight`).

`width` scales every channel count c to max(8, round(c * width)); 1.0 is the published network,
small widths (e.g. 0.125) give the same architecture and key names for CPU tests and the demo.
The 20 class outputs of fc8 and the single boundary output of f9 are never scaled.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from retab.models.backbone import FrozenNormBackbone
from retab.models.heads import AffinityHead, BoundaryHead, ClassificationHead, scaled

# The networks take images normalised by retab.data.transforms.normalize_image (RGB / 255,
# ImageNet IMAGENET_MEAN / IMAGENET_STD, defined there once).


# Layers that stay at their ImageNet weights in every stage (besides every BatchNorm).
FROZEN_LAYERS = ("conv1a", "b2", "b2_1", "b2_2")


def conv3x3(c_in, c_out, stride=1, dilation=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU, then two 3x3 convs; 1x1 projection shortcut if needed."""

    def __init__(self, c_in, c_mid, c_out, stride=1, first_dilation=1, dilation=1):
        super().__init__()
        self.has_projection = c_in != c_out or stride != 1
        self.bn_branch2a = nn.BatchNorm2d(c_in)
        self.conv_branch2a = conv3x3(c_in, c_mid, stride, first_dilation)
        self.bn_branch2b1 = nn.BatchNorm2d(c_mid)
        self.conv_branch2b1 = conv3x3(c_mid, c_out, 1, dilation)
        if self.has_projection:
            self.conv_branch1 = conv1x1(c_in, c_out, stride)

    @property
    def last_branch_conv(self) -> nn.Conv2d:
        return self.conv_branch2b1

    def forward(self, x, return_preact=False):
        preact = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(preact) if self.has_projection else x
        branch = self.conv_branch2a(preact)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch)))
        out = shortcut + branch
        return (out, preact) if return_preact else out


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck: 1x1 (out/4) -> 3x3 dilated (out/2) -> 1x1 (out), dropout2d
    before the last two convs; the shortcut is always a 1x1 projection."""

    def __init__(self, c_in, c_quarter, c_half, c_out, dilation, dropout):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(c_in)
        self.conv_branch1 = conv1x1(c_in, c_out)
        self.conv_branch2a = conv1x1(c_in, c_quarter)
        self.bn_branch2b1 = nn.BatchNorm2d(c_quarter)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = conv3x3(c_quarter, c_half, 1, dilation)
        self.bn_branch2b2 = nn.BatchNorm2d(c_half)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = conv1x1(c_half, c_out)

    @property
    def last_branch_conv(self) -> nn.Conv2d:
        return self.conv_branch2b2

    def forward(self, x, return_preact=False):
        preact = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(preact)
        branch = self.conv_branch2a(preact)
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        out = shortcut + branch
        return (out, preact) if return_preact else out


class ResNet38(FrozenNormBackbone):
    """The backbone. `forward(x)` gives conv6; `feature_dict(x)` gives conv4, conv5 and conv6.

    BatchNorms are frozen: always in eval mode (also after `.train()`), affine parameters not
    trained. conv1a, b2, b2_1 and b2_2 are not trained either.
    """

    # Top-level modules that are new (not ImageNet-initialised); the optimizer's head groups.
    head_names: tuple = ()

    def __init__(self, width: float = 1.0):
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = float(width)
        c = lambda n: scaled(n, width)  # noqa: E731
        self.conv1a = nn.Conv2d(3, c(64), 3, padding=1, bias=False)

        self.b2 = BasicBlock(c(64), c(128), c(128), stride=2)
        self.b2_1 = BasicBlock(c(128), c(128), c(128))
        self.b2_2 = BasicBlock(c(128), c(128), c(128))

        self.b3 = BasicBlock(c(128), c(256), c(256), stride=2)
        self.b3_1 = BasicBlock(c(256), c(256), c(256))
        self.b3_2 = BasicBlock(c(256), c(256), c(256))

        self.b4 = BasicBlock(c(256), c(512), c(512), stride=2)
        self.b4_1 = BasicBlock(c(512), c(512), c(512))
        self.b4_2 = BasicBlock(c(512), c(512), c(512))
        self.b4_3 = BasicBlock(c(512), c(512), c(512))
        self.b4_4 = BasicBlock(c(512), c(512), c(512))
        self.b4_5 = BasicBlock(c(512), c(512), c(512))

        self.b5 = BasicBlock(c(512), c(512), c(1024), first_dilation=1, dilation=2)
        self.b5_1 = BasicBlock(c(1024), c(512), c(1024), first_dilation=2, dilation=2)
        self.b5_2 = BasicBlock(c(1024), c(512), c(1024), first_dilation=2, dilation=2)

        self.b6 = BottleneckBlock(c(1024), c(512), c(1024), c(2048), dilation=4, dropout=0.3)
        self.b7 = BottleneckBlock(c(2048), c(1024), c(2048), c(4096), dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(c(4096))

        self.feature_channels = {"conv4": c(512), "conv5": c(1024), "conv6": c(4096)}
        self.freeze_pretrained()

    def feature_dict(self, x) -> dict:
        """{'conv4': relu(bn_branch2a) inside b5, 'conv5': the same inside b6,
        'conv6': relu(bn7(b7 output))}, all at 1/8 of the input size (rounded up)."""
        x = self.conv1a(x)
        for name in ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2",
                     "b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5"):
            x = getattr(self, name)(x)
        x, conv4 = self.b5(x, return_preact=True)
        x = self.b5_2(self.b5_1(x))
        x, conv5 = self.b6(x, return_preact=True)
        x = self.b7(x)
        conv6 = F.relu(self.bn7(x))
        return {"conv4": conv4, "conv5": conv5, "conv6": conv6}

    def forward(self, x):
        return self.feature_dict(x)["conv6"]

    # Set by `train_from_scratch()`: nothing here is pretrained, so nothing is frozen.
    from_scratch: bool = False

    def train_from_scratch(self) -> None:
        """Not in the paper: for training without ImageNet weights (the CPU demo).

        - Every layer and BatchNorm trains (BatchNorms in train mode). Frozen BatchNorms and frozen
          early layers only make sense when they hold ImageNet weights; from a random start they
          leave a 38-layer network unnormalised and the classifier stays at the class prior.
        - He-normal initialisation of the backbone convs, and the last conv of every residual
          branch zeroed, so that each block starts as its shortcut and the deep network starts
          out shallow (on the mini-VOC: val mAP 0.55 instead of 0.41 after 14 epochs).
        - No dropout: from scratch on a few hundred images the network underfits (0.62 instead
          of 0.55).
        """
        self.from_scratch = True
        for name, child in self.named_children():
            if name in self.head_names:  # heads keep their own initialisation
                continue
            for module in child.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            for module in child.modules():  # after the loop above, which would overwrite the zeros
                if isinstance(module, (BasicBlock, BottleneckBlock)):
                    nn.init.zeros_(module.last_branch_conv.weight)
        for module in self.modules():
            if isinstance(module, nn.Dropout2d):
                module.p = 0.0
        self.requires_grad_(True)
        self.train(self.training)

    def freeze_pretrained(self) -> None:
        """No gradients for conv1a/b2/b2_1/b2_2 and for every BatchNorm's affine parameters;
        every BatchNorm in eval mode (running statistics never updated). Nothing is frozen after
        `train_from_scratch()`."""
        if self.from_scratch:
            return
        for name in FROZEN_LAYERS:
            getattr(self, name).requires_grad_(False)
        super().freeze_pretrained()


# The networks of the pipeline: a head (retab.models.heads) on this backbone; published key names.

class ClassificationNet(ClassificationHead, ResNet38):
    """CAM network (PSA's classifier)."""


class AffinityNet(AffinityHead, ResNet38):
    """PSA's AffinityNet and RETAB's mixed affinity net."""


class BoundaryNet(BoundaryHead, ResNet38):
    """RETAB's boundary net."""
