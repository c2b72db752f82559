"""`retab evaluation_boundary` (RETAB): all/base/novel mIoU of a fold (SPEC 6).

The flags of `retab evaluation` plus `--fold` (required), `--type npy_new` (score dicts whose key 0
is replaced by the background score t) and `--targetpixel_dir` (GT pixels whose target map is 0
are ignored; the literal `None` means no folder, as the published scripts pass it). The curve
scans t = 0.00 .. 0.41. The engine is retab.engines.evaluation.
"""
from __future__ import annotations

import argparse

from retab import voc
from retab.engines.evaluation import PRED_TYPES, RETAB_SCAN_LAST, add_common_args, optional_dir, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retab evaluation_boundary", description=__doc__.splitlines()[0])
    add_common_args(parser, PRED_TYPES, gt_dir_default="./VOC2012/SegmentationClassAug", predict_dir_default="./pred")
    parser.add_argument("--targetpixel_dir", dest="boundary_target_dir", type=optional_dir, default=None,
                        help="boundary target maps: GT pixels whose map is 0 are ignored (default none)")
    parser.add_argument("--fold", type=int, required=True, help="PASCAL-5i fold 0..3")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    voc.check_fold(args.fold)
    run(args, RETAB_SCAN_LAST)
    return 0
