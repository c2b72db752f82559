"""Helpers shared by several test modules."""
import re
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DRIVER_OUTPUTS = ("VOC2012", "voc12", "out", "best", "psa_initcam", "psa_afflabel", "tblog", "__pycache__")


def copy_driver(folder: str, dest_root: Path) -> Path:
    """A copy of the driver folder `folder` (psa, RETAB or seg) under dest_root, without outputs,
    plus psa/driver_lib.sh, which every driver sources from ../psa/."""
    dest = Path(dest_root) / folder
    shutil.copytree(REPO / folder, dest, ignore=shutil.ignore_patterns(*DRIVER_OUTPUTS), dirs_exist_ok=True)
    lib = Path(dest_root) / "psa" / "driver_lib.sh"
    lib.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "psa" / "driver_lib.sh", lib)
    return dest


def step_commands(stdout: str) -> dict[str, str]:
    """step -> the command line a driver's step printed for it (retab.misc.steps; not its last line)."""
    return dict(re.findall(r"^\[(\w+)\] (?!done in|nothing to do)(.*)$", stdout, re.M))


def coded_image(h: int, w: int) -> np.ndarray:
    """uint8 HxWx3 whose red channel is 5 x column and green 5 x row; blue 100 so nothing is black."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 5 * np.arange(w)[None, :]
    img[..., 1] = 5 * np.arange(h)[:, None]
    img[..., 2] = 100
    return img


def stop_at(real_step, calls: list, stop_call: int | None = None):
    """A training stage's step function that counts its calls in `calls`; call number `stop_call`
    (0-based) raises KeyboardInterrupt instead (an interrupted run, for the --resume tests)."""

    def step_then_stop(model, batch, device):
        if len(calls) == stop_call:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(model, batch, device)

    return step_then_stop
