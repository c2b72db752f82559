"""What every backbone shares (SPEC 2): its BatchNorms stay frozen in every stage of the pipeline."""
from __future__ import annotations

from torch import nn


class FrozenNormBackbone(nn.Module):
    """Every BatchNorm in eval mode (running statistics never updated) with untrained affine
    parameters, after every `.train()`; a backbone adds its frozen early layers in `freeze_pretrained`."""

    def freeze_pretrained(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
                module.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.freeze_pretrained()  # BatchNorms back to eval; dropout follows `mode`
        return self
