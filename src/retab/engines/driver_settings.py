"""The drivers' environment settings (psa/run_psa.sh, RETAB/run_retab.sh, seg/run_seg.sh): every
name, which drivers read it, and what a value must be. `retab check_settings DRIVER` checks the
ones set in the environment before the driver's first step (a bad one found by a later step would
cost every step before it); each driver's defaults are valid, and an empty value means the default."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping

from retab.misc.errors import RetabError
from retab.voc import derived_lists

DRIVERS = ("run_psa", "run_retab", "run_seg")
ALL = DRIVERS
PSA, RETAB, SEG = ("run_psa",), ("run_retab",), ("run_seg",)

# a number as the drivers have always taken it: unsigned, decimal, optional exponent
_DECIMAL = r"[0-9]+\.?[0-9]*|\.[0-9]+"
_NUMBER = re.compile(rf"({_DECIMAL})([eE][-+]?[0-9]+)?")

Check = Callable[[str, str], "str | None"]  # (name, value) -> what is wrong, or None


def _fail(name: str, what: str, value: str) -> str:
    return f"{name} must be {what}, got '{value}'"


def integer(minimum: int) -> Check:
    def check(name, value):
        if not (value.isascii() and value.isdigit() and int(value) >= minimum):
            return _fail(name, f"an integer >= {minimum}", value)
    return check


def numbers(ok: Callable[[float], bool], what: str, several: bool = False) -> Check:
    """One number v with ok(v) (several: one or more, separated by spaces)."""
    def check(name, value):
        parts = value.split() if several else [value]
        if not parts or not all(_NUMBER.fullmatch(p) and ok(float(p)) for p in parts):
            return _fail(name, what, value)
    return check


def choice(*choices: str, what: str | None = None) -> Check:
    def check(name, value):
        if value not in choices:
            return _fail(name, what or f"one of {' '.join(choices)}", value)
    return check


def resize_range(name, value):
    parts = value.split()
    if not (len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts) and 0 < int(parts[0]) <= int(parts[1])):
        return _fail(name, "two integers LO HI with 0 < LO <= HI", value)


def device(name, value):
    if not re.fullmatch(r"auto|cpu|cuda|cuda:[0-9]{1,2}", value):
        return _fail(name, "auto, cpu, cuda or cuda:N", value)


def crf_exponent(name, value):
    # no exponent: the value names the CRF label folders (driver_lib.sh's crf_dir_name)
    if not (re.fullmatch(_DECIMAL, value) and float(value) > 0):
        return _fail(name, "a positive decimal number (it names the CRF label folders)", value)


def erosion_kernel(name, value):
    return integer(0)(name, value) or (None if int(value) == 0 or int(value) % 2 == 1
                                       else _fail(name, "0 (no erosion) or odd", value))


def infer_list(name, value):
    # a list the driver's dataset step writes into voc12/ (make_splits) exists only after this check
    if not (Path(value) in derived_lists("voc12") or Path(value).is_file()):
        return f"{name}={value} is not a file"


POSITIVE = numbers(lambda v: v > 0, "a positive number")
FRACTION = numbers(lambda v: v < 1, "a number in [0, 1)")
EPOCHS = integer(1)

# name -> (the drivers that read it, its check or None: a path or free text, checked where it is used)
SETTINGS: dict[str, tuple[tuple[str, ...], Check | None]] = {
    # every driver
    "PYTHON": (ALL, None),  # checked by the driver itself: this check runs in it
    "DEVICE": (ALL, device),
    "WIDTH": (ALL, POSITIVE),
    "SEED": (ALL, integer(0)),
    "FOLD": (ALL, choice("0", "1", "2", "3", what="0, 1, 2 or 3 (the PASCAL-5i fold)")),
    "BACKBONE": (ALL, choice("resnet38", "efficientnet_lite0", what="resnet38 or efficientnet_lite0")),
    "AMP": (ALL, choice("none", "bf16", "fp16", what="none, bf16 or fp16")),
    "NUM_WORKERS": (ALL, integer(0)),
    "CROP_SIZE": (ALL, integer(1)),
    "BATCH_SIZE": (ALL, integer(1)),
    "RESIZE_LONG": (PSA + SEG, resize_range),
    "ALPHA": (PSA + RETAB, POSITIVE),
    "BETA": (PSA + RETAB, POSITIVE),
    "LOGT": (PSA + RETAB, integer(0)),
    "LA_ALPHA": (PSA + RETAB, crf_exponent),
    "HA_ALPHA": (PSA + RETAB, crf_exponent),
    "MOMENTUM": (PSA + RETAB, FRACTION),
    "OPTIMIZER": (PSA + RETAB, choice("sgd", "adamw")),
    "AFF_EPOCHS": (PSA + RETAB, EPOCHS),
    "AFF_LR": (PSA + RETAB, POSITIVE),
    "WEIGHTS": (ALL, None),
    "VOC12HOME": (ALL, None),
    "SYNTH_SCALE": (ALL, None),
    "OUT": (ALL, None),
    # psa/run_psa.sh
    "CLS_EPOCHS": (PSA, EPOCHS),
    "CLS_LR": (PSA, POSITIVE),
    "CLS_OPTIMIZER": (PSA, choice("sgd", "adamw")),
    "CAM_SCALES": (PSA, numbers(lambda v: v > 0, "positive numbers", several=True)),
    "HUE_JITTER": (PSA, numbers(lambda v: v <= 0.5, "a number in [0, 0.5]")),
    "CRF_WORKERS": (PSA, integer(0)),
    "VAL_LIST": (PSA, None),
    "CLS_CKPT": (PSA + SEG, None),
    # RETAB/run_retab.sh
    "BOUNDARY_EPOCHS": (RETAB, EPOCHS),
    "BOUNDARY_LR": (RETAB, POSITIVE),
    "KERNEL": (RETAB, erosion_kernel),
    "THRESHOLD": (RETAB, numbers(lambda v: 0 < v <= 1, "a number in (0, 1]")),
    "GRID_SAMPLING": (RETAB, choice("nearest", "nearest-exact", what="nearest or nearest-exact")),
    "INFER_LIST": (RETAB, infer_list),
    "PSA_OUT": (RETAB, None),
    "PSA_CLS": (RETAB, None),
    "AFF_WEIGHTS": (RETAB, None),
    # seg/run_seg.sh
    "SUPERVISION": (SEG, choice("mixed", "full", "weak", what="mixed, full or weak")),
    "PSEUDO_DIR": (SEG, None),
    "SEG_EPOCHS": (SEG, EPOCHS),
    "SEG_LR": (SEG, POSITIVE),
    "SEG_MOMENTUM": (SEG, FRACTION),
    "SCALES": (SEG, numbers(lambda v: v > 0, "positive numbers", several=True)),
    "FLIP": (SEG, choice("True", "False")),
    "CRF": (SEG, choice("True", "False")),
}


def settings_of(driver: str) -> list[str]:
    return [name for name, (drivers, _) in SETTINGS.items() if driver in drivers]


def check_driver_settings(driver: str, environ: Mapping[str, str]) -> None:
    """Raise RetabError naming the first setting of `driver` whose (non-empty) value is wrong."""
    if driver not in DRIVERS:
        raise RetabError(f"unknown driver {driver!r} (one of {', '.join(DRIVERS)})")
    for name in settings_of(driver):
        check = SETTINGS[name][1]
        value = environ.get(name, "")
        if check is not None and value != "":
            problem = check(name, value)
            if problem:
                raise RetabError(problem)
    # the affinity (and boundary) trainings take --momentum with SGD only: refuse it now, not after the classifier
    if environ.get("MOMENTUM", "") != "" and environ.get("OPTIMIZER", "") == "adamw" and "MOMENTUM" in settings_of(driver):
        raise RetabError("MOMENTUM is SGD's momentum: it cannot go with OPTIMIZER=adamw (unset one of them)")
