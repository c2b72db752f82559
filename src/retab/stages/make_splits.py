"""`retab make_splits`: derive every list the pipeline needs from a VOC tree itself (SPEC 1).

Writes into --out_dir (never into the dataset):
  train_aug.txt                    SegmentationClassAug minus val (SBD-style lines, as published)
  train.txt, val.txt               copies of ImageSets/Segmentation/{train,val}.txt (plain names)
  cls_labels.npy                   pickled dict name -> float32[20] from the XML annotations
  trainaug_fold{F}_{base,novel}.txt / .npy   base and novel samples of train_aug for each fold

A sample is novel in fold F when its SegmentationClassAug mask holds a pixel of a novel label;
the XML is not consulted for that (as the published lists were made).

`.voc12home` in --out_dir names the dataset the lists were made from: a rerun over complete lists of
the same dataset has nothing to do (delete the folder to remake them).
"""
from __future__ import annotations

import argparse
import logging
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from retab import voc
from retab.misc.args import setup_logging
from retab.misc.errors import RetabError
from retab.misc.fileio import save_npy, write_text
from retab.misc.outputs import check_writable
from retab.misc.progress import progress
from retab.misc.steps import nothing_to_do

log = logging.getLogger("retab")


def aug_mask_names(voc_root) -> list[str]:
    folder = Path(voc_root) / "SegmentationClassAug"
    if not folder.is_dir():
        raise RetabError(f"{folder}: SegmentationClassAug folder not found")
    return sorted(p.stem for p in folder.glob("*.png"))


def mask_label_set(path) -> frozenset[int]:
    """The labels a mask contains (255 and 0 included when present)."""
    return frozenset(int(v) for v in np.unique(voc.load_gt_mask(path)))


def split_by_fold(label_sets: dict[str, frozenset[int]], fold: int) -> tuple[list[str], list[str]]:
    """(base, novel) names, keeping the input order."""
    novel_set = set(voc.novel_labels(fold))
    base, novel = [], []
    for name, labels in label_sets.items():
        (novel if labels & novel_set else base).append(name)
    return base, novel


def read_label_sets(voc_root, names, workers: int | None = None) -> dict[str, frozenset[int]]:
    """Each Aug mask read once; all folds are derived from these label sets."""
    paths = [voc.mask_path(voc_root, n) for n in names]
    workers = workers or min(os.cpu_count() or 1, 8)
    desc = "reading masks"
    if workers > 1 and len(paths) > 200:
        with Pool(workers) as pool:
            sets = list(progress(pool.imap(mask_label_set, paths, chunksize=64), total=len(paths), desc=desc))
    else:
        sets = [mask_label_set(p) for p in progress(paths, desc=desc, disable=len(paths) < 200)]
    return dict(zip(names, sets))


SOURCE_MARKER = ".voc12home"


def made_from(list_dir, voc_root) -> bool:
    """True when list_dir holds every list, made from this same dataset (its resolved path)."""
    marker = Path(list_dir) / SOURCE_MARKER
    return (splits_complete(list_dir) and marker.is_file()
            and marker.read_text().strip() == str(Path(voc_root).resolve()))


def make_splits(voc_root, out_dir, workers: int | None = None) -> dict:
    """Write all lists; return {'train_aug': n, 'folds': {F: (n_base, n_novel)}}."""
    voc_root, out_dir = Path(voc_root).resolve(), Path(out_dir).resolve()
    if out_dir == voc_root or voc_root in out_dir.parents:
        raise RetabError(f"{out_dir}: the output folder must not be inside the dataset {voc_root}")
    check_writable(out_dir, "--out_dir")
    seg_lists = voc_root / "ImageSets" / "Segmentation"
    train = voc.read_name_list(seg_lists / "train.txt")
    val = voc.read_name_list(seg_lists / "val.txt")
    val_set = set(val)
    train_aug = [n for n in aug_mask_names(voc_root) if n not in val_set]
    if not train_aug:
        raise RetabError(f"{voc_root}: no SegmentationClassAug masks outside val.txt")
    log.info("%s: %d Aug masks outside val (train_aug), %d train, %d val", voc_root, len(train_aug),
             len(train), len(val))

    labelled = sorted(set(train_aug) | set(train) | val_set)
    cls_labels = {n: voc.labels_from_xml(voc.xml_path(voc_root, n)) for n in
                  progress(labelled, desc="reading annotations", disable=len(labelled) < 200)}
    label_sets = read_label_sets(voc_root, train_aug, workers)

    write_text(out_dir / "train_aug.txt", voc.list_lines(train_aug, sbd_style=True))
    write_text(out_dir / "train.txt", voc.list_lines(train))
    write_text(out_dir / "val.txt", voc.list_lines(val))
    save_npy(out_dir / "cls_labels.npy", cls_labels)
    counts = {}
    for fold in range(voc.NUM_FOLDS):
        parts = dict(zip(("base", "novel"), split_by_fold(label_sets, fold)))
        for part, names in parts.items():
            write_text(voc.fold_list_path(out_dir, fold, part), voc.list_lines(names, sbd_style=True))
            save_npy(voc.fold_list_path(out_dir, fold, part, ".npy"), np.array(names))
        counts[fold] = (len(parts["base"]), len(parts["novel"]))
    write_text(out_dir / SOURCE_MARKER, f"{voc_root}\n")  # last: the lists are complete
    return {"train_aug": len(train_aug), "folds": counts}


def splits_complete(list_dir) -> bool:
    """True when every list make_splits writes is present."""
    return all(p.is_file() for p in voc.derived_lists(list_dir))


def print_counts(result: dict) -> None:
    print(f"train_aug: {result['train_aug']} images")
    for fold, (n_base, n_novel) in result["folds"].items():
        novel = voc.novel_labels(fold)
        print(f"fold {fold} (novel labels {novel[0]}-{novel[-1]}): {n_base} base / {n_novel} novel")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="retab make_splits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc12_root", required=True, help="VOC2012 folder (JPEGImages, Annotations, ...)")
    parser.add_argument("--out_dir", required=True, help="folder for the lists (outside the dataset)")
    parser.add_argument("--workers", type=int, default=None, help="processes for reading masks")
    args = parser.parse_args(argv)
    setup_logging()
    if made_from(args.out_dir, args.voc12_root):
        log.info("%s holds the lists of %s: nothing to do", args.out_dir, Path(args.voc12_root).resolve())
        nothing_to_do()
        return 0
    print_counts(make_splits(args.voc12_root, args.out_dir, args.workers))
    return 0
