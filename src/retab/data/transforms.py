"""Image normalisation and the training augmentations (SPEC sections 2, 3 and 4).

Every random choice is drawn from a numpy Generator passed in explicitly (`rng`); nothing here
touches Python's, NumPy's or torch's global random state. The datasets derive one Generator per
sample from (seed, epoch, index) with `sample_rng`, so a sample is the same whatever DataLoader
worker computes it and whatever order the workers run in.

Array conventions: images are PIL RGB or uint8 HxWx3 until normalised, float32 HxWx3 after, and
float32 3xHxW (CHW) at the very end. Label maps travel beside the image as HxW or HxWxC arrays
(spatial axes first) so that one crop box and one flip apply to all of them.

The two published augmentation orders are the two pipelines at the bottom:
- `augment_for_classification` (SPEC 3): resize-long, flip, jitter, normalise, crop;
- `augment_with_labels` (SPEC 4, boundary and affinity training): jitter, crop, normalise, flip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance

from retab.misc.errors import RetabError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- seeding

def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The Generator of one sample in one epoch: independent streams for every (seed, epoch, index)."""
    # SeedSequence wants non-negative entropy; masking keeps negative --seed values usable.
    mask = (1 << 64) - 1
    return np.random.default_rng(np.random.SeedSequence([seed & mask, epoch & mask, index & mask]))


# ----------------------------------------------------------------------------- normalisation

def normalize_image(img) -> np.ndarray:
    """RGB (PIL or uint8 HxWx3) -> float32 HxWx3: (x / 255 - ImageNet mean) / ImageNet std."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image HxWx3, got shape {arr.shape}")
    # float64 arithmetic, float32 result (as the published Normalize did)
    out = (arr.astype(np.float64) / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    return out.astype(np.float32)


def hwc_to_chw(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(arr, (2, 0, 1)))


def image_to_tensor(img):
    """Normalised float32 torch tensor [3, H, W] of an RGB image (what every network eats)."""
    import torch

    return torch.from_numpy(hwc_to_chw(normalize_image(img)))


# ----------------------------------------------------------------------------- resize and flip

def resize_long(img: Image.Image, long_side: int) -> Image.Image:
    """Bicubic resize so the longer side is `long_side`; the other side is round()ed, at least 1."""
    w, h = img.size
    if w >= h:
        size = (long_side, max(1, round(h * long_side / w)))
    else:
        size = (max(1, round(w * long_side / h)), long_side)
    return img.resize(size, Image.Resampling.BICUBIC)


def random_resize_long(img: Image.Image, rng: np.random.Generator, lo: int, hi: int) -> Image.Image:
    """Resize-long with the long side an integer drawn uniformly from [lo, hi] (both included)."""
    return resize_long(img, int(rng.integers(lo, hi + 1)))


def draw_flip(rng: np.random.Generator, p: float = 0.5) -> bool:
    return bool(rng.random() < p)


def hflip(arr: np.ndarray) -> np.ndarray:
    """Mirror left-right an HxW or HxWxC array (axis 1 is always the width)."""
    return np.ascontiguousarray(arr[:, ::-1])


# ----------------------------------------------------------------------------- colour jitter

def _enhance(kind):
    """One of PIL's ImageEnhance operators as `adjust(img, factor)`: the operators torchvision's
    ColorJitter applies to PIL images (Brightness, Contrast, and Color for saturation)."""
    def adjust(img: Image.Image, factor: float) -> Image.Image:
        return kind(img).enhance(factor)
    return adjust


adjust_brightness = _enhance(ImageEnhance.Brightness)
adjust_contrast = _enhance(ImageEnhance.Contrast)
adjust_saturation = _enhance(ImageEnhance.Color)


def adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue of an RGB image by `shift` turns (|shift| <= 0.5), as torchvision's PIL path
    does: the 8-bit H channel of PIL's HSV gets int(shift * 255) added modulo 256 (int() truncates
    towards zero, so -0.1 adds -25, i.e. 231). Grey-level modes are returned unchanged."""
    if img.mode in {"L", "1", "I", "F"}:
        return img
    h, s, v = img.convert("HSV").split()
    hue = (np.asarray(h, dtype=np.int32) + int(shift * 255)) % 256
    h = Image.fromarray(hue.astype(np.uint8), mode="L")
    return Image.merge("HSV", (h, s, v)).convert(img.mode)


class ColorJitter:
    """torchvision's ColorJitter on PIL images, but with its random draws taken from `rng`.

    Same semantics: brightness, contrast and saturation factors uniform in
    [max(0, 1 - s), 1 + s], hue shift uniform in [-h, h], the four adjustments applied in a random
    order; an adjustment of strength 0 is skipped (so all-zero strengths are the identity).
    The adjustments are PIL's own operators, the ones torchvision uses for PIL images, so
    torchvision itself is not needed.
    """

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
                 hue: float = 0.1):
        if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
            raise ValueError("jitter strengths must be >= 0 and hue <= 0.5")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")

    @property
    def is_identity(self) -> bool:
        return not (self.brightness or self.contrast or self.saturation or self.hue)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        if self.is_identity:
            return img
        steps = []
        for strength, adjust in ((self.brightness, adjust_brightness),
                                 (self.contrast, adjust_contrast),
                                 (self.saturation, adjust_saturation)):
            if strength:
                factor = float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))
                steps.append((adjust, factor))
        if self.hue:
            steps.append((adjust_hue, float(rng.uniform(-self.hue, self.hue))))
        for i in rng.permutation(len(steps)):
            adjust, factor = steps[i]
            img = adjust(img, factor)
        return img


DEFAULT_JITTER = ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
NO_JITTER = ColorJitter(0.0, 0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------- random crop

@dataclass(frozen=True)
class CropBox:
    """Where a crop_size x crop_size window meets an image of size src_height x src_width.

    Rows src_top .. src_top+height (and columns likewise) of the image land at rows
    dst_top .. dst_top+height of the canvas; the rest of the canvas is fill.
    """
    size: int
    src_height: int
    src_width: int
    src_top: int
    src_left: int
    dst_top: int
    dst_left: int
    height: int
    width: int


def _axis_offsets(rng: np.random.Generator, side: int, crop: int) -> tuple[int, int, int]:
    """(source offset, canvas offset, copied length) along one axis.

    Larger than the crop: the window's offset in the image is uniform in 0 .. side-crop.
    Not larger: the image's offset in the canvas is uniform in 0 .. crop-side (0 when equal).
    """
    if side > crop:
        return int(rng.integers(0, side - crop + 1)), 0, crop
    return 0, int(rng.integers(0, crop - side + 1)), side


def random_crop_box(rng: np.random.Generator, height: int, width: int, crop_size: int) -> CropBox:
    """Draw a crop window (rows first, then columns, each axis independently)."""
    src_top, dst_top, h = _axis_offsets(rng, height, crop_size)
    src_left, dst_left, w = _axis_offsets(rng, width, crop_size)
    return CropBox(crop_size, height, width, src_top, src_left, dst_top, dst_left, h, w)


def apply_crop(arr: np.ndarray, box: CropBox, fill=0) -> np.ndarray:
    """Cut `box` out of an HxW or HxWxC array; canvas outside the image is `fill`; dtype kept."""
    if arr.shape[:2] != (box.src_height, box.src_width):
        raise ValueError(f"array of size {arr.shape[:2]} does not match the crop box's image size "
                         f"{(box.src_height, box.src_width)}")
    out = np.full((box.size, box.size) + arr.shape[2:], fill, dtype=arr.dtype)
    out[box.dst_top:box.dst_top + box.height, box.dst_left:box.dst_left + box.width] = \
        arr[box.src_top:box.src_top + box.height, box.src_left:box.src_left + box.width]
    return out


# ----------------------------------------------------------------------------- nearest resize

# Where a pixel map is sampled onto a coarser grid. "nearest" is PyTorch's legacy rule and the
# published one (SPEC 4): cell i takes pixel floor(i * in / out), the cell's top-left pixel.
# "nearest-exact" (PyTorch's corrected mode) takes floor((i + 0.5) * in / out), the cell's centre.
# The CAMs and CRF labels are averaged over each cell and the walks upsample their grids as cell
# centres, so the published labels sit half a cell up and left of them (see docs/measurements.md).
GRID_SAMPLINGS = ("nearest", "nearest-exact")


def check_sampling(sampling: str) -> str:
    """`sampling` itself when it is one of GRID_SAMPLINGS, else a one-line error naming them."""
    if sampling not in GRID_SAMPLINGS:
        raise RetabError(f"grid sampling must be one of {', '.join(GRID_SAMPLINGS)}, got {sampling!r}")
    return sampling


def nearest_indices(in_size: int, out_size: int, sampling: str = "nearest") -> np.ndarray:
    """PyTorch's `interpolate(mode=sampling)` source indices: floor(dst * in / out) for "nearest",
    floor((dst + 0.5) * in / out) for "nearest-exact", clamped.

    Computed in float32 like ATen (scale = float(in) / out), so that it agrees with torch exactly.
    """
    check_sampling(sampling)
    if in_size == out_size:
        return np.arange(out_size)
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    if sampling == "nearest-exact":
        dst = dst + np.float32(0.5)
    src = np.floor(dst * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def nearest_resize(arr: np.ndarray, out_height: int, out_width: int, sampling: str = "nearest") -> np.ndarray:
    """Nearest resize of the two leading (spatial) axes with PyTorch's index rule of `sampling`."""
    rows = nearest_indices(arr.shape[0], out_height, sampling)
    cols = nearest_indices(arr.shape[1], out_width, sampling)
    return arr[rows][:, cols]


# ----------------------------------------------------------------------------- the two pipelines

def augment_for_classification(img: Image.Image, rng: np.random.Generator, crop_size: int = 448,
                               resize_long_range: tuple[int, int] = (256, 512),
                               jitter: ColorJitter = DEFAULT_JITTER) -> np.ndarray:
    """Classification order (SPEC 3): resize-long, flip, jitter, normalise, crop -> float32 CHW.

    The crop comes after normalisation, so the canvas around a small image is 0 = the mean colour.
    """
    img = random_resize_long(img, rng, *resize_long_range)
    if draw_flip(rng):
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = jitter(img, rng)
    arr = normalize_image(img)
    box = random_crop_box(rng, arr.shape[0], arr.shape[1], crop_size)
    return hwc_to_chw(apply_crop(arr, box, fill=0.0))


def augment_with_labels(img: Image.Image, rng: np.random.Generator, crop_size: int,
                        labels: Sequence[tuple[np.ndarray, object]] = (),
                        jitter: ColorJitter = DEFAULT_JITTER) -> tuple[np.ndarray, list[np.ndarray]]:
    """Boundary / affinity order (SPEC 4): jitter, crop (with labels), normalise, flip.

    `labels` is a sequence of (HxW or HxWxC array, canvas fill value); each is cropped with the
    image's box and flipped with it. The image is cropped while still uint8, so its canvas is black,
    which normalisation turns into negative values (-mean/std), as published.
    Returns (float32 CHW image, [cropped and flipped label arrays]).
    """
    img = jitter(img, rng)
    arr = np.asarray(img, dtype=np.uint8)
    box = random_crop_box(rng, arr.shape[0], arr.shape[1], crop_size)
    arr = apply_crop(arr, box, fill=0)
    label_crops = [apply_crop(lab, box, fill=fill) for lab, fill in labels]
    arr = normalize_image(arr)
    if draw_flip(rng):
        arr = hflip(arr)
        label_crops = [hflip(lab) for lab in label_crops]
    return hwc_to_chw(arr), label_crops
