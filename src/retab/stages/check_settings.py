"""`retab check_settings DRIVER`: the first command of each driver (run_psa, run_retab, run_seg):
its environment settings checked before any step (retab.engines.driver_settings)."""
from __future__ import annotations

import argparse
import os

from retab.engines.driver_settings import DRIVERS, check_driver_settings


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="retab check_settings", description=__doc__)
    p.add_argument("driver", choices=DRIVERS)
    args = p.parse_args(argv)
    check_driver_settings(args.driver, os.environ)
    return 0
