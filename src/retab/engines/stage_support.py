"""What the stage modules share: their common flags, their start-up, weight loading and the
per-image inference loop (not a command of its own).

Training stages (train_cls, train_aff, train_boundary, train_affmixed_boundary, train_seg):
`add_training_args` adds the flags they all have, each stage passing its own published defaults;
`setup_training` runs the start-up (logging, fold and schedule checks, seed, device, VOC root);
`make_train_config` and `make_train_optimizer` turn the flags into the TrainConfig and the poly
optimizer of retab.engines.training.

Inference stages (infer_cls, prop_boundary_target, infer_seg, and retab.engines.walk_inference):
`add_inference_args` adds their common flags; `images_to_do` skips the images whose outputs all
exist (unless --overwrite); `load_inference_model` builds the trained network on its device;
`image_loader` reads the images in loader processes behind a progress bar.

Under torchrun (retab.misc.distributed) a training stage joins the process group in
`setup_training` and --batch_size stays the global batch; an inference stage takes its share of
the image list (`process_share`) before skipping the finished images. --amp / --channels_last
(retab.misc.precision) are flags of both kinds.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from retab import voc
from retab.misc import distributed
from retab.misc.args import setup_logging
from retab.misc.device import seed_everything
from retab.misc.errors import RetabError
from retab.misc.outputs import check_outputs, dataset_inputs
from retab.misc.precision import Precision, add_precision_args, apply_precision
from retab.data.transforms import GRID_SAMPLINGS
from retab.models import BACKBONES, DEFAULT_BACKBONE, build_model
from retab.models.weights import (load_state_dict_checked, load_weights, network_of, read_torch_file,
                                  state_dict_from_checkpoint)
from retab.optim import OPTIMIZERS, make_optimizer, param_groups
from retab.engines.training import TrainConfig, checkpoint_paths, make_loader, max_steps, session_paths
from retab.misc.progress import progress
from retab.misc.steps import nothing_to_do
from retab.published import IMAGENET_PARAMS_DIR, IMAGENET_PARAMS_NAME

log = logging.getLogger("retab")

DEFAULT_CLS_LABELS = Path("voc12") / "cls_labels.npy"  # relative to the working directory
CALIBRATION_BATCHES = 8  # batches whose statistics a randomly initialised network's BatchNorms take
COMPATIBILITY_HELP = "accepted for compatibility, ignored"


# ----------------------------------------------------------------------------- inputs and weights

def default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


def check_dir(path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise RetabError(f"{path}: {what} folder not found")
    return path


def check_schedule(batch_size: int, max_epoches: int) -> None:
    if batch_size < 1 or max_epoches < 1:
        raise RetabError(f"--batch_size and --max_epoches must be at least 1, got {batch_size} and {max_epoches}")


def add_cls_labels_arg(parser: argparse.ArgumentParser) -> None:
    """--cls_labels, the image-level labels file that resolve_image_labels reads."""
    parser.add_argument("--cls_labels", default=None,
                        help="cls_labels.npy (default: voc12/cls_labels.npy if present, else the XML annotations)")


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
    return {name: image_labels(name) for name in progress(names, desc="image labels", leave=False,
                                                      disable=len(names) < 500)}


def _head_keys(model: torch.nn.Module) -> list[str]:
    heads = tuple(getattr(model, "head_names", ()))
    return [k for k in model.state_dict() if k.split(".")[0] in heads]


AUTO_WEIGHTS = "auto"  # --weights auto: the drivers' choice of initial weights (resolve_initial_weights)


def resolve_initial_weights(args) -> str | None:
    """The file a training stage starts from, as --weights asks.

    A path: that file (a missing one stops the stage when it is read). '' or absent: none.
    `auto` (what the drivers pass unless WEIGHTS is set): ImageNet weights as published, i.e. for
    ResNet-38 at --width 1.0 the `.params` in the first of --imagenet_dirs that holds it, and for
    EfficientNet-Lite0 its package's (None here); else --fallback_weights when that file exists (a
    trained classifier's backbone), with a warning; else none, with a warning.
    """
    if args.weights != AUTO_WEIGHTS:
        return args.weights or None
    if args.backbone != DEFAULT_BACKBONE:
        return None
    if args.width != 1.0:
        searched = f"the ImageNet weights are for --width 1.0, not {args.width:g}"
    else:
        found = [p for p in (Path(d) / IMAGENET_PARAMS_NAME for d in args.imagenet_dirs) if p.is_file()]
        if found:
            return str(found[0])
        searched = f"{IMAGENET_PARAMS_NAME} in {', '.join(args.imagenet_dirs)}"
    if args.fallback_weights and Path(args.fallback_weights).is_file():
        log.warning("no ImageNet weights (%s): starting from the backbone of %s, not from the published "
                    "ImageNet initialisation", searched, args.fallback_weights)
        return args.fallback_weights
    log.warning("no ImageNet weights (%s)%s: starting from a random initialisation", searched,
                f" and no {args.fallback_weights}" if args.fallback_weights else "")
    return None


def load_initial_weights(model: torch.nn.Module, weights) -> None:
    """Initial weights of a training stage.

    None: the backbone's own ImageNet weights where its package ships them (EfficientNet-Lite0);
    else a random initialisation, with a warning. `.params`: the MXNet ImageNet backbone
    (non-strict; what it skipped is logged). `.pth`: strict when it holds this model's head (e.g.
    a classifier to go on training); otherwise, a checkpoint of another head (the trained
    classifier initialising the affinity net, as published), non-strict with a report. A tensor of
    the wrong shape is always an error: it means a network of another --width.
    """
    if not weights:
        if hasattr(model, "load_imagenet_weights"):
            model.load_imagenet_weights()
        else:
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


def load_trained_weights(model: torch.nn.Module, weights) -> None:
    """Weights of an inference stage: a trained `.pth` of exactly this network (strict; a
    DataParallel `module.` prefix is accepted). A checkpoint of another of the pipeline's
    networks is refused by name, then the keys that do not fit."""
    path = Path(weights)
    if path.suffix == ".params":
        raise RetabError(f"{path}: an ImageNet .params file has no trained {type(model).__name__} head; "
                         f"pass the .pth checkpoint of the trained network")
    state_dict = state_dict_from_checkpoint(read_torch_file(path), path)
    try:
        load_state_dict_checked(model, state_dict, strict=True, source=path)
    except RetabError as exc:
        found, wanted = network_of(state_dict), network_of(model.state_dict())
        if found is None or wanted is None or found == wanted:
            raise
        detail = str(exc).removeprefix(f"{path}: ")
        raise RetabError(f"{path}: holds the weights of the {found}, not of the {wanted}; {detail}") from None


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
    for batch in progress(loader, total=min(max_batches, len(loader)), desc="BatchNorm statistics", leave=False):
        model(batch[0].to(device))
        seen += 1
        if seen == max_batches:
            break
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()  # back to frozen BatchNorms (the training loop switches dropout on again)
    log.info("random initialisation: BatchNorm statistics estimated from %d training batches", seen)


def initialise_for_training(model: torch.nn.Module, weights, dataset, cfg: TrainConfig, device) -> None:
    """--weights into a training stage's network (load_initial_weights); without them, the backbone's
    own ImageNet weights or else a random initialisation whose frozen BatchNorms get the training
    batches' statistics (calibrate_batchnorm)."""
    load_initial_weights(model, weights)
    if not weights and not hasattr(model, "load_imagenet_weights"):
        calibrate_batchnorm(model, dataset, cfg, device)


# ----------------------------------------------------------------------------- start-up of every stage

def add_runtime_args(parser: argparse.ArgumentParser, width: bool = True) -> None:
    """--device, --seed (and --backbone and --width for stages that build a network)."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if width:
        parser.add_argument("--backbone", choices=BACKBONES, default=DEFAULT_BACKBONE,
                            help="resnet38 (published; ImageNet weights from the .params file) or efficientnet_lite0 "
                                 "(not in the paper; ImageNet weights from its package, for machines without the "
                                 ".params and for CPU runs)")
        parser.add_argument("--width", type=float, default=1.0,
                            help="channel width factor (1.0 = published; e.g. 0.125 for CPU); on efficientnet_lite0 "
                                 "it scales the heads only")


def add_grid_sampling_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """--grid_sampling (retab.data.transforms.GRID_SAMPLINGS), read by the mixed affinity training
    and the RETAB walks."""
    parser.add_argument("--grid_sampling", choices=GRID_SAMPLINGS, default="nearest",
                        help=f"how {what} are sampled onto the 1/8 grid: nearest (published: each cell's "
                             "top-left pixel) or nearest-exact (its centre, where the CAMs are averaged)")


def check_settings(args) -> None:
    """The numeric flags a stage has (those of add_training_args, add_inference_args and
    add_runtime_args), in range before any work."""
    rules = (("width", lambda v: v > 0, "positive"), ("num_workers", lambda v: v >= 0, "at least 0"),
             ("lr", lambda v: v > 0, "positive"), ("wt_dec", lambda v: v >= 0, "at least 0"),
             ("momentum", lambda v: v is None or 0 <= v < 1, "in [0, 1)"), ("crop_size", lambda v: v > 0, "positive"),
             ("batch_size", lambda v: v >= 1, "at least 1"), ("max_epoches", lambda v: v >= 1, "at least 1"))
    for name, ok, what in rules:
        if hasattr(args, name) and not ok(getattr(args, name)):
            raise RetabError(f"--{name} must be {what}, got {getattr(args, name)}")


def setup_stage(args) -> None:
    """Logging, the settings check and the seeds (--seed): the first thing every network stage
    does. Under torchrun, processes other than rank 0 log errors only (their warnings would
    repeat rank 0's)."""
    check_settings(args)
    setup_logging()
    if not distributed.process_info().is_main:
        logging.getLogger("retab").setLevel(logging.ERROR)
    seed_everything(args.seed)


# ----------------------------------------------------------------------------- training stages

def add_training_args(parser: argparse.ArgumentParser, *, session_name: str | None, max_epoches: int, lr: float,
                      weights_help: str, batch_size: int = 8, crop_size: int = 448,
                      momentum: float | None = None, network: str | None = None,
                      train_list: str | None = "voc12/train_aug.txt", tblog_dir: str = "./tblog",
                      resume: bool = True, helps: dict[str, str] | None = None) -> None:
    """The flags every training stage has, with the stage's published defaults.

    network: the published --network value (accepted, ignored), None for no such flag; resume:
    whether the stage offers --resume; helps: flag -> help text where a stage says it its own way.
    --device/--seed/--width are not added here (misc.args.add_runtime_args, last, as in every stage).
    """
    texts = {
        "--network": COMPATIBILITY_HELP,
        "--momentum": "real SGD momentum (e.g. 0.9); default: the published quirk, momentum = --wt_dec",
        "--weights": weights_help + f"; {AUTO_WEIGHTS} (the drivers'): the ImageNet weights, else --fallback_weights, "
                                    "else none (resolve_initial_weights)",
        "--optimizer": "sgd: the published poly SGD; adamw: poly AdamW (not in the paper; for networks "
                       "that start from a from-scratch classifier, as in the CPU demo)",
        "--out_dir": "where {session_name}.pth is written",
        "--resume": "go on from {out_dir}/{session_name}.last.pt (written after every epoch) if it exists",
    }
    texts.update(helps or {})

    def add(flag: str, **kwargs) -> None:
        parser.add_argument(flag, help=texts.get(flag), **kwargs)

    add("--batch_size", type=int, default=batch_size)
    add("--max_epoches", type=int, default=max_epoches)
    if network is not None:
        add("--network", default=network)
    add("--lr", type=float, default=lr)
    add("--num_workers", type=int, default=default_num_workers())
    add("--wt_dec", type=float, default=5e-4)
    add("--momentum", type=float, default=momentum)
    add("--optimizer", choices=OPTIMIZERS, default="sgd")
    add("--train_list", default=train_list)
    add("--session_name", default=session_name)
    add("--crop_size", type=int, default=crop_size)
    add("--weights", default=None)
    parser.add_argument("--imagenet_dirs", nargs="+", default=[IMAGENET_PARAMS_DIR], metavar="DIR",
                        help=f"--weights auto: the folders searched, in order, for {IMAGENET_PARAMS_NAME} "
                             f"[{IMAGENET_PARAMS_DIR}]")
    parser.add_argument("--fallback_weights", default=None, metavar="PTH",
                        help="--weights auto without ImageNet weights: start from this file when it exists "
                             "(e.g. the trained PSA classifier), with a warning")
    add("--voc12_root", default="VOC2012")
    add("--tblog_dir", default=tblog_dir)
    add("--out_dir", default=".")
    if resume:
        add("--resume", action="store_true")
    add_precision_args(parser)
    parser.add_argument("--dist_backend", choices=distributed.BACKENDS, default=None,
                        help="torch.distributed backend under torchrun (default: nccl on CUDA, gloo on the CPU)")


def trained_already(args, session_name: str) -> bool:
    """With --resume (the drivers' way), a session whose {out_dir}/{session_name}.pth exists finished
    before: nothing to do, nothing read (delete the file to retrain). Without --resume a stage trains
    anew, as published."""
    final = session_paths(args.out_dir, session_name)[0]
    if not (getattr(args, "resume", False) and final.is_file()):
        return False
    setup_logging()
    log.info("%s exists: trained already, nothing to do (delete it to retrain)", final)
    nothing_to_do()
    return True


def setup_training(args) -> tuple[torch.device, Path]:
    """Start-up of a training stage: logging and seeds, the --fold check (stages that have one), the
    device (under torchrun: this process's, after joining the process group), the VOC root and the
    schedule (under torchrun --batch_size must divide among the processes). Returns (device, VOC root)."""
    setup_stage(args)
    fold = getattr(args, "fold", None)
    if fold is not None:
        voc.check_fold(fold)
    device = distributed.process_device(args.device)
    voc_root = check_dir(args.voc12_root, "VOC2012")
    check_schedule(args.batch_size, args.max_epoches)
    # checked before joining the process group, which would wait for processes that have stopped
    distributed.per_process_batch(args.batch_size, distributed.process_info().world_size)
    Precision.from_args(args).check(device)
    distributed.setup_process(device, getattr(args, "dist_backend", None), process_group=True)
    return device, voc_root


def check_training_outputs(args, session_name: str, **inputs) -> None:
    """check_outputs of a training stage: the checkpoints' folder ({out_dir}/{session_name}'s folder)
    and --tblog_dir against the dataset and the stage's input folders (keywords named as their
    flags, e.g. la_crf_dir=...)."""
    checkpoints = Path(args.out_dir) / Path(session_name).parent
    check_outputs({"--out_dir": checkpoints, "--tblog_dir": args.tblog_dir or None},
                  {**dataset_inputs(args.voc12_root), **{f"--{flag}": folder for flag, folder in inputs.items()}})


def training_names(train_list) -> list[str]:
    """The names of the training list; an empty list stops the run."""
    names = voc.read_name_list(train_list)
    if not names:
        raise RetabError(f"{train_list}: the training list is empty")
    return names


def make_train_config(args, session_name: str | None = None) -> TrainConfig:
    """TrainConfig of the training flags; `session_name` replaces --session_name (a fold's default).
    --resume before any epoch was saved trains from the start (the drivers always pass --resume, so
    that a rerun after an interruption goes on where it stopped)."""
    cfg = TrainConfig(session_name=args.session_name if session_name is None else session_name,
                      max_epoches=args.max_epoches, batch_size=args.batch_size, num_workers=args.num_workers,
                      seed=args.seed, out_dir=args.out_dir, tblog_dir=args.tblog_dir or None,
                      resume=getattr(args, "resume", False), amp=getattr(args, "amp", "none"),
                      channels_last=getattr(args, "channels_last", False))
    last_path = checkpoint_paths(cfg)[1]
    if cfg.resume and not last_path.is_file():
        log.info("--resume: no %s yet, training from the start", last_path)
    return cfg


def make_train_optimizer(args, model: torch.nn.Module, n_samples: int, cfg: TrainConfig):
    """The poly optimizer over the four parameter groups: --optimizer (the published SGD, momentum
    quirk unless --momentum; or AdamW)."""
    if args.optimizer == "adamw" and args.momentum is not None:
        raise RetabError("--momentum applies to --optimizer sgd only")
    return make_optimizer(args.optimizer, param_groups(model), lr=args.lr, weight_decay=args.wt_dec,
                          max_step=max_steps(n_samples, cfg), momentum=args.momentum)


# ----------------------------------------------------------------------------- inference stages

def add_inference_args(parser: argparse.ArgumentParser, *, weights_help: str, network: str | None = None,
                       infer_list: str = "voc12/train_aug.txt", outputs: str = "outputs") -> None:
    """--weights, --network (when the published script had one), --infer_list, --num_workers,
    --voc12_root and --overwrite (help: "recompute {outputs} that already exist")."""
    parser.add_argument("--weights", required=True, help=weights_help)
    if network is not None:
        parser.add_argument("--network", default=network, help=COMPATIBILITY_HELP)
    parser.add_argument("--infer_list", default=infer_list)
    parser.add_argument("--num_workers", type=int, default=default_num_workers(), help="image loading processes")
    parser.add_argument("--voc12_root", default="VOC2012")
    parser.add_argument("--overwrite", action="store_true", help=f"recompute {outputs} that already exist")
    add_precision_args(parser)


def images_to_do(names: Iterable[str], output_paths: Callable[[str], dict[str, Path]],
                 overwrite: bool) -> dict[str, dict[str, Path]]:
    """name -> its outputs to write (kind -> path), for the names with at least one missing; with
    `overwrite`, every name with all its outputs. Keeps the order of `names`."""
    todo = {}
    for name in names:
        paths = output_paths(name)
        missing = dict(paths) if overwrite else {kind: p for kind, p in paths.items() if not p.is_file()}
        if missing:
            todo[name] = missing
    if not todo:  # every output exists: the step keeps the time of the run that wrote them
        nothing_to_do()
    return todo


def process_share(names, stage: str, list_path) -> list[str]:
    """This process's share of an inference list (all of it without torchrun), logged under torchrun."""
    names = list(names)
    info = distributed.current()
    if not info.distributed:
        return names
    share = distributed.shard(names, info)
    log.info("%s: %s takes %d of the %d images in %s", stage, info.describe(), len(share), len(names), list_path)
    return share


def inference_names(infer_list) -> list[str]:
    """The names of --infer_list; an empty list is an error (it would "finish" having done nothing)."""
    names = voc.read_name_list(infer_list)
    if not names:
        raise RetabError(f"{infer_list}: the image list (--infer_list) is empty")
    return names


def plan_inference(args, stage: str, output_paths: Callable[[str], dict[str, Path]]):
    """The common start of a per-image stage: (VOC root, --amp/--channels_last, this process's
    share of --infer_list, the `images_to_do` of that share)."""
    voc_root = check_dir(args.voc12_root, "VOC2012")
    precision = Precision.from_args(args)
    names = process_share(inference_names(args.infer_list), stage, args.infer_list)
    return voc_root, precision, names, images_to_do(names, output_paths, args.overwrite)


def load_inference_model(kind: str, weights, width: float, device, precision: Precision | None = None,
                         backbone: str = DEFAULT_BACKBONE) -> tuple[torch.nn.Module, torch.device]:
    """(network `kind` with the trained weights, in eval mode on its device, that device);
    `device` is a torch.device or a --device name (under torchrun: this process's GPU).
    With a `precision` that changes anything (--amp, --channels_last) the network comes wrapped
    in a retab.misc.precision.PrecisionModel (same calls, float32 outputs)."""
    device = distributed.process_device(device) if isinstance(device, str) else device
    model = build_model(kind, width, backbone)
    load_trained_weights(model, weights)
    model = model.to(device).eval()
    if precision is not None:
        model = apply_precision(model, precision, device).eval()
    return model, device


def _as_is(sample):
    # PIL images do not collate; a module-level function so that loader processes can unpickle it.
    return sample


def image_loader(dataset, num_workers: int, desc: str):
    """The samples of `dataset` one by one, in order, read by `num_workers` processes, with a progress bar."""
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_as_is)
    return progress(loader, total=len(dataset), desc=desc, disable=not distributed.process_info().is_main)
