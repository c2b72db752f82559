"""`retab prop_boundary_target` (RETAB/prop_boundary_target.py): boundary target maps (SPEC 4).

For every image of --infer_list at full size: the trained boundary net's logits, p = sigmoid;
non-boundary ("target pixel") where p < --threshold (0.5); with --kernel k > 0 (odd) the
non-boundary region is eroded (replicate pad, k x k average, keep >= 0.99); --kernel 0 (the
published run script's value, our default) means no erosion. Output: {out_dir}/{name}.png, 8-bit
grey, 255 non-boundary, 0 boundary. Images whose map exists are skipped unless --overwrite.
Under torchrun each process takes names[rank::world] of the list.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from retab.boundary import boundary_target_map
from retab.data import ImageDataset, image_to_tensor
from retab.misc.errors import RetabError
from retab.misc.fileio import save_gray_png
from retab.engines.stage_support import (add_runtime_args, add_inference_args, check_outputs, dataset_inputs, image_loader,
                                 load_inference_model, plan_inference, setup_stage)

log = logging.getLogger("retab")


@torch.no_grad()
def boundary_probability(model, img, device) -> torch.Tensor:
    """HxW sigmoid of the boundary net's logits for a PIL image at full size (on `device`)."""
    logits = model(image_to_tensor(img)[None].to(device))
    return torch.sigmoid(logits[0, 0])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab prop_boundary_target", description=__doc__.splitlines()[0])
    add_inference_args(p, weights_help="trained boundary net .pth", network="network.resnet38_boundary",
                       outputs="maps")
    p.add_argument("--kernel", type=int, default=0, help="erosion kernel: 0 (none, default) or an odd size")
    p.add_argument("--threshold", type=float, default=0.5, help="non-boundary where sigmoid < threshold")
    p.add_argument("--out_dir", required=True, help="target maps {name}.png")
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_stage(args)
    boundary_target_map(np.zeros((1, 1), np.float32), args.threshold, args.kernel)  # rejects a bad --kernel now
    if not 0.0 < args.threshold <= 1.0:
        raise RetabError(f"--threshold must lie in (0, 1], got {args.threshold}")
    out_dir = Path(args.out_dir)
    check_outputs({"--out_dir": out_dir}, dataset_inputs(args.voc12_root))
    voc_root, precision, names, todo = plan_inference(args, "prop_boundary_target",
                                                      lambda name: {"map": out_dir / f"{name}.png"})
    log.info("prop_boundary_target: %d images in %s, %d to do (kernel %d, threshold %g)", len(names),
             args.infer_list, len(todo), args.kernel, args.threshold)
    if not todo:
        return 0

    model, device = load_inference_model("boundary", args.weights, args.width, args.device, precision, args.backbone)
    for name, img, _ in image_loader(ImageDataset(list(todo), voc_root), args.num_workers, "boundary targets"):
        prob = boundary_probability(model, img, device)
        if not bool(torch.isfinite(prob).all()):
            raise RetabError(f"{name}: the boundary net's output holds NaN or infinite values "
                             "(non-finite weights, or an --amp overflow)")
        save_gray_png(todo[name]["map"], boundary_target_map(prob, args.threshold, args.kernel))
    return 0
