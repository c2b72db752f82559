"""`retab infer_seg` (seg/infer_seg.py): multi-scale segmentation inference to label PNGs (SPEC 7).

Per image of --infer_list (val by default): for each of --scales the image is resized (bicubic,
sizes rounded as the CAM inference does: retab.cam.scaled_size) and, with --flip True, also seen
mirrored (one batch of two); each pass's logits are upsampled bilinearly (align_corners=False) to
the original H x W, turned into probabilities (softmax over the 21 labels), mirrored back, and
the probabilities of all passes are averaged. With --crf True the average is refined by the dense
CRF of retab.crf (SPEC 3's kernels, 10 iterations) on the RGB image. The label map (argmax, ties
to the lower label) goes to `{out_dir}/{name}.png`, an 8-bit VOC palette PNG of exactly the
image's size. Images whose PNG exists are skipped unless --overwrite. Under torchrun each process
takes names[rank::world] of the list.

Then `retab evaluation_boundary --fold F --type png --list voc12/val.txt --predict_dir OUT_DIR
--gt_dir VOC2012/SegmentationClass ...` gives the all/base/novel mIoU (seg/run_seg.sh does this).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from retab.cam import multiscale_inputs
from retab.crf import dense_crf
from retab.data import ImageDataset
from retab.misc.args import str2bool
from retab.misc.errors import RetabError
from retab.voc import save_label_png
from retab.random_walk import labels_from_scores
from retab.engines.stage_support import (add_runtime_args, add_inference_args, check_outputs, dataset_inputs, image_loader,
                                 load_inference_model, plan_inference, setup_stage)

log = logging.getLogger("retab")

SEG_SCALES = (1.0, 0.5, 1.5)


@torch.no_grad()
def multiscale_probabilities(model, img, scales: Sequence[float] = SEG_SCALES, flip: bool = True,
                             device: torch.device | str = "cpu") -> np.ndarray:
    """float32 (21, H, W): label probabilities averaged over every scale (and mirror) of `img`."""
    if not scales:
        raise RetabError("at least one inference scale is needed")
    device = torch.device(device)
    out_size = (img.height, img.width)
    total, passes = None, 0
    for scale in scales:
        batch = torch.stack(multiscale_inputs(img, (scale,), flip)).to(device)
        logits = F.interpolate(model(batch), size=out_size, mode="bilinear", align_corners=False)
        probs = torch.softmax(logits.float(), dim=1)
        if flip:
            probs[1] = probs[1].flip(-1)  # the second pass saw the mirrored image
        summed = probs.sum(dim=0)
        total = summed if total is None else total + summed
        passes += probs.shape[0]
    return (total / passes).cpu().numpy().astype(np.float32)


def predict_labels(probs: np.ndarray, img=None, crf: bool = False) -> np.ndarray:
    """uint8 label map of (21, H, W) probabilities, optionally after the dense CRF on `img`."""
    if crf:
        probs = dense_crf(np.asarray(img.convert("RGB"), dtype=np.uint8), probs)
    return labels_from_scores(probs)


def segment_image(model, img, scales: Sequence[float] = SEG_SCALES, flip: bool = True, crf: bool = False,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """The uint8 H x W label map of one PIL image."""
    return predict_labels(multiscale_probabilities(model, img, scales, flip, device), img, crf)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab infer_seg", description=__doc__.splitlines()[0])
    add_inference_args(p, weights_help="trained segmentation network .pth", infer_list="voc12/val.txt",
                       outputs="PNGs")
    p.add_argument("--scales", type=float, nargs="+", default=list(SEG_SCALES))
    p.add_argument("--flip", type=str2bool, default=True, help="also infer on the mirrored image (default True)")
    p.add_argument("--crf", type=str2bool, default=False, help="dense-CRF post-processing (default False)")
    p.add_argument("--out_dir", default="./seg_pred", help="label PNGs {name}.png")
    add_runtime_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_stage(args)
    if any(s <= 0 for s in args.scales):
        raise RetabError(f"--scales must be positive, got {args.scales}")
    out_dir = Path(args.out_dir)
    check_outputs({"--out_dir": out_dir}, dataset_inputs(args.voc12_root))
    voc_root, precision, names, todo = plan_inference(args, "infer_seg", lambda name: {"png": out_dir / f"{name}.png"})
    log.info("infer_seg: %d images in %s, %d to do", len(names), args.infer_list, len(todo))
    if not todo:
        return 0
    model, device = load_inference_model("seg", args.weights, args.width, args.device, precision, args.backbone)
    for name, img, _ in image_loader(ImageDataset(list(todo), voc_root), args.num_workers, "segmentation"):
        probs = multiscale_probabilities(model, img, args.scales, args.flip, device)
        if not np.isfinite(probs).all():
            raise RetabError(f"{name}: the segmentation net's output holds NaN or infinite values "
                             "(non-finite weights, or an --amp overflow)")
        save_label_png(todo[name]["png"], predict_labels(probs, img, args.crf))
    return 0
