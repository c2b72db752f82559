"""`retab train_boundary` (RETAB/train_boundary.py): train the boundary net on the base samples of a fold (SPEC 4).

The base samples of fold --fold (default list: {list_dir}/trainaug_fold{F}_base.txt, or the .npy
when only that exists) with their SegmentationClassAug masks: boundary = 255, background = 0,
foreground = the rest; loss = mean BCE over boundary + 0.5 mean over background + 0.5 mean over
foreground (retab.boundary.boundary_loss). Augmentation: jitter, joint crop (mask padding 0),
normalise, flip. Initial weights: the ImageNet .params as published, or a .pth (e.g. the PSA
classifier: its backbone, non-strict with a report). The state dict goes to
`{out_dir}/{session_name}.pth` (session_name may hold a folder, as in the published script); a
resumable `{session_name}.last.pt` is written after every epoch and `--resume` continues from it
(same step, same learning rate, same random streams).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


from retab import voc
from retab.boundary import boundary_loss
from retab.data import BoundaryTrainDataset
from retab.misc.errors import RetabError
from retab.models import build_model
from retab.engines.stage_support import (add_runtime_args, add_training_args, check_training_outputs,
                                         initialise_for_training, make_train_config, make_train_optimizer,
                                         resolve_initial_weights, setup_training, trained_already)
from retab.engines.training import train

log = logging.getLogger("retab")


def boundary_step(model, batch, device):
    images, masks = batch
    logits = model(images.to(device, non_blocking=True))
    loss, terms = boundary_loss(logits, masks.to(device, non_blocking=True))
    return loss, {f"loss_{k}": float(v) for k, v in terms.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab train_boundary", description=__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, default=0, help="PASCAL-5i fold 0..3 (picks the default --train_list)")
    add_training_args(p, session_name=None, max_epoches=8, lr=0.001, network="network.resnet38_boundary",
                      train_list=None,
                      weights_help="ImageNet .params or a .pth; absent: efficientnet_lite0 its ImageNet weights, resnet38 a random initialisation (with a warning)",
                      helps={"--train_list": "base samples (default: {list_dir}/trainaug_fold{F}_base.txt or .npy)",
                             "--session_name": "default resnet38_boundary_fold{F}",
                             "--out_dir": "where {session_name}.pth and .last.pt are written",
                             "--resume": "continue from {out_dir}/{session_name}.last.pt"})
    p.add_argument("--list_dir", default="voc12", help="folder of the fold lists (default voc12)")
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    session_name = args.session_name or f"resnet38_boundary_fold{args.fold}"  # the fold's default
    if trained_already(args, session_name):
        return 0
    device, voc_root = setup_training(args)
    check_training_outputs(args, session_name, list_dir=args.list_dir)
    train_list = Path(args.train_list) if args.train_list else voc.fold_list(args.list_dir, args.fold, "base")
    names = voc.read_name_list(train_list)
    if not names:
        raise RetabError(f"{train_list}: the list of base samples is empty")
    voc.check_gt_masks(names, voc_root)
    log.info("train_boundary: fold %d, %d base samples from %s", args.fold, len(names), train_list)

    dataset = BoundaryTrainDataset(names, voc_root, crop_size=args.crop_size, seed=args.seed)
    model = build_model("boundary", args.width, args.backbone)
    cfg = make_train_config(args, session_name)
    initialise_for_training(model, resolve_initial_weights(args), dataset, cfg, device)
    optimizer = make_train_optimizer(args, model, len(dataset), cfg)
    log.info("train_boundary: %d epochs of %d steps, width %g, on %s", cfg.max_epoches,
             optimizer.max_step // cfg.max_epoches, args.width, device)
    train(model, optimizer, dataset, boundary_step, cfg, device)
    return 0
