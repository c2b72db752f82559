"""Device choice and seeding, shared by every stage (`--device auto|cpu|cuda`, `--seed`)."""
from __future__ import annotations

import logging
import random

import numpy as np

from retab.misc.errors import RetabError

log = logging.getLogger("retab")


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RetabError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RetabError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy and torch so that CPU runs with the same seed repeat exactly."""
    if seed is None:
        return
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
