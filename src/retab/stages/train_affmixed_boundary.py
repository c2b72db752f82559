"""`retab train_affmixed_boundary` (RETAB/train_affmixed_boundary.py): the mixed affinity net of a fold (SPEC 4).

AffinityNet on every image of --train_list (train_aug). Base samples (the names of --base_list,
default the fold's list in --list_dir) are labelled from their GT masks; every other image is a
novel sample labelled from its la / ha CRF dicts, with the boundary pixels of its target map
(--targetpixel_dir) set to 255. Pairs within radius 5 on
the 1/8 grid, loss = bg/4 + fg/4 + neg/2. GT masks and target maps are sampled onto that grid at
each cell's top-left pixel as published, or at its centre with --grid_sampling nearest-exact
(retab.data.transforms.GRID_SAMPLINGS). --novel_list is checked against the train list: every
image must be either base or novel. The published flag names --base_dir, --novel_dir and --gt_dir
are accepted (GT masks are always read from {voc12_root}/SegmentationClassAug). The state dict
goes to `{out_dir}/{session_name}.pth`; a resumable `{session_name}.last.pt` is written after every
epoch and `--resume` continues from it (same step, same learning rate, same random streams).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from retab import voc
from retab.affinity import make_affinity_step, pair_count
from retab.data import AffinityTrainDataset
from retab.misc.errors import RetabError
from retab.models import build_model
from retab.published import AFFINITY_RADIUS, FEATURE_STRIDE
from retab.engines.stage_support import (add_cls_labels_arg, add_grid_sampling_arg, add_runtime_args,
                                         add_training_args, check_dir, check_training_outputs,
                                         initialise_for_training, labels_table, make_train_config,
                                         make_train_optimizer, resolve_image_labels, resolve_initial_weights,
                                         setup_training, trained_already, training_names)
from retab.engines.training import train

log = logging.getLogger("retab")


def split_train_names(names, base_names, novel_names, base_list, novel_list) -> tuple[list[str], list[str]]:
    """(base, novel) samples of the training list; an image in both lists or in neither is an error."""
    base_set, novel_set = set(base_names), set(novel_names)
    both = sorted(base_set & novel_set)
    if both:
        raise RetabError(f"{base_list} and {novel_list} both list {len(both)} images (e.g. {both[0]}): "
                         "a sample is either base or novel")
    neither = [n for n in names if n not in base_set and n not in novel_set]
    if neither:
        raise RetabError(f"{len(neither)} training images (e.g. {neither[0]}) are in neither {base_list} nor "
                         f"{novel_list}: the lists do not belong to this training list")
    return [n for n in names if n in base_set], [n for n in names if n in novel_set]


def check_novel_inputs(novel, la_dir: Path, ha_dir: Path, boundary_target_dir: Path | None) -> None:
    """Fail before training (not in a loader worker) when a CRF dict or target map is missing."""
    for name in novel:
        for folder in (la_dir, ha_dir):
            if not (folder / f"{name}.npy").is_file():
                raise RetabError(f"{folder / (name + '.npy')}: CRF label dict of the novel sample {name} not found")
        if boundary_target_dir is not None and not (boundary_target_dir / f"{name}.png").is_file():
            raise RetabError(f"{boundary_target_dir / (name + '.png')}: boundary target map of {name} not found")


def check_crop_has_pairs(crop_size: int, radius: int = AFFINITY_RADIUS) -> None:
    """A crop whose 1/8 grid is too narrow for the radius has no pairs and nothing to learn from."""
    grid = crop_size // FEATURE_STRIDE
    if pair_count(grid, grid, radius) == 0:
        smallest = FEATURE_STRIDE * (2 * radius - 1)
        raise RetabError(f"--crop_size {crop_size} gives a {grid}x{grid} label grid with no pixel pairs within "
                         f"radius {radius}; use at least {smallest}")


def check_gt_dir(gt_dir, voc_root: Path) -> None:
    if gt_dir and Path(gt_dir).resolve() != (voc_root / "SegmentationClassAug").resolve():
        log.warning("--gt_dir %s is ignored: GT masks are read from %s", gt_dir, voc_root / "SegmentationClassAug")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab train_affmixed_boundary", description=__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, default=0, help="PASCAL-5i fold 0..3 (picks the default base/novel lists)")
    add_training_args(p, session_name=None, max_epoches=8, lr=0.01, network="network.resnet38_aff",
                      weights_help="ImageNet .params or a .pth; absent: efficientnet_lite0 its ImageNet weights, resnet38 a random initialisation (with a warning)",
                      helps={"--session_name": "default resnet38_affmixed_fold{F}",
                             "--out_dir": "where {session_name}.pth and .last.pt are written",
                             "--resume": "continue from {out_dir}/{session_name}.last.pt"})
    p.add_argument("--list_dir", default="voc12", help="folder of the fold lists (default voc12)")
    p.add_argument("--base_list", "--base_dir", dest="base_list", default=None,
                   help="base samples, .txt or .npy (default: {list_dir}/trainaug_fold{F}_base)")
    p.add_argument("--novel_list", "--novel_dir", dest="novel_list", default=None,
                   help="novel samples, .txt or .npy (default: {list_dir}/trainaug_fold{F}_novel)")
    p.add_argument("--gt_dir", default=None, help="accepted for compatibility: masks come from SegmentationClassAug")
    p.add_argument("--la_crf_dir", required=True, help="CRF label dicts with the low alpha (4)")
    p.add_argument("--ha_crf_dir", required=True, help="CRF label dicts with the high alpha (32)")
    p.add_argument("--targetpixel_dir", "--boundary_target_dir", dest="boundary_target_dir", default=None,
                   help="boundary target maps of prop_boundary_target (absent: no boundary masking, with a warning)")
    add_grid_sampling_arg(p, "the base samples' GT masks and the novel samples' boundary target maps")
    add_cls_labels_arg(p)
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    session_name = args.session_name or f"resnet38_affmixed_fold{args.fold}"  # the fold's default
    if trained_already(args, session_name):
        return 0
    device, voc_root = setup_training(args)
    check_crop_has_pairs(args.crop_size)
    check_gt_dir(args.gt_dir, voc_root)
    target_arg = None if args.boundary_target_dir in (None, "", "None") else args.boundary_target_dir
    check_training_outputs(args, session_name, la_crf_dir=args.la_crf_dir,
                           ha_crf_dir=args.ha_crf_dir, boundary_target_dir=target_arg, list_dir=args.list_dir)
    la_dir = check_dir(args.la_crf_dir, "la CRF label")
    ha_dir = check_dir(args.ha_crf_dir, "ha CRF label")
    boundary_target_dir = None
    if args.boundary_target_dir in (None, "", "None"):
        log.warning("no --targetpixel_dir: novel labels are not masked by boundary targets "
                    "(not the published setting)")
    else:
        boundary_target_dir = check_dir(args.boundary_target_dir, "boundary target map")

    names = training_names(args.train_list)
    base_list = Path(args.base_list) if args.base_list else voc.fold_list(args.list_dir, args.fold, "base")
    novel_list = Path(args.novel_list) if args.novel_list else voc.fold_list(args.list_dir, args.fold, "novel")
    base, novel = split_train_names(names, voc.read_name_list(base_list), voc.read_name_list(novel_list),
                                    base_list, novel_list)
    voc.check_gt_masks(base, voc_root)
    check_novel_inputs(novel, la_dir, ha_dir, boundary_target_dir)
    log.info("train_affmixed_boundary: fold %d, %d base samples (%s), %d novel samples (%s), grid sampling %s",
             args.fold, len(base), base_list, len(novel), novel_list, args.grid_sampling)

    labels = labels_table(novel, resolve_image_labels(args.cls_labels, voc_root))  # the CRF dicts' keys
    dataset = AffinityTrainDataset(names, voc_root, la_dir, ha_dir, base_names=base,
                                   boundary_target_dir=boundary_target_dir, crop_size=args.crop_size,
                                   radius=AFFINITY_RADIUS, seed=args.seed, grid_sampling=args.grid_sampling,
                                   image_labels=labels)
    model = build_model("aff", args.width, args.backbone)
    cfg = make_train_config(args, session_name)
    initialise_for_training(model, resolve_initial_weights(args), dataset, cfg, device)
    optimizer = make_train_optimizer(args, model, len(dataset), cfg)
    log.info("train_affmixed_boundary: %d images, %d epochs of %d steps, width %g, on %s", len(dataset),
             cfg.max_epoches, optimizer.max_step // cfg.max_epoches, args.width, device)
    train(model, optimizer, dataset, make_affinity_step(AFFINITY_RADIUS), cfg, device)
    return 0
