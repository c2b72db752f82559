"""`retab prop_boundary_target` (RETAB/prop_boundary_target.py): boundary target maps (SPEC 4).

For every image of --infer_list at full size: the trained boundary net's logits, p = sigmoid;
non-boundary ("target pixel") where p < --threshold (0.5); with --kernel k > 0 (odd) the
non-boundary region is eroded (replicate pad, k x k average, keep >= 0.99); --kernel 0 (the
published run script's value, our default) means no erosion. Output: {out_dir}/{name}.png, 8-bit
grey, 255 non-boundary, 0 boundary. Images whose map exists are skipped unless --overwrite.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from retab import voc
from retab.boundary import boundary_target_map
from retab.data import ImageDataset, image_to_tensor
from retab.misc.args import add_runtime_args, setup_logging
from retab.misc.device import resolve_device, seed_everything
from retab.misc.errors import RetabError
from retab.misc.fileio import save_gray_png
from retab.models import build_model
from retab.stages.train_cls import check_dir, default_num_workers, load_trained_weights

log = logging.getLogger("retab")


@torch.no_grad()
def boundary_probability(model, img, device) -> torch.Tensor:
    """HxW sigmoid of the boundary net's logits for a PIL image at full size (on `device`)."""
    logits = model(image_to_tensor(img)[None].to(device))
    return torch.sigmoid(logits[0, 0])


def _as_is(sample):
    return sample


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab prop_boundary_target", description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="trained boundary net .pth")
    p.add_argument("--network", default="network.resnet38_boundary", help="accepted for compatibility, ignored")
    p.add_argument("--infer_list", default="voc12/train_aug.txt")
    p.add_argument("--num_workers", type=int, default=default_num_workers(), help="image loading processes")
    p.add_argument("--voc12_root", default="VOC2012")
    p.add_argument("--kernel", type=int, default=0, help="erosion kernel: 0 (none, default) or an odd size")
    p.add_argument("--threshold", type=float, default=0.5, help="non-boundary where sigmoid < threshold")
    p.add_argument("--out_dir", required=True, help="target maps {name}.png")
    p.add_argument("--overwrite", action="store_true", help="recompute maps that already exist")
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    boundary_target_map(np.zeros((1, 1), np.float32), args.threshold, args.kernel)  # rejects a bad --kernel now
    if not 0.0 < args.threshold <= 1.0:
        raise RetabError(f"--threshold must lie in (0, 1], got {args.threshold}")
    voc_root = check_dir(args.voc12_root, "VOC2012")
    out_dir = Path(args.out_dir)
    names = voc.read_name_list(args.infer_list)
    todo = [n for n in names if args.overwrite or not (out_dir / f"{n}.png").is_file()]
    log.info("prop_boundary_target: %d images in %s, %d to do (kernel %d, threshold %g)", len(names),
             args.infer_list, len(todo), args.kernel, args.threshold)
    if not todo:
        return 0

    device = resolve_device(args.device)
    model = build_model("boundary", args.width)
    load_trained_weights(model, args.weights)
    model.to(device).eval()
    loader = DataLoader(ImageDataset(todo, voc_root), batch_size=None, shuffle=False,
                        num_workers=args.num_workers, collate_fn=_as_is)
    for name, img, _ in tqdm(loader, total=len(todo), desc="boundary targets"):
        prob = boundary_probability(model, img, device)
        save_gray_png(out_dir / f"{name}.png", boundary_target_map(prob, args.threshold, args.kernel))
    return 0
