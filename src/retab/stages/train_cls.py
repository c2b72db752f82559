"""`retab train_cls` (psa/train_cls.py): train the ResNet-38 classification (CAM) network (SPEC 3).

Multi-label soft-margin loss over the 20 classes of train_aug, the published augmentation
(resize-long, flip, colour jitter, normalise, random crop), poly learning rate over
max_step = (len(train) // batch) * epochs, the four parameter groups and the published optimizer
(momentum quirk: see retab.optim). After every epoch the loss on --val_list is logged (each val
image at full size, one at a time; the published script zero-padded them to 500 x 500 instead).
The state dict goes to `{out_dir}/{session_name}.pth`.

Image-level labels: --cls_labels PATH; without it `voc12/cls_labels.npy` (relative to the working
directory, as `make_splits` writes it) when that exists, else the XML annotations under
--voc12_root. An image without any label stops the run before training, naming the image.

The helpers this stage shares with the others (labels, weights, flags, start-up) are in
retab.engines.stage_support.
"""
from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from retab import voc
from retab.data import ClsTrainDataset, ImageDataset, image_to_tensor
from retab.data.transforms import DEFAULT_JITTER, ColorJitter
from retab.misc import distributed
from retab.misc.errors import RetabError
from retab.models import DEFAULT_BACKBONE, build_model
from retab.engines.stage_support import (AUTO_WEIGHTS, add_cls_labels_arg, add_runtime_args, add_training_args,
                                         check_training_outputs, initialise_for_training, labels_table,
                                         make_train_config, make_train_optimizer, resolve_image_labels,
                                         resolve_initial_weights, setup_training, trained_already,
                                         training_names)
from retab.engines.training import train
from retab.misc.progress import progress

log = logging.getLogger("retab")


# ----------------------------------------------------------------------------- this stage

class _ValDataset(ImageDataset):
    """Validation images at full size, normalised -> (tensor [3, H, W], labels float32[20])."""

    def __getitem__(self, index: int):
        _, img, labels = super().__getitem__(index)
        return image_to_tensor(img), torch.from_numpy(labels)


def make_val_fn(names, voc_root, labels, device, num_workers: int):
    """val_fn(model) -> mean multi-label soft-margin loss over the images of `names`.

    Under torchrun every process computes the losses of its share of `names` and the sum is
    taken over the processes (so val_fn must be called in every process)."""
    info = distributed.current()
    share = distributed.shard(names, info)
    loader = DataLoader(_ValDataset(share, voc_root, labels), batch_size=None, shuffle=False,
                        num_workers=num_workers)

    @torch.no_grad()
    def val_fn(model) -> float:
        was_training = model.training
        model.eval()
        total = 0.0
        for image, target in progress(loader, desc="validation", leave=False, disable=not info.is_main):
            logits = model(image[None].to(device))
            total += float(F.multilabel_soft_margin_loss(logits, target[None].to(device)))
        model.train(was_training)
        if info.distributed:
            total = distributed.sum_over_processes([total], device)[0]
        return total / len(names)

    return val_fn


def cls_step(model, batch, device):
    images, labels = batch
    logits = model(images.to(device, non_blocking=True))
    loss = F.multilabel_soft_margin_loss(logits, labels.to(device, non_blocking=True))
    return loss, {}


def initial_weights(args) -> tuple[str | None, bool]:
    """(the file the classifier starts from, whether it trains --from_scratch). Besides the flag,
    the drivers' rule: a ResNet-38 classifier that --weights auto or '' leaves without weights
    trains every layer; with --weights absent a random one keeps the published frozen BatchNorms."""
    if args.from_scratch:
        return None, True
    weights = resolve_initial_weights(args)
    return weights, weights is None and args.weights is not None and args.backbone == DEFAULT_BACKBONE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab train_cls", description=__doc__.splitlines()[0])
    add_training_args(p, session_name="resnet38_cls", max_epoches=15, lr=0.1, network="network.resnet38_cls",
                      weights_help=".params (ImageNet) or .pth; absent: efficientnet_lite0 its ImageNet weights, resnet38 a random initialisation (with a warning)")
    p.add_argument("--from_scratch", action="store_true",
                   help="no --weights: He initialisation, every layer and BatchNorm trains (not in the paper; "
                        "without it a random initialisation keeps the published frozen BatchNorms, with "
                        "statistics estimated from the data); under torchrun the BatchNorms use the statistics "
                        "of the global batch on CUDA (SyncBatchNorm), of each process's share on the CPU; "
                        "implied for resnet38 when --weights auto or '' leaves it without weights (the drivers')")
    p.add_argument("--hue_jitter", type=float, default=DEFAULT_JITTER.hue,
                   help="hue strength of the colour jitter [published 0.1]; the mini-VOC's classes wear "
                        "signature hues, which a +-36 degree shift would swap")
    p.add_argument("--val_list", default="voc12/val.txt", help="'' or None: no validation")
    p.add_argument("--resize_long", type=int, nargs=2, default=(256, 512), metavar=("LO", "HI"))
    add_cls_labels_arg(p)
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if trained_already(args, args.session_name):
        return 0
    # flag checks first: under torchrun, setup_training joins the process group
    if args.from_scratch and args.weights not in (None, "", AUTO_WEIGHTS):
        raise RetabError("--from_scratch trains from a random initialisation: drop --weights or --from_scratch")
    if not 0.0 <= args.hue_jitter <= 0.5:
        raise RetabError(f"--hue_jitter must be in [0, 0.5], got {args.hue_jitter}")
    device, voc_root = setup_training(args)
    check_training_outputs(args, args.session_name)
    jitter = ColorJitter(DEFAULT_JITTER.brightness, DEFAULT_JITTER.contrast, DEFAULT_JITTER.saturation,
                         args.hue_jitter)

    image_labels = resolve_image_labels(args.cls_labels, voc_root)
    train_names = training_names(args.train_list)
    train_labels = labels_table(train_names, image_labels)
    dataset = ClsTrainDataset(train_names, voc_root, train_labels, crop_size=args.crop_size,
                              resize_long=tuple(args.resize_long), seed=args.seed, jitter=jitter)

    val_fn = None
    if args.val_list not in (None, "", "None"):
        val_names = voc.read_name_list(args.val_list)
        if val_names:
            val_fn = make_val_fn(val_names, voc_root, labels_table(val_names, image_labels), device,
                                 args.num_workers)

    model = build_model("cls", args.width, args.backbone)
    cfg = make_train_config(args)
    weights, from_scratch = initial_weights(args)
    if from_scratch:  # every BatchNorm trains: nothing to estimate
        log.warning("--from_scratch: no ImageNet weights, the classifier is trained from scratch")
        model.train_from_scratch()
    else:
        initialise_for_training(model, weights, dataset, cfg, device)
    optimizer = make_train_optimizer(args, model, len(dataset), cfg)
    log.info("train_cls: %d images, %d epochs of %d steps, width %g, on %s", len(dataset), cfg.max_epoches,
             optimizer.max_step // max(cfg.max_epoches, 1), args.width, device)
    train(model, optimizer, dataset, cls_step, cfg, device, val_fn)
    return 0
