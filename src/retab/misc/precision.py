"""Opt-in speed settings of the networks: --amp {none,bf16,fp16} and --channels_last.

Both are off by default, and then nothing here touches a model or a tensor: the default runs are
exactly the float32, contiguous runs they always were.

--amp     the network's forward pass runs under torch.autocast on the process's device in
          bfloat16 or float16; its outputs are cast back to float32 before any loss, softmax,
          CAM aggregation or random walk. fp16 needs CUDA (and trains with a GradScaler); on the
          CPU only bf16 is offered.
--channels_last  the network's weights and inputs in the NHWC memory layout (faster
          convolutions on recent GPUs and with oneDNN on the CPU); the same numbers up to rounding.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from retab.misc.errors import RetabError

AMP_MODES = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def add_precision_args(parser) -> None:
    """--amp and --channels_last (training and inference stages)."""
    parser.add_argument("--amp", choices=AMP_MODES, default="none",
                        help="mixed precision of the network: bf16 (CPU or CUDA) or fp16 (CUDA only); "
                             "default none (float32)")
    parser.add_argument("--channels_last", action="store_true",
                        help="NHWC memory layout for the network's weights and inputs (default off)")


@dataclass(frozen=True)
class Precision:
    amp: str = "none"
    channels_last: bool = False

    def __post_init__(self):
        if self.amp not in AMP_MODES:
            raise RetabError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")

    @classmethod
    def from_args(cls, args) -> "Precision":
        return cls(getattr(args, "amp", "none") or "none", bool(getattr(args, "channels_last", False)))

    @property
    def enabled(self) -> bool:
        """Whether anything differs from a plain float32 run."""
        return self.amp != "none" or self.channels_last

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.amp)

    def check(self, device) -> None:
        """fp16 needs CUDA; bf16 on CUDA needs a GPU that has it."""
        device = torch.device(device)
        if self.amp == "fp16" and device.type != "cuda":
            raise RetabError(f"--amp fp16 needs a CUDA device, this run is on {device}: use --amp bf16 on the CPU")
        if self.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RetabError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use --amp fp16")
        if self.amp != "none" and device.type not in ("cpu", "cuda"):
            raise RetabError(f"--amp is offered on cpu and cuda devices, not {device.type}")

    def autocast(self, device):
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x):
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def grad_scaler(self, device):
        """A GradScaler for fp16 training, else None."""
        if self.amp != "fp16":
            return None
        return torch.amp.GradScaler(torch.device(device).type)

    def run(self, fn, x, device):
        """fn(x) under these settings; tensors come back float32 and in the default layout."""
        with self.autocast(device):
            out = fn(self.prepare_input(x))
        return _as_float32(out)


def _as_float32(out):
    if isinstance(out, torch.Tensor):
        if out.is_floating_point():
            out = out.float()
        return out.contiguous()
    if isinstance(out, dict):
        return {k: _as_float32(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_as_float32(v) for v in out)
    return out


class PrecisionModel(nn.Module):
    """`model` run under a Precision: forward (and `cam`, for the classifier) take and give what the
    model does, computed with autocast / channels_last, outputs float32. `model` stays the module
    whose state dict is saved (keys unchanged)."""

    def __init__(self, model: nn.Module, precision: Precision, device):
        super().__init__()
        self.model = model
        self.precision = precision
        self.device = torch.device(device)

    def forward(self, x):
        return self.precision.run(self.model, x, self.device)

    def cam(self, x):
        return self.precision.run(self.model.cam, x, self.device)


def apply_precision(model: nn.Module, precision: Precision, device) -> nn.Module:
    """`model` itself when `precision` changes nothing, else a PrecisionModel around it (weights
    moved to the channels_last layout when asked)."""
    if not precision.enabled:
        return model
    precision.check(device)
    precision.prepare_model(model)
    return PrecisionModel(model, precision, device)


def state_dict_for_saving(model: nn.Module) -> dict:
    """model.state_dict() with every tensor in the default (contiguous) layout, so that a
    checkpoint of a channels_last run is the same file format as any other."""
    state = model.state_dict()
    if any(isinstance(v, torch.Tensor) and not v.is_contiguous() for v in state.values()):
        state = type(state)((k, v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in state.items())
    return state
