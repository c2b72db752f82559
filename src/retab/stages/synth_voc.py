"""`retab synth_voc --out DIR [--seed S] [--scale tiny|small|medium] [--image_side MIN MAX] [--overwrite]`

Generates a synthetic mini-VOC: a complete PASCAL VOC 2012 root (JPEGImages, Annotations,
SegmentationClass, SegmentationObject, SegmentationClassAug, ImageSets/Segmentation) whose pictures
are drawn by `retab.synth.scene`. As in VOC, the masks of the train and val images carry a 255 band
along every object outline, while the other images (the "SBD" part, present only in
SegmentationClassAug) have unbanded masks; SegmentationClass and SegmentationObject exist only for
trainval. The tree is written into a hidden sibling folder and renamed to DIR at the end, with a
marker file `.synth_voc.json` (seed, scale, image sides, generator version) written last: a rerun with the same
parameters finds the marker and skips; an interrupted run leaves no half-written DIR.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retab import voc
from retab.misc.args import setup_logging
from retab.misc.errors import RetabError
from retab.misc.fileio import save_image, write_text
from retab.voc import save_label_png
from retab.misc.outputs import check_writable
from retab.misc.steps import nothing_to_do
from retab.synth.scene import IMAGE_SIDE, Sample, outline_band, render_sample
from retab.misc.progress import progress

log = logging.getLogger("retab")

GENERATOR_VERSION = 7  # bump whenever the generated files change (7: outdoor classes against the sky too)
MARKER = ".synth_voc.json"
YEARS = range(2007, 2013)
JPEG_QUALITY = 90


@dataclass(frozen=True)
class ScaleSizes:
    train: int
    val: int
    sbd: int  # images outside trainval: only in SegmentationClassAug, without the outline band

    @property
    def total(self) -> int:
        return self.train + self.val + self.sbd


# train and val hold at least 20 images each, so that every class is the first class of one of them
SCALES = {
    "tiny": ScaleSizes(train=20, val=20, sbd=24),
    "small": ScaleSizes(train=150, val=120, sbd=290),
    "medium": ScaleSizes(train=500, val=400, sbd=1100),
}


@dataclass(frozen=True)
class PlannedImage:
    index: int  # position in generation order; seeds the image's random stream
    name: str
    split: str  # "train", "val" or "sbd"
    first_class: int  # VOC label 1..20 that the image surely contains

    @property
    def banded(self) -> bool:
        return self.split in ("train", "val")


# ----------------------------------------------------------------------------- plan

def plan_dataset(seed: int, scale: str) -> list[PlannedImage]:
    """Names, splits and first classes of every image; images are rendered from (seed, index)."""
    if scale not in SCALES:
        raise RetabError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    sizes = SCALES[scale]
    rng = np.random.default_rng([seed, 0])
    names = _voc_names(rng, sizes.total)
    order = rng.permutation(sizes.total)
    splits = np.full(sizes.total, "sbd", dtype=object)
    splits[order[:sizes.train]] = "train"
    splits[order[sizes.train:sizes.train + sizes.val]] = "val"
    # within each split the first classes run through shuffled rounds of all 20 classes
    first = np.zeros(sizes.total, int)
    for split in ("train", "val", "sbd"):
        members = np.flatnonzero(splits == split)
        rounds = [rng.permutation(voc.NUM_CLASSES) + 1 for _ in range(-(-len(members) // voc.NUM_CLASSES))]
        first[members] = np.concatenate(rounds)[:len(members)]
    return [PlannedImage(i, names[i], str(splits[i]), int(first[i])) for i in range(sizes.total)]


def _voc_names(rng, count: int) -> list[str]:
    """VOC-like sorted names `{year}_{index:06d}`, spread over 2007..2012 with random gaps."""
    per_year = np.full(len(YEARS), count // len(YEARS))
    per_year[: count % len(YEARS)] += 1
    names = []
    for year, n in zip(YEARS, per_year):
        index = int(rng.integers(1, 50))
        for _ in range(n):
            names.append(f"{year}_{index:06d}")
            index += int(rng.integers(1, 25))
    return names


# ----------------------------------------------------------------------------- files of one image

def banded(labels: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """VOC's mask: 255 on the outline band of every object (drawn from the instance outlines)."""
    out = labels.copy()
    out[outline_band(instances)] = voc.IGNORE
    return out


def annotation_xml(name: str, sample: Sample) -> str:
    """VOC 2012 annotation: one <object> per instance, boxes of the visible pixels (1-based)."""
    height, width = sample.instances.shape
    root = ET.Element("annotation")
    _sub(root, "folder", "VOC2012")
    _sub(root, "filename", f"{name}.jpg")
    source = _sub(root, "source")
    _sub(source, "database", "The VOC2012 Database")
    _sub(source, "annotation", "PASCAL VOC2012")
    _sub(source, "image", "retab synth_voc")
    size = _sub(root, "size")
    _sub(size, "width", str(width))
    _sub(size, "height", str(height))
    _sub(size, "depth", "3")
    _sub(root, "segmented", "1")
    for label, (xmin, ymin, xmax, ymax) in zip(sample.labels, sample.boxes()):
        obj = _sub(root, "object")
        _sub(obj, "name", voc.CATEGORIES[label - 1])
        _sub(obj, "pose", "Unspecified")
        touches_border = xmin == 1 or ymin == 1 or xmax == width or ymax == height
        _sub(obj, "truncated", "1" if touches_border else "0")
        _sub(obj, "difficult", "0")
        box = _sub(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            _sub(box, tag, str(value))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _sub(parent, tag, text=None):
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = text
    return el


def write_image_files(root: Path, item: PlannedImage, sample: Sample) -> np.ndarray:
    """All files of one image; returns its SegmentationClassAug mask."""
    labels = sample.class_mask()
    save_image(voc.image_path(root, item.name), Image.fromarray(sample.image), quality=JPEG_QUALITY)
    write_text(voc.xml_path(root, item.name), annotation_xml(item.name, sample))
    if item.banded:
        aug = banded(labels, sample.instances)
        save_label_png(voc.mask_path(root, item.name, aug=False), aug)
        save_label_png(root / "SegmentationObject" / f"{item.name}.png", banded(sample.instances, sample.instances))
    else:
        aug = labels
    save_label_png(voc.mask_path(root, item.name, aug=True), aug)
    return aug


# ----------------------------------------------------------------------------- whole dataset

def generate(out, seed: int = 0, scale: str = "small", overwrite: bool = False,
             image_side: tuple[int, int] = IMAGE_SIDE) -> dict:
    """Write the dataset to `out` (see the module docstring); returns the summary counts."""
    out = Path(out)
    if seed < 0:
        raise RetabError(f"--seed must be a non-negative integer, got {seed}")
    image_side = check_image_side(image_side)
    plan = plan_dataset(seed, scale)
    params = {"generator": "retab synth_voc", "version": GENERATOR_VERSION, "seed": seed, "scale": scale}
    if image_side != IMAGE_SIDE:  # the default is not recorded, so older markers still match
        params["image_side"] = list(image_side)
    described = f"seed {seed}, scale {scale}, image sides {image_side[0]}..{image_side[1]}"
    existing = read_marker(out)
    if existing is not None and all(existing.get(k) == params.get(k) for k in (*params, "image_side")):
        log.info("%s already holds the synthetic mini-VOC (%s); skipping", out, described)
        nothing_to_do()
        return existing["summary"]
    if out.exists() and not overwrite and not _is_empty_dir(out):
        raise RetabError(f"{out}: exists and is not a synth_voc dataset with {described}; "
                         "pass --overwrite to replace it")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        start = time.perf_counter()
        summary = _write_dataset(tmp, seed, plan, image_side)
        write_text(tmp / MARKER, json.dumps({**params, "summary": summary}, indent=1) + "\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(format_summary(out, params, summary, time.perf_counter() - start))
    return summary


def check_image_side(side) -> tuple[int, int]:
    low, high = (int(v) for v in side)
    if not 64 <= low <= high <= 2048:
        raise RetabError(f"--image_side must be MIN MAX with 64 <= MIN <= MAX <= 2048, got {low} {high}")
    return low, high


def _write_dataset(root: Path, seed: int, plan: list[PlannedImage], image_side=IMAGE_SIDE) -> dict:
    novel_counts = np.zeros((voc.NUM_FOLDS, 2), int)  # fold -> (base, novel) samples of train_aug
    objects = {split: np.zeros(voc.NUM_CLASSES, int) for split in ("train", "val", "train_aug")}
    images = {split: np.zeros(voc.NUM_CLASSES, int) for split in ("train", "val")}
    for item in progress(plan, desc="synth_voc", unit="img"):
        sample = render_sample(seed, item.index, item.first_class, image_side)
        aug = write_image_files(root, item, sample)
        in_train_aug = item.split != "val"
        counted = ([item.split] if item.split in objects else []) + (["train_aug"] if in_train_aug else [])
        for split in counted:
            np.add.at(objects[split], np.asarray(sample.labels) - 1, 1)
        if item.split in images:
            images[item.split][np.unique(sample.labels) - 1] += 1
        if in_train_aug:
            for fold in range(voc.NUM_FOLDS):
                novel_counts[fold, int(voc.is_novel_mask(aug, fold))] += 1
    lists = root / "ImageSets" / "Segmentation"
    train = [item.name for item in plan if item.split == "train"]
    val = [item.name for item in plan if item.split == "val"]
    write_text(lists / "train.txt", voc.list_lines(train))
    write_text(lists / "val.txt", voc.list_lines(val))
    write_text(lists / "trainval.txt", voc.list_lines(sorted(train + val)))
    summary = {
        "images": len(plan), "train": len(train), "val": len(val), "trainval": len(train) + len(val),
        "train_aug": len(plan) - len(val),
        "folds": {str(f): {"base": int(b), "novel": int(n)} for f, (b, n) in enumerate(novel_counts)},
        "objects": {split: dict(zip(voc.CATEGORIES, map(int, counts))) for split, counts in objects.items()},
    }
    _check_coverage(images, summary)
    return summary


def _check_coverage(images: dict, summary: dict) -> None:
    for split, counts in images.items():
        missing = [voc.CATEGORIES[c] for c in np.flatnonzero(counts == 0)]
        if missing:
            log.warning("classes missing from %s: %s", split, ", ".join(missing))
    for fold, counts in summary["folds"].items():
        if min(counts.values()) < 0.1 * summary["train_aug"]:
            log.warning("fold %s has few base or novel samples in train_aug: %s", fold, counts)


def _replace(new: Path, out: Path) -> None:
    """Rename the finished tree onto `out`, moving an old `out` aside first and removing it after."""
    if os.path.lexists(out):
        old = new.with_name(new.name + ".old")
        os.rename(out, old)
        os.rename(new, out)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.rename(new, out)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def read_marker(out) -> dict | None:
    """The parameters of a complete generation in `out`, or None."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "summary" in data else None


def format_summary(out, params: dict, summary: dict, seconds: float) -> str:
    lines = [
        f"synth_voc: {summary['images']} images in {out} (seed {params['seed']}, scale {params['scale']}) "
        f"in {seconds:.1f} s",
        f"  train {summary['train']}, val {summary['val']}, trainval {summary['trainval']}, "
        f"train_aug {summary['train_aug']} (of which {summary['train_aug'] - summary['train']} SBD-only)",
    ]
    for fold, counts in summary["folds"].items():
        lines.append(f"  fold {fold}: train_aug {counts['base']} base / {counts['novel']} novel samples")
    lines.append(f"  objects per class: {'class':<12} {'train_aug':>9} {'train':>6} {'val':>6}")
    objects = summary["objects"]
    for name in voc.CATEGORIES:
        lines.append(f"  {'':<19}{name:<12} {objects['train_aug'][name]:>9} {objects['train'][name]:>6} "
                     f"{objects['val'][name]:>6}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="retab synth_voc", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="VOC 2012 root to create")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--scale", choices=list(SCALES), default="small",
                        help="tiny (tests, %d images), small (demo, %d), medium (%d); default small"
                        % tuple(SCALES[s].total for s in ("tiny", "small", "medium")))
    parser.add_argument("--image_side", type=int, nargs=2, metavar=("MIN", "MAX"), default=IMAGE_SIDE,
                        help="range of picture widths and heights in pixels (default %d %d; VOC's "
                        "pictures are about 500 x 375)" % IMAGE_SIDE)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    args = parser.parse_args(argv)
    setup_logging()
    check_writable(args.out, "--out")
    generate(args.out, seed=args.seed, scale=args.scale, overwrite=args.overwrite, image_side=tuple(args.image_side))
    return 0
