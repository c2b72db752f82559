"""`retab evaluation` (PSA): mIoU of label PNGs or of CAM dicts with a background threshold (SPEC 6).

The engine, shared with `retab evaluation_boundary`, is retab.engines.evaluation.
"""
from __future__ import annotations

import argparse

from retab.engines.evaluation import PSA_SCAN_LAST, add_common_args, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retab evaluation", description=__doc__.splitlines()[0])
    add_common_args(parser, ("png", "npy"), gt_dir_default="./VOC2012/SegmentationClass",
                    predict_dir_default="./out_rw")
    parser.add_argument("--fold", type=int, default=None,
                        help="optional PASCAL-5i fold 0..3: also report base and novel mIoU")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    run(args, PSA_SCAN_LAST)
    return 0
