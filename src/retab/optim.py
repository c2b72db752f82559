"""Parameter groups and the poly-learning-rate SGD of every training stage (SPEC 2).

Four groups, in this order: pretrained conv weights (lr x1, weight decay), pretrained biases
(lr x2, no decay), head weights (lr x10, decay), head biases (lr x20, no decay). Before each step
lr_i = lr0_i * (1 - step / max_step) ** 0.9.

`PolyAdamW` (not in the paper) is the same schedule over AdamW, for training from a random
initialisation (the CPU demo), where plain SGD leaves ResNet-38 at the class prior.
"""
from __future__ import annotations

import torch
from torch import nn

LR_MULTIPLIERS = (1, 2, 10, 20)
POLY_POWER = 0.9
# The layers trained from scratch; a model can name more in its `head_names` attribute.
DEFAULT_HEAD_NAMES = ("fc8", "f8_3", "f8_4", "f8_5", "f9")


def param_groups(model: nn.Module) -> list:
    """[pretrained weights, pretrained biases, head weights, head biases]: lists of the
    parameters that require grad. A head is a top-level module named in DEFAULT_HEAD_NAMES or in
    the model's `head_names`."""
    heads = set(DEFAULT_HEAD_NAMES) | set(getattr(model, "head_names", ()))
    groups = [[], [], [], []]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.split(".")[0] in heads
        is_bias = name.endswith("bias")
        groups[2 * is_head + is_bias].append(param)
    return groups


class _PolySchedule:
    """Poly learning-rate decay and a resumable step counter for a torch optimizer subclass.

    `global_step` counts the steps taken; `state_dict()` / `load_state_dict()` carry it along with
    the initial and current learning rates, so a training loop can resume.
    """

    def _start_schedule(self, max_step: int) -> None:
        if max_step <= 0:
            raise ValueError(f"max_step must be positive, got {max_step}")
        self.max_step = int(max_step)
        self.global_step = 0
        self.initial_lrs = [g["lr"] for g in self.param_groups]

    def poly_factor(self, step: int) -> float:
        return (1 - step / self.max_step) ** POLY_POWER

    def step(self, closure=None):
        # As published: past max_step the last learning rates stay as they were.
        if self.global_step < self.max_step:
            factor = self.poly_factor(self.global_step)
            for group, lr0 in zip(self.param_groups, self.initial_lrs):
                group["lr"] = lr0 * factor
        loss = super().step(closure)
        self.global_step += 1
        return loss

    def state_dict(self):
        state = super().state_dict()
        state["poly"] = {"global_step": self.global_step, "max_step": self.max_step,
                         "initial_lrs": list(self.initial_lrs)}
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        poly = state_dict.pop("poly", None)
        super().load_state_dict(state_dict)
        if poly is not None:
            self.global_step = int(poly["global_step"])
            self.max_step = int(poly["max_step"])
            self.initial_lrs = [float(x) for x in poly["initial_lrs"]]


def _torch_groups(groups, lr: float, weight_decay: float, multipliers) -> list[dict]:
    groups = list(groups)
    if len(groups) != len(LR_MULTIPLIERS):
        raise ValueError(f"expected {len(LR_MULTIPLIERS)} parameter groups, got {len(groups)}")
    decays = (weight_decay, 0.0, weight_decay, 0.0)
    return [{"params": list(params), "lr": lr * mult, "weight_decay": decay}
            for params, mult, decay in zip(groups, multipliers, decays)]


class PolyOptimizer(_PolySchedule, torch.optim.SGD):
    """SGD over the four `param_groups`, with poly learning-rate decay.

    Published quirk, reproduced by default: the published optimizer hands the weight-decay value
    to SGD's third positional argument, which is *momentum*; so it trains with momentum 5e-4
    (essentially none) while the per-group weight decay still applies. `momentum=None` reproduces
    that (momentum = weight_decay); `momentum=0.9` gives real momentum.
    """

    def __init__(self, groups, lr: float, weight_decay: float, max_step: int, momentum: float | None = None):
        torch.optim.SGD.__init__(self, _torch_groups(groups, lr, weight_decay, LR_MULTIPLIERS), lr=lr,
                                 momentum=weight_decay if momentum is None else momentum)
        self._start_schedule(max_step)


class PolyAdamW(_PolySchedule, torch.optim.AdamW):
    """AdamW over the four `param_groups` with the same poly decay (not in the paper; for training
    from scratch). Every group gets the same lr: the x10/x20 head multipliers are a fine-tuning
    convention for SGD on top of pretrained weights, and too large a step for Adam."""

    def __init__(self, groups, lr: float, weight_decay: float, max_step: int):
        torch.optim.AdamW.__init__(self, _torch_groups(groups, lr, weight_decay, (1, 1, 1, 1)), lr=lr)
        self._start_schedule(max_step)


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(kind: str, groups, lr: float, weight_decay: float, max_step: int,
                   momentum: float | None = None):
    """`sgd`: the published PolyOptimizer (momentum quirk unless `momentum` is given); `adamw`:
    PolyAdamW (momentum is then meaningless and must not be given)."""
    if kind == "sgd":
        return PolyOptimizer(groups, lr, weight_decay, max_step, momentum)
    if kind == "adamw":
        if momentum is not None:
            raise ValueError("--momentum applies to --optimizer sgd only")
        return PolyAdamW(groups, lr, weight_decay, max_step)
    raise ValueError(f"unknown optimizer {kind!r}; expected one of {', '.join(OPTIMIZERS)}")
