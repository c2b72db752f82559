"""`retab train_seg` (seg/train_seg.py): train the segmentation network of fold F (SPEC 7).

ResNet-38 + DeepLab-v2 ASPP head (retab.models.segmentation), cross-entropy ignoring 255, on
--train_list (train_aug) with the labels picked by --supervision:
  mixed  base samples of the fold (--base_list) use their GT masks (SegmentationClassAug), novel
         samples (--novel_list) the pseudo labels {--pseudo_dir}/{name}.png (what run_retab.sh
         writes): the weak-shot setting;
  full   the GT mask of every image: the fully supervised upper bound;
  weak   the pseudo label of every image: the pure weakly supervised baseline.
Augmentation: random scale (long side uniform in --resize_long, bicubic / nearest), colour
jitter, joint random crop (image canvas black, label canvas 255), normalise, flip. Poly learning
rate over max_step = (len(train) // batch) * epochs with the four parameter groups (the ASPP head
is the x10 / x20 head). The state dict goes to `{out_dir}/{session_name}.pth`; a resumable
`{session_name}.last.pt` is written after every epoch and `--resume` continues from it (same
step, same learning rate, same random streams).

Published defaults: the step is not part of the published code, so these are DeepLab-v2's
(the usual choice of WSSS papers for this step): batch 10, crop 321, lr 2.5e-4 with real SGD
momentum 0.9 (not the PSA momentum quirk), weight decay 5e-4, 20 epochs (about DeepLab's 20k
iterations of batch 10 on train_aug), random scale 0.5..1.5 of VOC's 500 px long side.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from retab import voc
from retab.data import SegTrainDataset
from retab.misc.errors import RetabError
from retab.models import build_model
from retab.models.segmentation import segmentation_loss
from retab.engines.stage_support import (add_runtime_args, add_training_args, check_dir,
                                         check_training_outputs, initialise_for_training, make_train_config,
                                         make_train_optimizer, resolve_initial_weights, setup_training,
                                         trained_already, training_names)
from retab.engines.training import train

log = logging.getLogger("retab")

SUPERVISIONS = ("mixed", "full", "weak")
DEFAULT_LIST_DIR = Path("voc12")  # relative to the working directory, as make_splits writes it

# DeepLab-v2 defaults (see the module docstring)
SEG_BATCH_SIZE = 10
SEG_CROP_SIZE = 321
SEG_LR = 2.5e-4
SEG_MOMENTUM = 0.9
SEG_EPOCHS = 20
SEG_RESIZE_LONG = (250, 750)


def gt_names_for(supervision: str, names, base_names=(), novel_names=()) -> frozenset:
    """The training names that use their GT mask; every other name uses its pseudo label.

    mixed needs every name in exactly one of the fold's base / novel lists."""
    names = list(names)
    if supervision == "full":
        return frozenset(names)
    if supervision == "weak":
        return frozenset()
    if supervision != "mixed":
        raise RetabError(f"--supervision must be one of {', '.join(SUPERVISIONS)}, got {supervision!r}")
    base, novel = set(base_names), set(novel_names)
    for name in names:
        if (name in base) == (name in novel):
            where = "both" if name in base else "neither"
            raise RetabError(f"{name} is in {where} of the fold's base and novel lists")
    return frozenset(n for n in names if n in base)


def seg_step(model, batch, device):
    images, labels = batch
    logits = model(images.to(device, non_blocking=True))
    return segmentation_loss(logits, labels.to(device, non_blocking=True)), {}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab train_seg", description=__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, default=0, help="PASCAL-5i fold 0..3 (base/novel lists)")
    p.add_argument("--supervision", default="mixed", choices=SUPERVISIONS,
                   help="mixed: base GT + novel pseudo labels; full: GT everywhere; weak: pseudo labels everywhere")
    add_training_args(p, session_name="resnet38_seg", max_epoches=SEG_EPOCHS, lr=SEG_LR, batch_size=SEG_BATCH_SIZE,
                      crop_size=SEG_CROP_SIZE, momentum=SEG_MOMENTUM, tblog_dir="./tblog_seg",
                      train_list=str(DEFAULT_LIST_DIR / "train_aug.txt"),
                      weights_help="ImageNet .params, a classifier .pth (backbone) or a segmentation .pth; "
                                   "absent: efficientnet_lite0 its ImageNet weights, resnet38 random",
                      helps={"--momentum": "SGD momentum (default 0.9 as DeepLab; the PSA/RETAB stages keep the "
                                           "published quirk)",
                             "--tblog_dir": "TensorBoard folder ('' for none)",
                             "--out_dir": "where {session_name}.pth and .last.pt are written",
                             "--resume": "continue from {out_dir}/{session_name}.last.pt"})
    p.add_argument("--base_list", default=None, help="default voc12/trainaug_fold{F}_base.txt (.txt or .npy)")
    p.add_argument("--novel_list", default=None, help="default voc12/trainaug_fold{F}_novel.txt (.txt or .npy)")
    p.add_argument("--pseudo_dir", default=None, help="pseudo label PNGs {name}.png (mixed and weak)")
    p.add_argument("--resize_long", type=int, nargs=2, default=SEG_RESIZE_LONG, metavar=("LO", "HI"),
                   help="random scale: long side uniform in [LO, HI] (default 250 750)")
    add_runtime_args(p)
    return p


def fold_names(path, fold: int, part: str) -> list[str]:
    return voc.read_name_list(path or voc.fold_list(DEFAULT_LIST_DIR, fold, part))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if trained_already(args, args.session_name):
        return 0
    device, voc_root = setup_training(args)
    check_training_outputs(args, args.session_name, pseudo_dir=args.pseudo_dir)
    names = training_names(args.train_list)

    base = novel = ()
    if args.supervision == "mixed":
        base = fold_names(args.base_list, args.fold, "base")
        novel = fold_names(args.novel_list, args.fold, "novel")
    gt_names = gt_names_for(args.supervision, names, base, novel)
    pseudo_dir = None
    if len(gt_names) < len(names):
        if not args.pseudo_dir:
            raise RetabError(f"--supervision {args.supervision} needs --pseudo_dir (the pseudo label PNGs)")
        pseudo_dir = check_dir(args.pseudo_dir, "pseudo label")
    dataset = SegTrainDataset(names, voc_root, gt_names, pseudo_dir, crop_size=args.crop_size,
                              resize_long=tuple(args.resize_long), seed=args.seed)

    model = build_model("seg", args.width, args.backbone)
    cfg = make_train_config(args)
    initialise_for_training(model, resolve_initial_weights(args), dataset, cfg, device)
    optimizer = make_train_optimizer(args, model, len(dataset), cfg)
    log.info("train_seg fold %d, %s supervision: %d images (%d with GT, %d with pseudo labels), "
             "%d epochs of %d steps, width %g, on %s", args.fold, args.supervision, len(names),
             len(gt_names), len(names) - len(gt_names), cfg.max_epoches,
             optimizer.max_step // cfg.max_epoches, args.width, device)
    train(model, optimizer, dataset, seg_step, cfg, device)
    return 0
