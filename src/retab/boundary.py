"""Boundary net loss and boundary target maps (SPEC 4, `train_boundary`, `prop_boundary_target`)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from retab.misc.errors import RetabError
from retab.voc import IGNORE as BOUNDARY_LABEL  # VOC's 255 "ignore" band is the boundary here
# Weights of the three loss terms: boundary pixels, background pixels, foreground pixels.
BOUNDARY_WEIGHT, BACKGROUND_WEIGHT, FOREGROUND_WEIGHT = 1.0, 0.5, 0.5
# After the k x k average, a pixel stays non-boundary only if (almost) its whole window is.
EROSION_KEEP = 0.99


def boundary_loss(logits: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Class-balanced BCE of the boundary logits [B,1,H,W] against GT masks [B,H,W].

    Boundary pixels (gt 255) have target 1; background (gt 0) and foreground (any other label)
    pixels have target 0. loss = mean over boundary + 0.5 mean over background + 0.5 mean over
    foreground. "Mean over" a set is read as the mean over all pixels of that set in the whole
    batch (pooled), not a mean of per-image means; a set empty in the whole batch adds 0.
    Returns (loss, {"boundary", "background", "foreground": detached term means}).
    """
    if logits.dim() != 4 or logits.shape[1] != 1 or tuple(gt.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise RetabError(f"boundary_loss: logits {tuple(logits.shape)} and masks {tuple(gt.shape)} "
                         "must be [B,1,H,W] and [B,H,W]")
    logits = logits[:, 0]
    gt = gt.to(device=logits.device, dtype=torch.long)
    boundary = gt == BOUNDARY_LABEL
    background = gt == 0
    foreground = ~(boundary | background)
    per_pixel = F.binary_cross_entropy_with_logits(logits, boundary.to(logits.dtype), reduction="none")

    def set_mean(mask: torch.Tensor) -> torch.Tensor:
        # Dividing by max(count, 1) gives 0 for an empty set without a data-dependent branch.
        return (per_pixel * mask).sum() / mask.sum().clamp(min=1)

    parts = {"boundary": set_mean(boundary), "background": set_mean(background),
             "foreground": set_mean(foreground)}
    loss = (BOUNDARY_WEIGHT * parts["boundary"] + BACKGROUND_WEIGHT * parts["background"]
            + FOREGROUND_WEIGHT * parts["foreground"])
    return loss, {name: value.detach() for name, value in parts.items()}


def boundary_target_map(prob, threshold: float = 0.5, kernel: int = 0,
                        device: torch.device | str | None = None) -> np.ndarray:
    """uint8 HxW: 255 where the pixel is a non-boundary "target pixel", 0 on boundaries.

    prob: HxW boundary probability (sigmoid of the logit), numpy or tensor. Non-boundary means
    prob < threshold. An odd kernel k > 0 erodes the non-boundary region: replicate-pad by
    (k-1)/2, k x k average, keep where >= 0.99; kernel 0 means no erosion. Computed on `device`
    (default: the tensor's device, CPU for numpy).
    """
    if kernel < 0 or (kernel > 0 and kernel % 2 == 0):
        raise RetabError(f"boundary target kernel must be 0 or a positive odd number, got {kernel}")
    if isinstance(prob, torch.Tensor):
        prob = prob.to(device or prob.device)
    else:
        prob = torch.as_tensor(np.asarray(prob, dtype=np.float32), device=device or "cpu")
    if prob.dim() != 2:
        raise RetabError(f"boundary_target_map: expected an HxW probability map, got {tuple(prob.shape)}")
    non_boundary = prob < threshold
    if kernel > 0:
        pad = (kernel - 1) // 2
        # Replicate padding: the image border itself never counts as boundary.
        padded = F.pad(non_boundary.float()[None, None], (pad, pad, pad, pad), mode="replicate")
        non_boundary = F.avg_pool2d(padded, kernel, stride=1)[0, 0] >= EROSION_KEEP
    return (non_boundary.to(torch.uint8) * 255).cpu().numpy()
