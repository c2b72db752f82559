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


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
