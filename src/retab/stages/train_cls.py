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

The helpers `resolve_image_labels`, `labels_table`, `load_initial_weights` and
`load_trained_weights` are shared by the other PSA stages.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from retab import voc
from retab.data import ClsTrainDataset, ImageDataset, image_to_tensor
from retab.data.transforms import DEFAULT_JITTER, ColorJitter
from retab.misc.args import add_runtime_args, setup_logging
from retab.misc.device import resolve_device, seed_everything
from retab.misc.errors import RetabError
from retab.models import build_model
from retab.models.weights import (load_state_dict_checked, load_weights, read_torch_file,
                                  state_dict_from_checkpoint)
from retab.optim import OPTIMIZERS, make_optimizer, param_groups
from retab.training import TrainConfig, make_loader, max_steps, train

log = logging.getLogger("retab")

DEFAULT_CLS_LABELS = Path("voc12") / "cls_labels.npy"  # relative to the working directory
CALIBRATION_BATCHES = 8  # batches whose statistics a randomly initialised network's BatchNorms take


# ----------------------------------------------------------------------------- shared by the PSA stages

def default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


def resolve_image_labels(cls_labels, voc12_root) -> voc.ImageLabels:
    """--cls_labels PATH; else voc12/cls_labels.npy in the working directory; else the XMLs."""
    if cls_labels:
        log.info("image-level labels from %s", cls_labels)
        return voc.ImageLabels(voc12_root, cls_labels)
    if DEFAULT_CLS_LABELS.is_file():
        log.info("image-level labels from %s", DEFAULT_CLS_LABELS)
        return voc.ImageLabels(voc12_root, DEFAULT_CLS_LABELS)
    log.info("image-level labels from the XML annotations under %s", voc12_root)
    return voc.ImageLabels(voc12_root)


def labels_table(names, image_labels) -> dict[str, np.ndarray]:
    """Every image's labels up front: a missing or empty label stops the run now, naming the image."""
    return {name: image_labels(name) for name in tqdm(names, desc="image labels", leave=False,
                                                      disable=len(names) < 500)}


def _head_keys(model: torch.nn.Module) -> list[str]:
    heads = tuple(getattr(model, "head_names", ()))
    return [k for k in model.state_dict() if k.split(".")[0] in heads]


def load_initial_weights(model: torch.nn.Module, weights) -> None:
    """Initial weights of a training stage.

    None: random initialisation, with a warning. `.params`: the MXNet ImageNet backbone
    (non-strict; what it skipped is logged). `.pth`: strict when it holds this model's head (e.g.
    a classifier to go on training); otherwise, a checkpoint of another head (the trained
    classifier initialising the affinity net, as published), non-strict with a report. A tensor of
    the wrong shape is always an error: it means a network of another --width.
    """
    if not weights:
        log.warning("no --weights given: training %s from a random initialisation", type(model).__name__)
        return
    path = Path(weights)
    if path.suffix == ".params":
        report = load_weights(model, path, strict=False)
    else:
        state_dict = state_dict_from_checkpoint(read_torch_file(path), path)
        same_head = all(k in state_dict for k in _head_keys(model))
        if not same_head:
            log.info("%s holds no %s head: loading its backbone only", path, type(model).__name__)
        report = load_state_dict_checked(model, state_dict, strict=same_head, source=path)
    if report.mismatched:
        raise RetabError(f"{path}: weights do not fit {type(model).__name__} of this --width: "
                         f"{report.describe()}")
    if not report.loaded:
        raise RetabError(f"{path}: no tensor of the file fits {type(model).__name__}: {report.describe()}")


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, dataset, cfg: TrainConfig, device,
                        max_batches: int = CALIBRATION_BATCHES) -> None:
    """From a random initialisation only: set the running statistics of every (frozen) BatchNorm
    to the average batch statistics of the first `max_batches` training batches.

    The BatchNorms stay frozen during training (SPEC 2); with ImageNet weights they carry ImageNet
    statistics. A fresh BatchNorm has mean 0 / variance 1, i.e. it is the identity, and the
    activations of a random ResNet-38 then fade with depth (conv6 ~ 1e-3 at width 0.125) so that
    the loss hardly moves; estimated statistics make the frozen BatchNorms normalise as intended.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    model.to(device).eval()
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
        bn.train()
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    loader = make_loader(dataset, cfg.batch_size, True, cfg.num_workers, cfg.seed)
    seen = 0
    for batch in tqdm(loader, total=min(max_batches, len(loader)), desc="BatchNorm statistics", leave=False):
        model(batch[0].to(device))
        seen += 1
        if seen == max_batches:
            break
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()  # back to frozen BatchNorms (the training loop switches dropout on again)
    log.info("random initialisation: BatchNorm statistics estimated from %d training batches", seen)


def load_trained_weights(model: torch.nn.Module, weights) -> None:
    """Weights of an inference stage: a trained `.pth` of exactly this network (strict)."""
    path = Path(weights)
    if path.suffix == ".params":
        raise RetabError(f"{path}: an ImageNet .params file has no trained {type(model).__name__} head; "
                         f"pass the .pth checkpoint of the trained network")
    load_weights(model, path, strict=True)


def check_dir(path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise RetabError(f"{path}: {what} folder not found")
    return path


def check_schedule(batch_size: int, max_epoches: int) -> None:
    if batch_size < 1 or max_epoches < 1:
        raise RetabError(f"--batch_size and --max_epoches must be at least 1, got {batch_size} and {max_epoches}")


# ----------------------------------------------------------------------------- this stage

class _ValDataset(ImageDataset):
    """Validation images at full size, normalised -> (tensor [3, H, W], labels float32[20])."""

    def __getitem__(self, index: int):
        _, img, labels = super().__getitem__(index)
        return image_to_tensor(img), torch.from_numpy(labels)


def make_val_fn(names, voc_root, labels, device, num_workers: int):
    """val_fn(model) -> mean multi-label soft-margin loss over the images of `names`."""
    loader = DataLoader(_ValDataset(names, voc_root, labels), batch_size=None, shuffle=False,
                        num_workers=num_workers)

    @torch.no_grad()
    def val_fn(model) -> float:
        was_training = model.training
        model.eval()
        total = 0.0
        for image, target in tqdm(loader, desc="validation", leave=False):
            logits = model(image[None].to(device))
            total += float(F.multilabel_soft_margin_loss(logits, target[None].to(device)))
        model.train(was_training)
        return total / len(names)

    return val_fn


def cls_step(model, batch, device):
    images, labels = batch
    logits = model(images.to(device, non_blocking=True))
    loss = F.multilabel_soft_margin_loss(logits, labels.to(device, non_blocking=True))
    return loss, {}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab train_cls", description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_epoches", type=int, default=15)
    p.add_argument("--network", default="network.resnet38_cls", help="accepted for compatibility, ignored")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--num_workers", type=int, default=default_num_workers())
    p.add_argument("--wt_dec", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=None,
                   help="real SGD momentum (e.g. 0.9); default: the published quirk, momentum = --wt_dec")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd: the published poly SGD; adamw: poly AdamW for --from_scratch (not in the paper)")
    p.add_argument("--from_scratch", action="store_true",
                   help="no --weights: He initialisation, every layer and BatchNorm trains (not in the paper; "
                        "without it a random initialisation keeps the published frozen BatchNorms, with "
                        "statistics estimated from the data)")
    p.add_argument("--hue_jitter", type=float, default=DEFAULT_JITTER.hue,
                   help="hue strength of the colour jitter [published 0.1]; the mini-VOC's classes wear "
                        "signature hues, which a +-36 degree shift would swap")
    p.add_argument("--train_list", default="voc12/train_aug.txt")
    p.add_argument("--val_list", default="voc12/val.txt", help="'' or None: no validation")
    p.add_argument("--session_name", default="resnet38_cls")
    p.add_argument("--crop_size", type=int, default=448)
    p.add_argument("--resize_long", type=int, nargs=2, default=(256, 512), metavar=("LO", "HI"))
    p.add_argument("--weights", default=None,
                   help=".params (ImageNet) or .pth; absent: random initialisation (with a warning)")
    p.add_argument("--voc12_root", default="VOC2012")
    p.add_argument("--tblog_dir", default="./tblog")
    p.add_argument("--cls_labels", default=None,
                   help="cls_labels.npy (default: voc12/cls_labels.npy if present, else the XML annotations)")
    p.add_argument("--out_dir", default=".", help="where {session_name}.pth is written")
    p.add_argument("--resume", action="store_true",
                   help="go on from {out_dir}/{session_name}.last.pt (written after every epoch) if it exists")
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    device = resolve_device(args.device)
    voc_root = check_dir(args.voc12_root, "VOC2012")
    check_schedule(args.batch_size, args.max_epoches)
    if args.from_scratch and args.weights:
        raise RetabError("--from_scratch trains from a random initialisation: drop --weights or --from_scratch")
    if args.optimizer == "adamw" and args.momentum is not None:
        raise RetabError("--momentum applies to --optimizer sgd only")
    if not 0.0 <= args.hue_jitter <= 0.5:
        raise RetabError(f"--hue_jitter must be in [0, 0.5], got {args.hue_jitter}")
    jitter = ColorJitter(DEFAULT_JITTER.brightness, DEFAULT_JITTER.contrast, DEFAULT_JITTER.saturation,
                         args.hue_jitter)

    image_labels = resolve_image_labels(args.cls_labels, voc_root)
    train_names = voc.read_name_list(args.train_list)
    if not train_names:
        raise RetabError(f"{args.train_list}: the training list is empty")
    train_labels = labels_table(train_names, image_labels)
    dataset = ClsTrainDataset(train_names, voc_root, train_labels, crop_size=args.crop_size,
                              resize_long=tuple(args.resize_long), seed=args.seed, jitter=jitter)

    val_fn = None
    if args.val_list not in (None, "", "None"):
        val_names = voc.read_name_list(args.val_list)
        if val_names:
            val_fn = make_val_fn(val_names, voc_root, labels_table(val_names, image_labels), device,
                                 args.num_workers)

    model = build_model("cls", args.width)
    load_initial_weights(model, args.weights)
    cfg = TrainConfig(session_name=args.session_name, max_epoches=args.max_epoches,
                      batch_size=args.batch_size, num_workers=args.num_workers, seed=args.seed,
                      out_dir=args.out_dir, tblog_dir=args.tblog_dir or None, resume=args.resume)
    if args.from_scratch:
        model.train_from_scratch()
    elif not args.weights:
        calibrate_batchnorm(model, dataset, cfg, device)
    optimizer = make_optimizer(args.optimizer, param_groups(model), lr=args.lr, weight_decay=args.wt_dec,
                               max_step=max_steps(len(dataset), cfg), momentum=args.momentum)
    log.info("train_cls: %d images, %d epochs of %d steps, width %g, on %s", len(dataset), cfg.max_epoches,
             optimizer.max_step // max(cfg.max_epoches, 1), args.width, device)
    train(model, optimizer, dataset, cls_step, cfg, device, val_fn)
    return 0
