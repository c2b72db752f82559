"""`retab evaluation_boundary` (RETAB): all/base/novel mIoU of a fold (SPEC 6).

The flags of `retab evaluation` plus `--fold` (required), `--type npy_new` (score dicts whose key 0
is replaced by the background score t) and `--targetpixel_dir` (GT pixels whose target map is 0
are ignored; the literal `None` means no folder, as the published scripts pass it). The curve
scans t = 0.00 .. 0.41. The engine is retab.stages.evaluation.
"""
from __future__ import annotations

import argparse

from retab import voc
from retab.stages import evaluation as engine

RETAB_SCAN_LAST = 0.41  # RETAB's curve: t = 0.00 .. 0.41


def evaluate(names, predict_dir, gt_dir, fold: int, pred_type: str = "png", thresholds=None,
             targetpixel_dir=None, workers: int = 0, progress: bool = True,
             scanned: bool | None = None) -> engine.Evaluation:
    """RETAB evaluation of one fold: `retab.stages.evaluation.evaluate` with the fold required."""
    voc.check_fold(fold)
    return engine.evaluate(names, predict_dir, gt_dir, pred_type, thresholds, fold=fold,
                           targetpixel_dir=targetpixel_dir, workers=workers, progress=progress,
                           scanned=scanned)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retab evaluation_boundary", description=__doc__.splitlines()[0])
    engine.add_common_args(parser, engine.PRED_TYPES, gt_dir_default="./VOC2012/SegmentationClassAug",
                           predict_dir_default="./pred")
    parser.add_argument("--targetpixel_dir", type=engine.optional_dir, default=None,
                        help="boundary target maps: GT pixels whose map is 0 are ignored (default none)")
    parser.add_argument("--fold", type=int, required=True, help="PASCAL-5i fold 0..3")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    voc.check_fold(args.fold)
    engine.run(args, RETAB_SCAN_LAST)
    return 0
