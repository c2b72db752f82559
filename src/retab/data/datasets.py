"""Dataset classes of every training and inference stage (SPEC sections 3 and 4).

Training datasets derive one numpy Generator per sample from (seed, epoch, index)
(`transforms.sample_rng`), so samples repeat exactly for a given seed whatever the number of
DataLoader workers. Call `set_epoch(epoch)` before iterating each epoch; the epoch lives in a
shared-memory tensor, so the call also reaches persistent DataLoader workers.

Label grids of the affinity trainings are pure functions (`base_label_grid`, `novel_label_grid`)
so that the rules of SPEC 4 can be checked on hand-made arrays.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from retab import voc
from retab.data.transforms import (
    DEFAULT_JITTER,
    ColorJitter,
    augment_for_classification,
    augment_with_labels,
    check_sampling,
    nearest_resize,
    random_resize_long,
    sample_rng,
)
from retab.affinity import affinity_labels
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict
from retab.published import AFFINITY_RADIUS, FEATURE_STRIDE
from retab.score_format import check_keys, dict_keys
from retab.misc.progress import progress

NO_SCORE = 1e-5  # pooled scores all below this: the cell lies in the crop's padding
BASE_PAD_LABEL = 0  # published: the joint crop pads GT masks with 0 (background), as in SPEC 4
TARGET_PAD = 0  # published quirk: target maps are masked before the crop, so padding is boundary (both samplings)


# ----------------------------------------------------------------------------- loading helpers

def load_voc_image(voc_root, name: str):
    return voc.load_image(voc.image_path(voc_root, name))


def load_mask_for(voc_root, name: str, size_hw: tuple[int, int]) -> np.ndarray:
    """The SegmentationClassAug mask of `name`, its values and size checked (voc.load_gt_mask)."""
    path = voc.mask_path(voc_root, name)
    mask = voc.load_gt_mask(path)
    if mask.shape != size_hw:
        raise RetabError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{size_hw[1]}x{size_hw[0]}")
    return mask


def load_score_stack(path: Path, size_hw: tuple[int, int], labels=None) -> tuple[list[int], np.ndarray]:
    """A CRF label dict {0: bg, k+1: map} as (sorted keys, float32 HxWxK) checked against the image
    (and, given its image-level vector `labels`, its keys against the picture's classes)."""
    scores = load_score_dict(path)
    keys = dict_keys(scores, path)
    if labels is not None:
        check_keys(scores, labels, True, path, "the affinity training (CRF label dicts)")
    if 0 not in keys:
        raise RetabError(f"{path}: CRF label dict has no background key 0")
    maps = {int(k): np.asarray(v, np.float32) for k, v in scores.items()}
    for k in keys:
        if maps[k].shape != size_hw:
            raise RetabError(f"{path}: map {k} has shape {maps[k].shape}, the image is {size_hw}")
        if not np.isfinite(maps[k]).all():
            raise RetabError(f"{path}: map {k} holds NaN or infinite values")
    return keys, np.stack([maps[k] for k in keys], axis=-1)


def load_target_for(boundary_target_dir, name: str, size_hw: tuple[int, int]) -> np.ndarray:
    """A boundary target map (255 non-boundary, 0 boundary) checked against the image size."""
    path = Path(boundary_target_dir) / f"{name}.png"
    target = voc.load_label_png(path)
    if target.shape != size_hw:
        raise RetabError(f"{path}: target map is {target.shape[1]}x{target.shape[0]} but the image "
                         f"is {size_hw[1]}x{size_hw[0]}")
    return target


def image_size_hw(img) -> tuple[int, int]:
    return img.size[1], img.size[0]


# ----------------------------------------------------------------------------- label grids (SPEC 4)

def average_pool(maps: np.ndarray, k: int) -> np.ndarray:
    """k x k mean pooling of KxHxW maps (a remainder smaller than k is dropped, as AvgPool2d)."""
    c, h, w = maps.shape
    h, w = h // k * k, w // k * k
    return maps[:, :h, :w].reshape(c, h // k, k, w // k, k).mean(axis=(2, 4), dtype=np.float64)


def base_label_grid(mask_crop: np.ndarray, grid: tuple[int, int], sampling: str = "nearest") -> np.ndarray:
    """A base sample's GT mask crop nearest-downsampled to grid = (rows, cols): PyTorch's rule of
    `sampling` (transforms.GRID_SAMPLINGS; "nearest", the published one, takes each cell's top-left pixel)."""
    return nearest_resize(np.asarray(mask_crop), grid[0], grid[1], sampling).astype(np.uint8)


def _stack_dict(scores: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(int(k) for k in scores)
    return np.asarray(keys), np.stack([np.asarray(scores[k], np.float32) for k in keys])


def novel_label_grid(la_crop: Mapping[int, np.ndarray], ha_crop: Mapping[int, np.ndarray],
                     target_crop: np.ndarray | None = None,
                     stride: int = FEATURE_STRIDE, sampling: str = "nearest") -> np.ndarray:
    """A novel sample's label grid from its cropped (and flipped) la / ha CRF maps.

    la_crop / ha_crop: {label value: HxW score map}, key 0 = background. Scores are stride x stride
    average-pooled; label = the label value of the argmax of la; in this order:
    argmax la is background -> 255; argmax ha is background -> 0; every pooled score (la and ha)
    below 1e-5, i.e. the cell lies in the crop padding -> 255; and, given a boundary target crop
    (255 non-boundary, 0 boundary), where its nearest-downsample (`sampling`) to the grid is 0 -> 255.
    (The published code labelled with the argmax's position among the present keys instead of the
    label value; as both dicts carry the same keys this yields the same affinity pairs.)
    """
    la_keys, la = _stack_dict(la_crop)
    ha_keys, ha = _stack_dict(ha_crop)
    la_pooled = average_pool(la, stride)
    ha_pooled = average_pool(ha, stride)
    la_label = la_keys[la_pooled.argmax(axis=0)]
    ha_label = ha_keys[ha_pooled.argmax(axis=0)]
    grid = la_label.astype(np.uint8)
    grid[la_label == 0] = voc.IGNORE
    grid[ha_label == 0] = 0
    no_score = np.maximum(la_pooled.max(axis=0), ha_pooled.max(axis=0)) < NO_SCORE
    grid[no_score] = voc.IGNORE
    if target_crop is not None:
        target_grid = nearest_resize(np.asarray(target_crop), grid.shape[0], grid.shape[1], sampling)
        grid[target_grid == 0] = voc.IGNORE
    return grid


# ----------------------------------------------------------------------------- base classes

class SeededTrainDataset(Dataset):
    """Names, a VOC root and per-sample randomness from (seed, epoch, index)."""

    def __init__(self, names: Iterable[str], voc_root, seed: int = 0):
        self.names = list(names)
        self.voc_root = Path(voc_root)
        self.seed = int(seed)
        # shared memory: set_epoch in the main process is seen by persistent DataLoader workers too
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.names)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def rng(self, index: int) -> np.random.Generator:
        return sample_rng(self.seed, self.epoch, index)


def _check_crop_size(crop_size: int, multiple: int = 1) -> int:
    if crop_size <= 0 or crop_size % multiple:
        raise RetabError(f"crop size must be a positive multiple of {multiple}, got {crop_size}")
    return int(crop_size)


# ----------------------------------------------------------------------------- classification

class ClsTrainDataset(SeededTrainDataset):
    """train_cls (SPEC 3) -> (image float32 [3, crop, crop], image-level labels float32 [20])."""

    def __init__(self, names, voc_root, image_labels: Callable[[str], np.ndarray] | Mapping,
                 crop_size: int = 448, resize_long: tuple[int, int] = (256, 512), seed: int = 0,
                 jitter: ColorJitter = DEFAULT_JITTER):
        super().__init__(names, voc_root, seed)
        if not 0 < resize_long[0] <= resize_long[1]:
            raise RetabError(f"resize-long range must satisfy 0 < lo <= hi, got {resize_long}")
        self.image_labels = image_labels
        self.crop_size = _check_crop_size(crop_size)
        self.resize_long = (int(resize_long[0]), int(resize_long[1]))
        self.jitter = jitter

    def __getitem__(self, index: int):
        name = self.names[index]
        img = load_voc_image(self.voc_root, name)
        image = augment_for_classification(img, self.rng(index), self.crop_size, self.resize_long,
                                           self.jitter)
        labels = lookup_labels(self.image_labels, name)
        return torch.from_numpy(image), torch.from_numpy(labels)


def lookup_labels(image_labels, name: str) -> np.ndarray:
    """Image-level labels from a `voc.ImageLabels` (callable) or a plain dict name -> vector."""
    if isinstance(image_labels, Mapping):
        if name not in image_labels:
            raise RetabError(f"no image-level labels for {name}")
        vec = image_labels[name]
    else:
        vec = image_labels(name)
    return np.array(vec, dtype=np.float32)


# ----------------------------------------------------------------------------- inference

class ImageDataset(Dataset):
    """Inference over names -> (name, PIL RGB image, labels float32[20] or None).

    The CAM and random-walk stages do their own (multi-scale) processing. PIL images do not
    collate: iterate the dataset directly or use DataLoader(batch_size=None) (which still turns
    the label vector into a tensor).
    """

    def __init__(self, names: Iterable[str], voc_root, image_labels=None):
        self.names = list(names)
        self.voc_root = Path(voc_root)
        self.image_labels = image_labels

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        name = self.names[index]
        img = load_voc_image(self.voc_root, name)
        labels = None if self.image_labels is None else lookup_labels(self.image_labels, name)
        return name, img, labels


# ----------------------------------------------------------------------------- boundary

class BoundaryTrainDataset(SeededTrainDataset):
    """train_boundary (SPEC 4) -> (image float32 [3, crop, crop], GT mask int64 [crop, crop]).

    Augmentation: jitter, joint crop (mask canvas 0 = background), normalise, joint flip.
    """

    def __init__(self, names, voc_root, crop_size: int = 448, seed: int = 0,
                 jitter: ColorJitter = DEFAULT_JITTER):
        super().__init__(names, voc_root, seed)
        self.crop_size = _check_crop_size(crop_size)
        self.jitter = jitter

    def __getitem__(self, index: int):
        name = self.names[index]
        img = load_voc_image(self.voc_root, name)
        mask = load_mask_for(self.voc_root, name, image_size_hw(img))
        image, (mask_crop,) = augment_with_labels(img, self.rng(index), self.crop_size,
                                                  [(mask, 0)], self.jitter)
        return torch.from_numpy(image), torch.from_numpy(mask_crop.astype(np.int64))


# ----------------------------------------------------------------------------- affinity

class AffinityTrainDataset(SeededTrainDataset):
    """train_affmixed_boundary (SPEC 4), and train_aff (SPEC 3) with base_names empty, no boundary_target_dir.

    -> (image float32 [3, crop, crop], (bg_pos, fg_pos, neg)) from `retab.affinity.affinity_labels`
    on the (crop/8 x crop/8) label grid. Base samples (name in base_names) use their GT mask,
    cropped with canvas `base_pad_label` (default 0 = background, the published joint crop; 255
    would make the padding ignored instead). Novel samples use their la / ha CRF dicts
    ({crf_la_dir,crf_ha_dir}/{name}.npy, canvas 0) and, with boundary_target_dir, the boundary target map
    {boundary_target_dir}/{name}.png, canvas TARGET_PAD = 0 (boundary, as published): a cell whose sampled
    pixel lies in the padding is 255 even when part of it is picture, which the no-score rule (cells
    entirely in the padding) alone would keep. `grid_sampling` is how the GT masks and target maps
    are sampled onto the grid (transforms.GRID_SAMPLINGS; published "nearest": each cell's top-left
    pixel; "nearest-exact": its centre, so there a cell is 255 when its centre is padding).
    image_labels (name -> float32[20]), when given, are what a novel sample's CRF dict keys must be
    (key 0 plus class index + 1 of each class: retab.score_format).
    """

    def __init__(self, names, voc_root, crf_la_dir, crf_ha_dir, base_names=frozenset(),
                 boundary_target_dir=None, crop_size: int = 448, radius: int = AFFINITY_RADIUS, seed: int = 0,
                 jitter: ColorJitter = DEFAULT_JITTER, base_pad_label: int = BASE_PAD_LABEL,
                 grid_sampling: str = "nearest", image_labels: Mapping | None = None):
        super().__init__(names, voc_root, seed)
        self.image_labels = image_labels  # name -> float32[20]: the CRF dicts' keys are checked against it
        self.crf_la_dir = Path(crf_la_dir)
        self.crf_ha_dir = Path(crf_ha_dir)
        self.base_names = frozenset(base_names)
        self.boundary_target_dir = None if boundary_target_dir is None else Path(boundary_target_dir)
        self.crop_size = _check_crop_size(crop_size, FEATURE_STRIDE)
        self.radius = int(radius)
        self.jitter = jitter
        self.base_pad_label = int(base_pad_label)
        self.grid_sampling = check_sampling(grid_sampling)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.crop_size // FEATURE_STRIDE, self.crop_size // FEATURE_STRIDE

    def sample_with_grid(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(normalised CHW image crop, uint8 label grid) of one sample; the affinity pairs come after."""
        name = self.names[index]
        img = load_voc_image(self.voc_root, name)
        size_hw = image_size_hw(img)
        rng = self.rng(index)
        if name in self.base_names:
            mask = load_mask_for(self.voc_root, name, size_hw)
            image, (mask_crop,) = augment_with_labels(
                img, rng, self.crop_size, [(mask, self.base_pad_label)], self.jitter)
            return image, base_label_grid(mask_crop, self.grid_shape, self.grid_sampling)
        classes = None if self.image_labels is None else lookup_labels(self.image_labels, name)
        la_keys, la = load_score_stack(self.crf_la_dir / f"{name}.npy", size_hw, classes)
        ha_keys, ha = load_score_stack(self.crf_ha_dir / f"{name}.npy", size_hw, classes)
        labels = [(la, 0.0), (ha, 0.0)]
        if self.boundary_target_dir is not None:
            labels.append((load_target_for(self.boundary_target_dir, name, size_hw), TARGET_PAD))
        image, crops = augment_with_labels(img, rng, self.crop_size, labels, self.jitter)
        la_crop = {k: crops[0][..., i] for i, k in enumerate(la_keys)}
        ha_crop = {k: crops[1][..., i] for i, k in enumerate(ha_keys)}
        target_crop = crops[2] if self.boundary_target_dir is not None else None
        return image, novel_label_grid(la_crop, ha_crop, target_crop, sampling=self.grid_sampling)

    def __getitem__(self, index: int):
        image, grid = self.sample_with_grid(index)
        pairs = affinity_labels(grid, radius=self.radius)
        return torch.from_numpy(image), tuple(torch.from_numpy(np.asarray(p, np.float32)) for p in pairs)


# ----------------------------------------------------------------------------- segmentation (SPEC 7)

SEG_PAD_LABEL = voc.IGNORE  # the crop's canvas carries no label: ignored by the loss


class SegTrainDataset(SeededTrainDataset):
    """train_seg (SPEC 7) -> (image float32 [3, crop, crop], labels int64 [crop, crop]).

    Two label sources: a name in `gt_names` uses its SegmentationClassAug mask, any other name its
    pseudo label PNG `{pseudo_dir}/{name}.png` (0..20, 255 ignore). Every label file is checked
    at construction (it exists, its values are labels), so a bad one stops the run before
    training, named.

    Augmentation: random scale (long side uniform in `resize_long`, image bicubic, labels nearest
    with PyTorch's rule; None: no rescaling), then `augment_with_labels`: jitter, joint crop (image
    canvas black, label canvas 255), normalise, joint flip.
    """

    def __init__(self, names, voc_root, gt_names=frozenset(), pseudo_dir=None, crop_size: int = 321,
                 resize_long: tuple[int, int] | None = (250, 750), seed: int = 0,
                 jitter: ColorJitter = DEFAULT_JITTER):
        super().__init__(names, voc_root, seed)
        self.gt_names = frozenset(gt_names)
        self.pseudo_dir = None if pseudo_dir is None else Path(pseudo_dir)
        self.crop_size = _check_crop_size(crop_size)
        if resize_long is not None and not 0 < resize_long[0] <= resize_long[1]:
            raise RetabError(f"resize-long range must satisfy 0 < lo <= hi, got {resize_long}")
        self.resize_long = None if resize_long is None else (int(resize_long[0]), int(resize_long[1]))
        self.jitter = jitter
        self.check_label_files()

    def uses_gt(self, name: str) -> bool:
        return name in self.gt_names

    def label_path(self, name: str) -> Path:
        if self.uses_gt(name):
            return voc.mask_path(self.voc_root, name)
        if self.pseudo_dir is None:
            raise RetabError(f"{name} needs a pseudo label but no pseudo label folder was given")
        return self.pseudo_dir / f"{name}.png"

    def check_label_files(self) -> None:
        """Every label file exists and holds labels only (voc.load_gt_mask), before any training."""
        for name in progress(self.names, desc="checking label maps", leave=False, disable=len(self.names) < 500):
            path = self.label_path(name)
            if not path.is_file():
                what = "GT mask" if self.uses_gt(name) else "pseudo label"
                raise RetabError(f"{path}: {what} of {name} not found")
            voc.load_gt_mask(path)

    def load_labels(self, name: str, size_hw: tuple[int, int]) -> np.ndarray:
        path = self.label_path(name)
        labels = voc.load_gt_mask(path)
        if labels.shape != size_hw:
            raise RetabError(f"{path}: label map is {labels.shape[1]}x{labels.shape[0]} but the image "
                             f"is {size_hw[1]}x{size_hw[0]}")
        return labels

    def __getitem__(self, index: int):
        name = self.names[index]
        img = load_voc_image(self.voc_root, name)
        labels = self.load_labels(name, image_size_hw(img))
        rng = self.rng(index)
        if self.resize_long is not None:
            img = random_resize_long(img, rng, *self.resize_long)
            labels = nearest_resize(labels, img.height, img.width)
        image, (label_crop,) = augment_with_labels(img, rng, self.crop_size, [(labels, SEG_PAD_LABEL)],
                                                   self.jitter)
        return torch.from_numpy(image), torch.from_numpy(label_crop.astype(np.int64))
