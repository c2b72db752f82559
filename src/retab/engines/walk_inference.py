"""The one per-image random-walk inference loop (SPEC 3 `infer_aff`, SPEC 4 the two RETAB stages).

For every image of a list: the normalised image, zero-padded at the bottom/right to a multiple
of 8, goes through the affinity net (features on the ceil(H/8) x ceil(W/8) grid); the input score
dict {score_dir}/{name}.npy gives the scores; `retab.random_walk.random_walk` propagates them;
the outputs are {out_rw}/{name}.png (argmax over the 21 channels, VOC palette PNG) and, with
out_rw_cam, the walked score dict {out_rw_cam}/{name}.npy. Images whose outputs all exist are
skipped unless `overwrite`.

Modes (`retab.random_walk.MODES`):
- 'psa'    (PSA): CAM dict {class k: HxW}; background (1 - max CAM) ** alpha; every pair walks.
- 'stage1' (RETAB): the same input and scores, only non-boundary pairs walk; output keys 0 and
           k+1 for each class k of the CAM dict.
- 'stage2' (RETAB): stage 1's output dicts {label: HxW} (key 0 = background), channel k = dict[k],
           no alpha; output keys = the keys read.
The RETAB modes read the boundary target map {boundary_target_dir}/{name}.png (255 non-boundary,
0 boundary) of the image's size.

Stage modules call `main(argv, mode, prog, description)`; `run_walk` is the loop itself. Under
torchrun each process walks names[rank::world] of the list.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from retab.data import image_to_tensor
from retab.data.datasets import image_size_hw, load_target_for, load_voc_image
from retab.data.transforms import check_sampling
from retab.misc.errors import RetabError
from retab.misc.fileio import load_score_dict, save_score_dict
from retab.voc import save_label_png
from retab.misc.precision import Precision
from retab.models import DEFAULT_BACKBONE
from retab.published import WALK_ALPHA, WALK_BETA, WALK_LOGT
from retab.random_walk import (MODES, boundary_grid, grid_size, labels_from_scores, pad_to_multiple,
                               random_walk, score_dict, stage1_labels, stage1_scores, stage2_scores)
from retab.score_format import check_keys
from retab.engines.stage_support import (add_grid_sampling_arg, add_runtime_args, add_cls_labels_arg, add_inference_args, check_dir, check_outputs, dataset_inputs,
                                 image_loader, images_to_do, inference_names, labels_table, load_inference_model,
                                 process_share, resolve_image_labels, setup_stage)

log = logging.getLogger("retab")

BOUNDARY_MODES = ("stage1", "stage2")  # the modes that read boundary target maps


@dataclass(frozen=True)
class WalkConfig:
    """What a walk needs besides the images: the mode and SPEC 4's alpha (not stage 2), beta, logt."""

    mode: str
    alpha: float = WALK_ALPHA
    beta: float = WALK_BETA
    logt: int = WALK_LOGT
    grid_sampling: str = "nearest"  # how the boundary target map is sampled onto the grid

    def __post_init__(self):
        check_sampling(self.grid_sampling)
        if self.mode not in MODES:
            raise RetabError(f"random walk mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.logt < 0:
            raise RetabError(f"--logt must be >= 0, got {self.logt}")
        if not (self.alpha > 0 and self.beta > 0):
            raise RetabError(f"--alpha and --beta must be positive, got {self.alpha} and {self.beta}")

    @property
    def needs_boundary(self) -> bool:
        return self.mode in BOUNDARY_MODES


# ----------------------------------------------------------------------------- one image

@torch.no_grad()
def affinity_features(model, img, device) -> torch.Tensor:
    """[C, ceil(H/8), ceil(W/8)] features of the normalised image zero-padded to a multiple of 8."""
    x = pad_to_multiple(image_to_tensor(img))
    return model(x[None].to(device))[0]


READERS = {"psa": "infer_aff (the PSA walk)", "stage1": "stage 1 (infer_aff_cam_boundary)",
           "stage2": "stage 2 (infer_aff_cam_boundary_secondary)"}


def input_scores(in_dict: dict, config: WalkConfig, height: int, width: int,
                 source: str = "score dict", labels=None) -> tuple[np.ndarray, list[int]]:
    """(scores (21, H, W), output keys) of one image's input dict; the output keys are the labels walked.
    labels: the picture's image-level vector float32[20]; given, the dict's keys must be exactly
    its classes in the mode's format (score_format.check_keys)."""
    if labels is not None:
        check_keys(in_dict, labels, config.mode == "stage2", source, READERS[config.mode])
    if config.mode == "stage2":
        keys = sorted(int(k) for k in in_dict)
        if 0 not in keys:
            raise RetabError(f"{source}: stage 2 reads stage 1's score dicts, which hold the background "
                             f"key 0; this one has keys {keys}")
        return stage2_scores(in_dict, height, width, source=source), keys
    return stage1_scores(in_dict, height, width, config.alpha, source=source), stage1_labels(in_dict)


def walk_image(model, device, img, in_dict: dict, config: WalkConfig, target_map=None,
               source: str = "score dict", picture: str = "the picture", labels=None) -> tuple[np.ndarray, list[int]]:
    """(walked scores float32 (21, H, W), output keys) of one PIL image and its input dict.

    target_map: HxW boundary target map (0 = boundary), required by the RETAB modes. source names
    the input dict and picture the image in errors; labels: as for input_scores.
    """
    height, width = img.height, img.width
    scores, keys = input_scores(in_dict, config, height, width, source, labels)
    nonboundary = None
    if config.needs_boundary:
        if target_map is None:
            raise RetabError(f"random walk {config.mode} needs the boundary target map of {source}")
        nonboundary = boundary_grid(target_map, *grid_size(height, width), config.grid_sampling)
    features = affinity_features(model, img, device)
    if not bool(torch.isfinite(features).all()):
        raise RetabError(f"{picture}: the affinity net's features hold NaN or infinite values "
                         "(non-finite weights, or an --amp overflow)")
    walked = random_walk(features, scores, keys, config.mode, nonboundary_grid=nonboundary,
                         beta=config.beta, logt=config.logt)
    return walked, keys


# ----------------------------------------------------------------------------- the loop

class WalkInputs(Dataset):
    """name -> (name, PIL image, input score dict, boundary target map or None): read in loader workers."""

    def __init__(self, names, voc_root, score_dir, boundary_target_dir=None):
        self.names = list(names)
        self.voc_root = Path(voc_root)
        self.score_dir = Path(score_dir)
        self.boundary_target_dir = None if boundary_target_dir is None else Path(boundary_target_dir)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        name = self.names[index]
        img = load_voc_image(self.voc_root, name)
        in_dict = load_score_dict(self.score_dir / f"{name}.npy")
        target = None
        if self.boundary_target_dir is not None:
            target = load_target_for(self.boundary_target_dir, name, image_size_hw(img))
        return name, img, in_dict, target


def output_paths(name: str, out_rw, out_rw_cam=None) -> dict[str, Path]:
    """kind -> path of the image's outputs: 'rw' the label PNG, 'rw_cam' the walked score dict (if asked for)."""
    paths = {"rw": Path(out_rw) / f"{name}.png"}
    if out_rw_cam:
        paths["rw_cam"] = Path(out_rw_cam) / f"{name}.npy"
    return paths


def pending_names(names, out_rw, out_rw_cam=None, overwrite: bool = False) -> list[str]:
    """The names still to do: all with `overwrite`, else those missing an output."""
    return list(images_to_do(names, lambda name: output_paths(name, out_rw, out_rw_cam), overwrite))


def check_inputs(names, score_dir: Path, boundary_target_dir: Path | None) -> None:
    """Fail before any work (and outside loader workers) when an input file is missing."""
    for name in names:
        path = score_dir / f"{name}.npy"
        if not path.is_file():
            raise RetabError(f"{path}: input score dict not found")
        if boundary_target_dir is not None and not (boundary_target_dir / f"{name}.png").is_file():
            raise RetabError(f"{boundary_target_dir / (name + '.png')}: boundary target map not found")


def run_walk(names, voc_root, weights, score_dir, out_rw, config: WalkConfig, out_rw_cam=None,
             boundary_target_dir=None, width: float = 1.0, device="auto", num_workers: int = 0,
             overwrite: bool = False, precision: Precision | None = None, cls_labels=None,
             backbone: str = DEFAULT_BACKBONE) -> list[str]:
    """Walk every image of `names` whose outputs are missing (all with `overwrite`); returns the
    names processed. weights: the trained affinity net `.pth` (strict). Under torchrun: this
    process's share of `names` only. precision: --amp / --channels_last of the affinity net.
    cls_labels: the image-level labels file (default: voc12/cls_labels.npy, else the XMLs) that
    every input dict's keys are checked against."""
    check_outputs({"--out_rw": out_rw, "--out_rw_cam": out_rw_cam},
                  {"--cam_dir": score_dir, "--targetpixel_dir": boundary_target_dir, **dataset_inputs(voc_root)})
    voc_root = check_dir(voc_root, "VOC2012")
    score_dir = check_dir(score_dir, "input score dict")
    if config.needs_boundary:
        if boundary_target_dir is None:
            raise RetabError(f"random walk {config.mode} needs --targetpixel_dir (boundary target maps)")
        boundary_target_dir = check_dir(boundary_target_dir, "boundary target map")
    else:
        boundary_target_dir = None
    names = process_share(names, f"random walk ({config.mode})", "the list")
    todo = pending_names(names, out_rw, out_rw_cam, overwrite)
    log.info("random walk (%s): %d images, %d to do", config.mode, len(names), len(todo))
    if not todo:
        return []
    check_inputs(todo, score_dir, boundary_target_dir)
    labels = labels_table(todo, resolve_image_labels(cls_labels, voc_root))

    model, device = load_inference_model("aff", weights, width, device, precision, backbone)
    inputs = WalkInputs(todo, voc_root, score_dir, boundary_target_dir)
    for name, img, in_dict, target in image_loader(inputs, num_workers, f"random walk {config.mode}"):
        walked, keys = walk_image(model, device, img, in_dict, config, target,
                                  source=str(score_dir / f"{name}.npy"), picture=name, labels=labels[name])
        outputs = output_paths(name, out_rw, out_rw_cam)
        save_label_png(outputs["rw"], labels_from_scores(walked))
        if "rw_cam" in outputs:
            save_score_dict(outputs["rw_cam"], score_dict(walked, keys))
    return todo


# ----------------------------------------------------------------------------- command line

def build_parser(mode: str, prog: str, description: str = "",
                 infer_list_default: str = "voc12/train_aug.txt") -> argparse.ArgumentParser:
    """The published flags of infer_aff (mode 'psa') and of the two RETAB stages."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_inference_args(p, weights_help="trained affinity net .pth", network="network.resnet38_aff",
                       infer_list=infer_list_default)
    p.add_argument("--cam_dir", required=True,
                   help="input score dicts {name}.npy: CAM dicts (stage 1, psa) or stage 1's dicts (stage 2)")
    if mode == "stage2":
        p.add_argument("--alpha", type=float, default=None,
                       help="accepted for compatibility and ignored: stage 2 reads stage 1's background")
    else:
        p.add_argument("--alpha", type=float, default=WALK_ALPHA, help=f"background = (1 - max CAM) ** alpha ({WALK_ALPHA})")
    p.add_argument("--beta", type=float, default=WALK_BETA)
    p.add_argument("--logt", type=int, default=WALK_LOGT)
    if mode in BOUNDARY_MODES:
        p.add_argument("--targetpixel_dir", dest="boundary_target_dir", required=True,
                       help="boundary target maps {name}.png (255 non-boundary, 0 boundary)")
        add_grid_sampling_arg(p, "the boundary target maps")
    p.add_argument("--out_rw", required=True, help="label PNGs {name}.png")
    p.add_argument("--out_rw_cam", default=None, help="walked score dicts {name}.npy (optional)")
    add_cls_labels_arg(p)
    add_runtime_args(p)
    return p


def main(argv=None, mode: str = "psa", prog: str = "retab infer_aff", description: str = "",
         infer_list_default: str = "voc12/train_aug.txt") -> int:
    args = build_parser(mode, prog, description, infer_list_default).parse_args(argv)
    setup_stage(args)
    # only the boundary modes' parser has --targetpixel_dir and --grid_sampling (the PSA walk reads no
    # boundary map): WalkConfig's default sampling stands for it
    boundary = mode in BOUNDARY_MODES
    options = {"beta": args.beta, "logt": args.logt}
    if boundary:
        options["grid_sampling"] = args.grid_sampling
    if mode != "stage2":
        options["alpha"] = args.alpha
    elif args.alpha is not None:
        log.info("stage 2 has no alpha: --alpha %g is ignored", args.alpha)
    config = WalkConfig(mode, **options)
    names = inference_names(args.infer_list)
    run_walk(names, args.voc12_root, args.weights, args.cam_dir, args.out_rw, config,
             out_rw_cam=args.out_rw_cam, boundary_target_dir=args.boundary_target_dir if boundary else None,
             width=args.width, device=args.device, num_workers=args.num_workers, overwrite=args.overwrite,
             precision=Precision.from_args(args), cls_labels=args.cls_labels, backbone=args.backbone)
    return 0
