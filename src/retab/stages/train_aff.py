"""`retab train_aff` (psa/train_aff.py): train the PSA AffinityNet baseline from CRF labels (SPEC 3).

Every image of --train_list is labelled from its la / ha CRF dicts alone (a "novel sample" of
SPEC 4 without boundary masking); the augmentation is jitter, crop, normalise, flip. Pairs within
radius 5 on the 1/8 grid; loss = bg/4 + fg/4 + neg/2 (retab.affinity). Initial weights: normally
the trained classifier's .pth (its backbone; fc8 is unused and the affinity head starts fresh,
reported) or the ImageNet .params. The state dict goes to `{out_dir}/{session_name}.pth`.
"""
from __future__ import annotations

import argparse
import logging

from retab.affinity import make_affinity_step, pair_count
from retab.data import AffinityTrainDataset
from retab.misc.errors import RetabError
from retab.models import build_model
from retab.published import AFFINITY_RADIUS, FEATURE_STRIDE
from retab.engines.stage_support import (add_cls_labels_arg, add_runtime_args, add_training_args, check_dir,
                                         check_training_outputs, initialise_for_training, labels_table,
                                         make_train_config, make_train_optimizer, resolve_image_labels,
                                         resolve_initial_weights, setup_training, trained_already,
                                         training_names)
from retab.engines.training import train

log = logging.getLogger("retab")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab train_aff", description=__doc__.splitlines()[0])
    add_training_args(p, session_name="resnet38_aff", max_epoches=8, lr=0.1, network="network.resnet38_aff",
                      weights_help="classifier .pth, ImageNet .params or an affinity .pth; absent: efficientnet_lite0 "
                                   "its ImageNet weights, resnet38 a random initialisation")
    p.add_argument("--la_crf_dir", required=True, help="CRF label dicts with the low alpha (4)")
    p.add_argument("--ha_crf_dir", required=True, help="CRF label dicts with the high alpha (32)")
    add_cls_labels_arg(p)
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if trained_already(args, args.session_name):
        return 0
    device, voc_root = setup_training(args)
    grid = args.crop_size // FEATURE_STRIDE
    if pair_count(grid, grid, AFFINITY_RADIUS) == 0:
        raise RetabError(f"--crop_size {args.crop_size} is too small: its {grid}x{grid} grid holds no pixel "
                         f"pairs of radius {AFFINITY_RADIUS} (at least {FEATURE_STRIDE * (2 * AFFINITY_RADIUS - 1)})")
    check_training_outputs(args, args.session_name, la_crf_dir=args.la_crf_dir, ha_crf_dir=args.ha_crf_dir)
    la_dir = check_dir(args.la_crf_dir, "la CRF label")
    ha_dir = check_dir(args.ha_crf_dir, "ha CRF label")
    names = training_names(args.train_list)
    for name in names:  # fail now rather than in a DataLoader worker halfway through an epoch
        for folder in (la_dir, ha_dir):
            if not (folder / f"{name}.npy").is_file():
                raise RetabError(f"{folder / (name + '.npy')}: CRF label dict not found")

    # The PSA baseline: no base samples, no boundary targets (SPEC 3).
    labels = labels_table(names, resolve_image_labels(args.cls_labels, voc_root))  # the CRF dicts' keys
    dataset = AffinityTrainDataset(names, voc_root, la_dir, ha_dir, base_names=(), boundary_target_dir=None,
                                   crop_size=args.crop_size, radius=AFFINITY_RADIUS, seed=args.seed,
                                   image_labels=labels)
    model = build_model("aff", args.width, args.backbone)
    cfg = make_train_config(args)
    initialise_for_training(model, resolve_initial_weights(args), dataset, cfg, device)
    optimizer = make_train_optimizer(args, model, len(dataset), cfg)
    log.info("train_aff: %d images, %d epochs of %d steps, width %g, on %s", len(dataset), cfg.max_epoches,
             optimizer.max_step // cfg.max_epoches, args.width, device)
    train(model, optimizer, dataset, make_affinity_step(AFFINITY_RADIUS), cfg, device)
    return 0
