"""Multi-scale class activation maps (SPEC 3, `infer_cls`).

Each image is seen at several scales, each also mirrored; the CAMs of all passes are brought back
to the original size and orientation, summed, and every class map is divided by its maximum.
The ImageNet input normalisation is the one of retab.data.transforms.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from retab.data.transforms import image_to_tensor
from retab.misc.errors import RetabError
from retab.voc import NUM_CLASSES

CAM_SCALES = (1.0, 0.5, 1.5, 2.0)
# Added to each class map's maximum before dividing, as published.
NORM_EPS = 1e-5


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(round(width*scale), round(height*scale)) with Python's round: halves go to the even
    integer, so 375 x 0.5 -> 188 and 125 x 0.5 -> 62, as the published inference resizes."""
    size = (round(width * scale), round(height * scale))
    if size[0] < 1 or size[1] < 1:
        raise RetabError(f"image of {width}x{height} scaled by {scale} has no pixels left")
    return size


def _scaled_tensor(img: Image.Image, scale: float) -> torch.Tensor:
    """The image resized (bicubic) to scaled_size and normalised, as a float32 tensor [3,h,w]."""
    size = scaled_size(img.width, img.height, scale)
    # PIL returns a plain copy when the size is unchanged, so scale 1.0 is the image itself.
    return image_to_tensor(img.convert("RGB").resize(size, Image.Resampling.BICUBIC))


def multiscale_inputs(img: Image.Image, scales: Sequence[float] = CAM_SCALES,
                      flip: bool = True) -> list[torch.Tensor]:
    """The network inputs of every pass: for each scale the image, then (if flip) its mirror.

    Mirroring the normalised tensor equals normalising the mirrored image (normalisation is per
    pixel). The pass i is mirrored exactly when flip is on and i is odd."""
    inputs = []
    for scale in scales:
        tensor = _scaled_tensor(img, scale)
        inputs.append(tensor)
        if flip:
            inputs.append(tensor.flip(-1))
    return inputs


def _present_classes(labels) -> tuple[torch.Tensor, list[int]]:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu()
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float32)).flatten()
    if labels.numel() != NUM_CLASSES:
        raise RetabError(f"image labels must have {NUM_CLASSES} entries, got {labels.numel()}")
    present = [int(k) for k in torch.nonzero(labels).flatten()]
    return labels, present


def aggregate_cams(cams_per_pass: Sequence[torch.Tensor], flipped: Sequence[bool],
                   out_size: tuple[int, int], labels) -> dict[int, np.ndarray]:
    """Sum the CAMs of all passes at the original size and max-normalise each class map.

    cams_per_pass: tensors [20, h_i, w_i] (any sizes); flipped: whether pass i saw the mirrored
    image; out_size: (H, W) of the original image; labels: the image's 20 class labels (0/1).
    Returns {class index: float32 HxW} for the classes whose label is non-zero.

    Each pass is upsampled bilinearly (align_corners=False), multiplied by the labels and
    mirrored back when needed. Absent classes are multiplied by 0 and dropped from the output, so
    only the present channels are upsampled: the result is the same and much cheaper.
    """
    if len(cams_per_pass) != len(flipped):
        raise RetabError(f"aggregate_cams: {len(cams_per_pass)} CAMs but {len(flipped)} flip flags")
    labels, present = _present_classes(labels)
    if not present or not cams_per_pass:
        return {}
    device = cams_per_pass[0].device
    weights = labels[present].to(device)[:, None, None]
    total = torch.zeros((len(present),) + tuple(out_size), dtype=torch.float32, device=device)
    for cam, is_flipped in zip(cams_per_pass, flipped):
        if cam.dim() != 3 or cam.shape[0] != NUM_CLASSES:
            raise RetabError(f"aggregate_cams: expected a CAM of shape [20,h,w], got {tuple(cam.shape)}")
        chosen = cam[present].float().to(device)[None]
        upsampled = F.interpolate(chosen, size=tuple(out_size), mode="bilinear",
                                  align_corners=False)[0] * weights
        if is_flipped:
            upsampled = upsampled.flip(-1)
        total += upsampled
    peaks = total.flatten(1).max(dim=1).values[:, None, None]
    normalised = (total / (peaks + NORM_EPS)).cpu().numpy().astype(np.float32)
    return {k: normalised[i] for i, k in enumerate(present)}


@torch.no_grad()
def multiscale_cam(cam_fn: Callable[[torch.Tensor], torch.Tensor], img: Image.Image, labels,
                   scales: Sequence[float] = CAM_SCALES, device: torch.device | str = "cpu",
                   flip: bool = True) -> dict[int, np.ndarray]:
    """The CAM dict of one image: cam_fn (a batch [N,3,h,w] -> [N,20,h',w']) run on every pass,
    the image and its mirror of one scale in one batch, then aggregate_cams."""
    return multiscale_cams(cam_fn, [img], [labels], scales, device, flip)[0]


@torch.no_grad()
def multiscale_cams(cam_fn: Callable[[torch.Tensor], torch.Tensor], images: Sequence[Image.Image], labels,
                    scales: Sequence[float] = CAM_SCALES, device: torch.device | str = "cpu",
                    flip: bool = True) -> list[dict[int, np.ndarray]]:
    """The CAM dicts of several images of one size (labels: one label vector per image): for each
    scale one batch holding every image (with a present class) and its mirror, then
    aggregate_cams per image. One image gives exactly `multiscale_cam`; several give the same
    maps up to the rounding of batched convolutions."""
    device = torch.device(device)
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise RetabError(f"multiscale_cams: {len(images)} images but {len(labels)} label vectors")
    sizes = {img.size for img in images}
    if len(sizes) > 1:
        raise RetabError(f"multiscale_cams batches images of one size, got sizes {sorted(sizes)}")
    active = [i for i, image_labels in enumerate(labels) if _present_classes(image_labels)[1]]
    cams = {i: [] for i in active}
    flipped = {i: [] for i in active}
    if active:
        for scale in scales:
            batch, owners = [], []
            for i in active:
                inputs = multiscale_inputs(images[i], (scale,), flip)
                batch += inputs
                owners += [(i, j == 1) for j in range(len(inputs))]
            out = cam_fn(torch.stack(batch).to(device))
            for k, (i, is_flipped) in enumerate(owners):
                cams[i].append(out[k])
                flipped[i].append(is_flipped)
    return [aggregate_cams(cams[i], flipped[i], (img.height, img.width), labels[i]) if i in cams else {}
            for i, img in enumerate(images)]
