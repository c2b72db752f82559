"""PASCAL VOC 2012 data layer: class names, palette, list files, folds, images, masks, labels.

Everything that knows about the VOC directory layout or the list-file formats lives here
(SPEC section 1), so that every stage reads the dataset the same way.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from retab.misc.errors import RetabError
from retab.misc.fileio import load_pickled_dict, save_palette_png
from retab.misc.progress import progress

CATEGORIES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
LABEL_NAMES = ("background",) + CATEGORIES  # label value -> name, 0..20
NUM_CLASSES = 20  # object classes (image-level labels)
NUM_LABELS = 21  # segmentation labels incl. background
IGNORE = 255
NUM_FOLDS = 4
CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORIES)}


def voc_palette() -> list[int]:
    """The VOC colour map as a flat list of 768 ints (bit-interleaved label -> RGB)."""
    pal = []
    for label in range(256):
        r = g = b = 0
        c = label
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


# ----------------------------------------------------------------------------- folds

def save_label_png(path, labels: np.ndarray) -> None:
    """8-bit palette PNG with the VOC colour map; the stored values are the labels."""
    save_palette_png(path, labels, voc_palette())


def check_fold(fold: int) -> int:
    if fold not in range(NUM_FOLDS):
        raise RetabError(f"fold must be one of 0..{NUM_FOLDS - 1}, got {fold!r}")
    return fold


def novel_labels(fold: int) -> list[int]:
    """Novel segmentation labels of a PASCAL-5i fold: 5F+1 .. 5F+5."""
    check_fold(fold)
    return list(range(5 * fold + 1, 5 * fold + 6))


def base_labels(fold: int) -> list[int]:
    """The 16 base labels of a fold: background plus the 15 non-novel object labels."""
    novel = set(novel_labels(fold))
    return [lab for lab in range(NUM_LABELS) if lab not in novel]


def is_novel_mask(mask: np.ndarray, fold: int) -> bool:
    """A sample is novel when its mask holds any pixel of a novel label (SPEC 1)."""
    return bool(np.isin(mask, novel_labels(fold)).any())


# ----------------------------------------------------------------------------- list files

def fold_list_path(list_dir, fold: int, part: str, ext: str = ".txt") -> Path:
    """`trainaug_fold{F}_{base|novel}{ext}` inside a list folder."""
    return Path(list_dir) / f"trainaug_fold{fold}_{part}{ext}"


def derived_lists(list_dir) -> list[Path]:
    """Every file `retab make_splits` writes into a list folder (the drivers' voc12/)."""
    list_dir = Path(list_dir)
    paths = [list_dir / f for f in ("train_aug.txt", "train.txt", "val.txt", "cls_labels.npy")]
    return paths + [fold_list_path(list_dir, f, p, e) for f in range(NUM_FOLDS)
                    for p in ("base", "novel") for e in (".txt", ".npy")]


def fold_list(list_dir, fold: int, part: str) -> Path:
    """The fold's base or novel list in `list_dir`: the .txt, else the .npy (make_splits writes both)."""
    check_fold(fold)
    candidates = [fold_list_path(list_dir, fold, part, ext) for ext in (".txt", ".npy")]
    for path in candidates:
        if path.is_file():
            return path
    raise RetabError(f"{candidates[0]}: fold {fold} {part} list not found (nor {candidates[1].name}); "
                     f"derive the lists with `retab make_splits --voc12_root VOC2012 --out_dir {list_dir}`")


def name_from_list_line(line: str) -> str | None:
    """`2007_000032` or `/JPEGImages/2007_000032.jpg /SegmentationClassAug/...png` -> name."""
    line = line.strip()
    if not line:
        return None
    first = line.split()[0]
    return os.path.splitext(os.path.basename(first))[0]


def read_name_list(path: str | os.PathLike) -> list[str]:
    """Image names from a list file: plain names, SBD-style lines, or a `.npy` array of names."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: list file not found")
    if path.suffix == ".npy":
        from retab.misc.safe_pickle import load_npy

        arr = load_npy(path, "name list")
        return [name_from_list_line(str(n)) for n in np.asarray(arr).reshape(-1)]
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the first name
    except UnicodeDecodeError as exc:
        raise RetabError(f"{path}: not a text list of image names ({exc.reason} at byte {exc.start})") from None
    return [name for name in map(name_from_list_line, text.splitlines()) if name is not None]


def sbd_line(name: str) -> str:
    return f"/JPEGImages/{name}.jpg /SegmentationClassAug/{name}.png"


def list_lines(names, sbd_style: bool = False) -> str:
    return "".join((sbd_line(n) if sbd_style else n) + "\n" for n in names)


# ----------------------------------------------------------------------------- paths and loading

def image_path(voc_root, name: str) -> Path:
    return Path(voc_root) / "JPEGImages" / f"{name}.jpg"


def mask_path(voc_root, name: str, aug: bool = True) -> Path:
    return Path(voc_root) / ("SegmentationClassAug" if aug else "SegmentationClass") / f"{name}.png"


def xml_path(voc_root, name: str) -> Path:
    return Path(voc_root) / "Annotations" / f"{name}.xml"


def load_image(path) -> Image.Image:
    """An RGB PIL image; a missing or undecodable file is a RetabError naming it."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001
        raise RetabError(f"{path}: cannot decode image ({exc})") from None


def load_label_png(path) -> np.ndarray:
    """A label PNG (palette or grey) as uint8 HxW with its stored values (not the colours)."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: label PNG not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise RetabError(f"{path}: expected an 8-bit palette or grey PNG, got mode {img.mode}")
            return np.array(img, dtype=np.uint8)
    except RetabError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RetabError(f"{path}: cannot decode PNG ({exc})") from None


def unknown_label_values(labels: np.ndarray, allow_ignore: bool = True) -> list[int]:
    """The values of a uint8 label map outside 0..20 (and 255 unless allow_ignore is False)."""
    counts = np.bincount(np.asarray(labels, np.uint8).reshape(-1), minlength=256)
    counts[:NUM_LABELS] = 0
    if allow_ignore:
        counts[IGNORE] = 0
    return [int(v) for v in np.flatnonzero(counts)]


def check_label_values(labels: np.ndarray, path, allow_ignore: bool = True, what: str = "label values") -> np.ndarray:
    """`labels` when every value is a label 0..20 (or 255 with allow_ignore); else a RetabError
    naming the file: a stage would otherwise train on or score a class that does not exist."""
    unknown = unknown_label_values(labels, allow_ignore)
    if unknown:
        expected = "0..20 and 255" if allow_ignore else "0..20"
        raise RetabError(f"{path}: unknown {what} {unknown} (expected {expected})")
    return labels


def load_gt_mask(path) -> np.ndarray:
    """A ground-truth mask (SegmentationClass / SegmentationClassAug or a pseudo label PNG) as
    uint8 HxW, its values checked: the one loader of GT masks of every stage."""
    return check_label_values(load_label_png(path), path)


def check_gt_masks(names, voc_root) -> None:
    """Fail before training (not in a loader worker) when a GT mask is missing or holds a value
    that is no label (load_gt_mask, the check of every stage)."""
    for name in progress(names, desc="checking GT masks", leave=False, disable=len(names) < 500):
        path = mask_path(voc_root, name)
        if not path.is_file():
            raise RetabError(f"{path}: GT mask of the base sample {name} not found")
        load_gt_mask(path)


def labels_from_xml(path) -> np.ndarray:
    """Image-level labels: float32[20] with 1 for every `<object><name>` in the annotation."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: annotation not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise RetabError(f"{path}: malformed XML ({exc})") from None
    vec = np.zeros(NUM_CLASSES, np.float32)
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in CATEGORY_INDEX:
            raise RetabError(f"{path}: unknown class {name!r}")
        vec[CATEGORY_INDEX[name]] = 1.0
    return vec


def load_cls_labels(path) -> dict[str, np.ndarray]:
    """The published `cls_labels.npy`: a pickled dict name -> float32[20]."""

    obj = load_pickled_dict(path, "cls_labels dict", "name -> float32[20]")
    return {str(k): np.asarray(v, np.float32) for k, v in obj.items()}


class ImageLabels:
    """Image-level labels by name, from a cls_labels.npy if given, else from the XML files."""

    def __init__(self, voc_root=None, cls_labels_path=None):
        self.voc_root = voc_root
        self.table = load_cls_labels(cls_labels_path) if cls_labels_path else None

    def __call__(self, name: str) -> np.ndarray:
        if self.table is not None:
            if name not in self.table:
                raise RetabError(f"no image-level labels for {name} in the cls_labels file")
            vec = self.table[name]
        else:
            vec = labels_from_xml(xml_path(self.voc_root, name))
        if vec.shape != (NUM_CLASSES,):
            raise RetabError(f"{name}: image-level labels must have shape (20,), got {vec.shape}")
        if not vec.any():
            raise RetabError(f"{name}: image has no image-level labels")
        return vec
