"""Data pipeline: augmentations (`retab.data.transforms`) and datasets (`retab.data.datasets`)."""
from retab.data.datasets import (
    AffinityTrainDataset,
    BoundaryTrainDataset,
    ClsTrainDataset,
    ImageDataset,
    SeededTrainDataset,
    SegTrainDataset,
    base_label_grid,
    novel_label_grid,
)
from retab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    augment_for_classification,
    augment_with_labels,
    image_to_tensor,
    normalize_image,
    sample_rng,
)

__all__ = [
    "AffinityTrainDataset", "BoundaryTrainDataset", "ClsTrainDataset", "ImageDataset",
    "SeededTrainDataset", "SegTrainDataset", "base_label_grid", "novel_label_grid",
    "IMAGENET_MEAN", "IMAGENET_STD",
    "ColorJitter", "augment_for_classification", "augment_with_labels", "image_to_tensor",
    "normalize_image", "sample_rng",
]
