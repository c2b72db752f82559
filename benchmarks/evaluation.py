"""Curve-mode evaluation of npy score dicts: the project's evaluator against the published scheme.

The reference does what the published script does: for every background threshold it reloads
every prediction and GT file, builds the 21-channel float32 tensor, takes np.argmax and sums
(gt == c), (pred == c) and both for each of the 21 labels, on as many processes as the project's
evaluator uses. Both run in this one process run; the ratio is printed, and the two curves are
checked to agree.

    python benchmarks/evaluation.py                 # mini-VOC (retab synth_voc --scale small) if available
    python benchmarks/evaluation.py --synthetic     # random VOC-sized masks (150 images 500x375)
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from retab import voc  # noqa: E402
from retab.cli import run_stage  # noqa: E402
from retab.misc.fileio import load_score_dict, save_score_dict  # noqa: E402
from retab.voc import save_label_png  # noqa: E402
from retab.engines import evaluation  # noqa: E402

FOLD = 0


# ----------------------------------------------------------------------------- data

def box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable box filter (integral images), to make CAM-like smooth maps from masks."""
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        hi = np.take(c, np.arange(2 * radius + 1, c.shape[axis]), axis=axis)
        lo = np.take(c, np.arange(0, c.shape[axis] - 2 * radius - 1), axis=axis)
        out = (hi - lo) / (2 * radius + 1)
    return out


def cam_like_dict(gt: np.ndarray, rng) -> dict:
    """Score dict {class: map} for the object classes of a mask: blurred indicator plus noise."""
    classes = [int(c) for c in np.unique(gt) if 1 <= c <= voc.NUM_CLASSES]
    if not classes:
        classes = [int(rng.integers(1, voc.NUM_CLASSES + 1))]
    maps = {}
    for c in classes:
        score = box_blur((gt == c).astype(np.float32), 12) * rng.uniform(0.5, 1.0)
        score += rng.random(gt.shape) * 0.15
        maps[c - 1] = (score / score.max()).astype(np.float32)
    return maps


def random_mask(rng, h: int = 375, w: int = 500) -> np.ndarray:
    """Background with 1-3 object rectangles and a 5 px ignore band along their outlines."""
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        y0, x0 = int(rng.integers(0, h - 60)), int(rng.integers(0, w - 60))
        y1, x1 = y0 + int(rng.integers(40, h - y0)), x0 + int(rng.integers(40, w - x0))
        mask[max(0, y0 - 2):y1 + 3, max(0, x0 - 2):x1 + 3] = voc.IGNORE
        mask[y0 + 3:y1 - 2, x0 + 3:x1 - 2] = int(rng.integers(1, voc.NUM_LABELS))
    return mask


def synthetic_dataset(root: Path, count: int, seed: int) -> tuple[list[str], Path, Path]:
    rng = np.random.default_rng(seed)
    names = [f"2007_{i:06d}" for i in range(count)]
    for name in names:
        gt = random_mask(rng)
        save_label_png(root / "gt" / f"{name}.png", gt)
        save_score_dict(root / "pred" / f"{name}.npy", cam_like_dict(gt, rng))
    return names, root / "pred", root / "gt"


def mini_voc_dataset(root: Path, seed: int) -> tuple[list[str], Path, Path]:
    rc = run_stage("synth_voc", ["--out", str(root / "voc"), "--seed", str(seed), "--scale", "small"])
    if rc != 0:
        raise SystemExit(f"retab synth_voc failed with status {rc}")
    voc_root = root / "voc"
    names = voc.read_name_list(voc_root / "ImageSets" / "Segmentation" / "train.txt")
    rng = np.random.default_rng(seed)
    for name in names:
        gt = voc.load_label_png(voc.mask_path(voc_root, name, aug=False))
        save_score_dict(root / "pred" / f"{name}.npy", cam_like_dict(gt, rng))
    return names, root / "pred", voc_root / "SegmentationClass"


# ----------------------------------------------------------------------------- published-style reference

def reference_image(args) -> np.ndarray:
    """(3, 21) counts T, P, TP of one image at one threshold, files read afresh."""
    name, pred_dir, gt_dir, t = args
    scores = load_score_dict(Path(pred_dir) / f"{name}.npy")  # never a pickle-enabled np.load
    h, w = next(iter(scores.values())).shape
    tensor = np.zeros((voc.NUM_LABELS, h, w), np.float32)
    for key, value in scores.items():
        tensor[key + 1] = value
    tensor[0] = t
    pred = np.argmax(tensor, axis=0).astype(np.uint8)
    gt = voc.load_label_png(Path(gt_dir) / f"{name}.png")
    valid = gt < voc.IGNORE
    hit = (pred == gt) * valid
    counts = np.zeros((3, voc.NUM_LABELS), np.int64)
    for c in range(voc.NUM_LABELS):
        counts[0, c] = np.sum((gt == c) * valid)
        counts[1, c] = np.sum((pred == c) * valid)
        counts[2, c] = np.sum((gt == c) * hit)
    return counts


def reference_curve(names, pred_dir, gt_dir, thresholds, workers: int) -> list[float]:
    mious = []
    with multiprocessing.Pool(workers) as pool:
        for t in thresholds:
            jobs = [(n, str(pred_dir), str(gt_dir), t) for n in names]
            total = sum(pool.map(reference_image, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
            t_count, p_count, tp = total
            mious.append(float(np.mean(tp / (t_count + p_count - tp + 1e-10)) * 100))
    return mious


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="random VOC-sized data instead of the mini-VOC")
    parser.add_argument("--images", type=int, default=150, help="image count of --synthetic (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes for both evaluators (default: all cores)")
    args = parser.parse_args(argv)
    workers = args.workers or len(os.sched_getaffinity(0))
    use_mini_voc = not args.synthetic and importlib.util.find_spec("retab.stages.synth_voc") is not None
    thresholds = evaluation.scan_thresholds(evaluation.PSA_SCAN_LAST)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if use_mini_voc:
            names, pred_dir, gt_dir = mini_voc_dataset(root, args.seed)
            source = "mini-VOC (retab synth_voc --scale small), SegmentationClass, train.txt"
        else:
            names, pred_dir, gt_dir = synthetic_dataset(root, args.images, args.seed)
            source = "synthetic random masks"
        sizes = {voc.load_label_png(Path(gt_dir) / f"{n}.png").shape for n in names[:50]}
        print(f"data: {source}; {len(names)} images, e.g. sizes {sorted(sizes)[:3]}; "
              f"{len(thresholds)} thresholds; {workers} worker processes")

        start = time.perf_counter()
        result = evaluation.evaluate(names, pred_dir, gt_dir, "npy", thresholds, fold=FOLD, workers=workers,
                                     progress=False)
        project_s = time.perf_counter() - start

        start = time.perf_counter()
        reference = reference_curve(names, pred_dir, gt_dir, thresholds, workers)
        reference_s = time.perf_counter() - start

    diff = max(abs(s.miou - r) for s, r in zip(result.curve, reference))
    print(f"project evaluator (one read per file, one pass for all thresholds): {project_s:8.2f} s")
    print(f"reference (files reloaded per threshold, published scheme):        {reference_s:8.2f} s")
    print(f"speed-up: {reference_s / project_s:.1f}x   (max |mIoU difference| over the curve: {diff:.2e})")
    print(f"best mIoU {result.best.miou:.2f} at t={result.best.threshold:.2f}")
    return 0 if diff < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
