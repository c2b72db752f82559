"""Loading weights into the networks, with a readable report instead of a torch traceback.

- `load_weights(model, path, strict)`: `.params` (MXNet ImageNet backbone; always non-strict, as
  the published scripts initialise the backbone only) or a torch file (`.pth`, a state dict or a
  dict holding one under 'state_dict' / 'model').
- `load_state_dict_checked(model, state_dict, strict, source)`: strict loading raises a RetabError
  listing missing, unexpected and wrongly-shaped keys; non-strict loading loads what matches and
  logs what it skipped. A tensor holding NaN or infinity is refused (`check_finite`).
- `network_of(state_dict)`: which of the pipeline's networks a checkpoint holds (for messages).
- `save_checkpoint(path, model, ...)`: an atomic `.pth` with the published state-dict keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retab.misc.errors import RetabError
from retab.misc.fileio import save_torch
from retab.models.mxnet_params import load_mxnet_params, mxnet_to_state_dict

log = logging.getLogger("retab")

MAX_LISTED_KEYS = 8  # keys named per category in a message; the rest are counted

# Checkpoints of old PyTorch versions lack this BatchNorm counter; PyTorch itself accepts that.
OPTIONAL_KEY_SUFFIX = "num_batches_tracked"


@dataclass
class LoadReport:
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)  # (key, shape in file, shape in model)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_listing(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_listing(self.unexpected)})")
        if self.mismatched:
            shapes = [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} with the wrong shape ({_listing(shapes)})")
        return "; ".join(parts)


def _listing(items) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    more = len(items) - MAX_LISTED_KEYS
    return shown + (f", ... and {more} more" if more > 0 else "")


def _as_tensor(value, key: str, source) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise RetabError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")


def _strip_data_parallel_prefix(state_dict: dict) -> dict:
    """Checkpoints saved from an nn.DataParallel wrapper prefix every key with 'module.'."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def compare_state_dict(model: nn.Module, state_dict: dict, source="state dict") -> LoadReport:
    """How `state_dict` fits `model` (nothing is loaded): report.loaded lists the keys that fit."""
    report, _ = _match(model, _strip_data_parallel_prefix(dict(state_dict)), source)
    return report


def _match(model: nn.Module, state_dict: dict, source) -> tuple[LoadReport, dict]:
    expected = model.state_dict()
    report = LoadReport()
    to_load = {}
    for key, value in state_dict.items():
        if key not in expected:
            report.unexpected.append(key)
            continue
        tensor = _as_tensor(value, key, source)
        if tuple(tensor.shape) != tuple(expected[key].shape):
            report.mismatched.append((key, tuple(tensor.shape), tuple(expected[key].shape)))
            continue
        to_load[key] = tensor
    report.missing = [k for k in expected if k not in state_dict and k not in to_load
                      and not k.endswith(OPTIONAL_KEY_SUFFIX)]
    report.loaded = list(to_load)
    return report, to_load


def check_finite(tensors: dict, source) -> None:
    """A RetabError naming the first floating tensor of `tensors` that holds NaN or infinity: such
    weights give NaN outputs everywhere, which later stages would turn into plausible labels."""
    for key, value in tensors.items():
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise RetabError(f"{source}: tensor {key} holds {bad} NaN or infinite values of {tensor.numel()}")


def load_state_dict_checked(model: nn.Module, state_dict: dict, strict: bool = True,
                            source="state dict") -> LoadReport:
    """Load `state_dict` (tensors or numpy arrays) into `model`; see the module docstring."""
    state_dict = _strip_data_parallel_prefix(dict(state_dict))
    report, to_load = _match(model, state_dict, source)
    if strict and not report.clean:
        raise RetabError(f"{source}: weights do not fit {type(model).__name__}: {report.describe()}")
    check_finite(to_load, source)
    # Every key left has been checked, so torch's own (strict) check is not needed.
    model.load_state_dict(to_load, strict=False)
    if report.clean:
        log.info("loaded %d tensors from %s", len(report.loaded), source)
    else:
        log.info("loaded %d tensors from %s; skipped %s", len(report.loaded), source, report.describe())
    return report


def read_torch_file(path):
    """Whatever a torch file holds (tensors, dicts, numbers), loaded on the CPU without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RetabError(f"{path}: cannot be read as a torch weights file ({first_line})") from None


def state_dict_from_checkpoint(obj, source) -> dict:
    """The state dict inside a loaded checkpoint: the object itself or its 'state_dict'/'model'."""
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                return obj[wrapper]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise RetabError(f"{source}: holds no state dict (expected a dict of tensors, "
                     f"or one under 'state_dict' or 'model')")


def network_of(state_dict: dict) -> str | None:
    """Which network of the pipeline a state dict belongs to, told by its head keys (published
    names, SPEC 2); None when it has no head this pipeline knows."""
    keys = _strip_data_parallel_prefix(dict(state_dict))
    if "fc8.weight" in keys:
        return "classification net"
    if any(k.startswith("aspp.") for k in keys):
        return "segmentation net"
    if "f9.weight" in keys:
        # the boundary net's f9 has one output channel at every width, the affinity net's 448 x width
        return "boundary net" if tuple(keys["f9.weight"].shape[:1]) == (1,) else "affinity net"
    return None


def load_weights(model: nn.Module, path, strict: bool = True) -> LoadReport:
    """Load a `.params` (MXNet ImageNet backbone, always non-strict) or a torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise RetabError(f"{path}: weights file not found")
    if path.suffix == ".params":
        state_dict = mxnet_to_state_dict(load_mxnet_params(path))
        return load_state_dict_checked(model, state_dict, strict=False, source=path)
    state_dict = state_dict_from_checkpoint(read_torch_file(path), path)
    return load_state_dict_checked(model, state_dict, strict=strict, source=path)


def save_checkpoint(path, model: nn.Module, optimizer=None, **extra) -> None:
    """Atomic `.pth`. With the model alone it is the plain state dict of the published
    checkpoints; with an optimizer (or extra values such as epoch) it is
    {'model': state dict, 'optimizer': its state dict, **extra}, which `load_weights` also reads."""
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if optimizer is None and not extra:
        save_torch(path, state_dict)
        return
    payload = {"model": state_dict, **extra}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    save_torch(path, payload)
