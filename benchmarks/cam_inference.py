"""Multi-scale CAM inference (what `retab infer_cls` computes per image), images/s of variants measured in one run.

Variants, all on the same synthetic same-size images with the published scales (1.0, 0.5, 1.5,
2.0), each scale with its mirror:
  per-image      one image at a time, its two passes of a scale in one batch (infer_cls --cam_batch 1,
                 the default)
  batched        --batch images of one size per network batch (infer_cls --cam_batch N)
  batched + AMP  the same under autocast (--amp bf16 on GPUs that have it, else fp16), on CUDA; on
                 the CPU only with --cpu-amp (bf16)
  ... + channels_last  the same in the NHWC layout (CUDA)
Each variant runs --repeats times after a warm-up pass; the fastest run counts (least disturbed by
other load). Times include the resizing and normalisation of the inputs and the aggregation of the
CAMs, as in infer_cls (not the file reading and writing, nor the CRFs). The printed ratios compare
variants of this one run; the maps of every variant are compared with the per-image float32 ones.

    .venv/bin/python benchmarks/cam_inference.py                       # CUDA if available, else CPU
    .venv/bin/python benchmarks/cam_inference.py --device cpu --width 0.25 --size 188 250 --images 8 --cpu-amp
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from machine_info import describe  # noqa: E402
from retab.cam import CAM_SCALES, multiscale_cam, multiscale_cams  # noqa: E402
from retab.misc.precision import Precision, apply_precision  # noqa: E402
from retab.models import build_model  # noqa: E402


def synthetic_images(n: int, height: int, width: int, seed: int):
    """Smooth random colour fields with a few blocks (JPEG-like content; the content does not change the time)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        small = rng.integers(0, 255, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        images.append(img)
        vector = np.zeros(20, np.float32)
        vector[rng.choice(20, size=rng.integers(1, 3), replace=False)] = 1
        labels.append(vector)
    return images, labels


def run_variant(model, precision: Precision, images, labels, scales, device, batch: int):
    net = apply_precision(model, precision, device) if precision.enabled else model
    out = []
    if batch == 1:
        for img, vector in zip(images, labels):
            out.append(multiscale_cam(net.cam, img, vector, scales, device))
    else:
        for start in range(0, len(images), batch):
            out += multiscale_cams(net.cam, images[start:start + batch], labels[start:start + batch], scales, device)
    return out


def timed(fn, device, repeats: int):
    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up: library initialisation, cuDNN algorithm choice
    best, result = float("inf"), None
    for _ in range(repeats):
        synchronise()
        start = time.perf_counter()
        result = fn()
        synchronise()
        best = min(best, time.perf_counter() - start)
    return best, result


def max_difference(a, b) -> tuple[float, float]:
    diffs = [np.abs(x[k] - y[k]) for x, y in zip(a, b) for k in x]
    return max(float(d.max()) for d in diffs), float(np.mean([d.mean() for d in diffs]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--width", type=float, default=None,
                        help="ResNet-38 width (default: 1.0 on CUDA, 0.125 on CPU)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="image size (default: VOC's 375 500 on CUDA, 188 250 on CPU)")
    parser.add_argument("--images", type=int, default=None, help="images per run (default: 32 on CUDA, 8 on CPU)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch of the batched variants")
    parser.add_argument("--scales", type=float, nargs="+", default=list(CAM_SCALES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steady on a machine with other load; 0: torch's default)")
    parser.add_argument("--cpu-amp", action="store_true", help="on the CPU also measure --amp bf16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    width = args.width if args.width is not None else (1.0 if cuda else 0.125)
    height, image_width = args.size if args.size else ((375, 500) if cuda else (188, 250))
    n = args.images if args.images is not None else (32 if cuda else 8)
    batch = min(args.batch, n)

    print(describe(device))
    print(f"device {device}; ResNet-38 width {width}; {n} images of {height}x{image_width}; scales {args.scales} "
          f"with mirrors; batched variants: {batch} images per batch; fastest of {args.repeats} runs")
    torch.manual_seed(args.seed)
    model = build_model("cls", width).to(device).eval()
    images, labels = synthetic_images(n, height, image_width, args.seed)

    variants = [("per-image", Precision(), 1), ("batched", Precision(), batch)]
    amp = None
    if cuda:
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif args.cpu_amp:
        amp = "bf16"
    if amp:
        variants.append((f"batched + {amp}", Precision(amp=amp), batch))
    if cuda:
        variants.append((f"batched + {amp} + channels_last", Precision(amp=amp, channels_last=True), batch))

    results = {}
    for name, precision, size in variants:
        model_here = model if not precision.channels_last else build_model("cls", width).to(device).eval()
        if model_here is not model:
            model_here.load_state_dict(model.state_dict())
        seconds, cams = timed(lambda: run_variant(model_here, precision, images, labels, args.scales, device, size),
                              device, args.repeats)
        results[name] = (seconds, cams)
        print(f"{name:34s} {n / seconds:8.2f} images/s  ({seconds:.3f} s)", flush=True)

    base_s, base_cams = results["per-image"]
    print()
    for name, (seconds, cams) in results.items():
        if name == "per-image":
            continue
        worst, mean = max_difference(base_cams, cams)
        print(f"{name} / per-image: {base_s / seconds:.2f}x images/s   "
              f"(CAM maps in [0, 1]: max |diff| {worst:.1e}, mean {mean:.1e})")
    if amp:
        fp32_s = results["batched"][0]
        print(f"AMP ({amp}) / float32, both batched: {fp32_s / results[f'batched + {amp}'][0]:.2f}x images/s")


if __name__ == "__main__":
    main()
