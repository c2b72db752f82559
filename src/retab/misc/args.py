"""Argument helpers that keep the published flags working on a modern argparse."""
from __future__ import annotations

import argparse
import logging


def str2bool(value) -> bool:
    """The published scripts pass `--curve True`; argparse's `type=bool` would read 'False' as True."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "t", "yes", "y", "1"):
        return True
    if v in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def add_runtime_args(parser: argparse.ArgumentParser, width: bool = True) -> None:
    """--device, --seed (and --backbone and --width for stages that build a network)."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if width:
        from retab.models import BACKBONES, DEFAULT_BACKBONE

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
    from retab.data.transforms import GRID_SAMPLINGS

    parser.add_argument("--grid_sampling", choices=GRID_SAMPLINGS, default="nearest",
                        help=f"how {what} are sampled onto the 1/8 grid: nearest (published: each cell's "
                             "top-left pixel) or nearest-exact (its centre, where the CAMs are averaged)")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
