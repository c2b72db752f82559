"""The one training loop shared by every training stage (classification, PSA affinity, boundary,
mixed affinity, segmentation).

A stage provides a model, a dataset and a `step_fn(model, batch, device) -> (loss, logs)`; this
module does the rest: seeded data loading, the poly-lr optimizer steps, a progress bar with the
loss and images/s, TensorBoard scalars, an optional validation loss per epoch, a resumable
checkpoint after every epoch and the final `{session_name}.pth` holding the model's state dict
(the published key names, loadable with strict=True).

Under torchrun with several processes (retab.misc.distributed) the same loop trains one model with
DistributedDataParallel. cfg.batch_size stays the global batch: each process takes its contiguous
share of every batch of the single-process run (`ShardedBatchSampler`, the same images in the same
batches and epochs). The logged loss is the mean over the processes; the stage's val_fn is called
in every process (train_cls validates each process's share of the list and sums over processes);
only rank 0 writes TensorBoard scalars, the per-epoch checkpoint and the final state dict (keys
without a `module.` prefix, as in a single-process run); every process reads the checkpoint on
--resume. BatchNorms stay frozen as published; a from-scratch model (whose BatchNorms train) uses
SyncBatchNorm on CUDA, i.e. the statistics of the global batch, while on the CPU (PyTorch has no
SyncBatchNorm there) each process normalises with the statistics of its own share. Dropout draws
in each process from (seed, epoch, rank).

cfg.amp / cfg.channels_last (retab.misc.precision) run the forward pass under autocast / in the
NHWC layout; losses are computed in float32 from float32 outputs; fp16 trains with a GradScaler
(a step whose gradients overflow is skipped and does not advance the poly schedule).
"""
from __future__ import annotations

import logging
import math
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from retab.misc import distributed
from retab.misc.errors import RetabError
from retab.misc.fileio import remove_stale_temporaries, save_torch
from retab.misc.precision import Precision, apply_precision, state_dict_for_saving
from retab.misc.progress import progress

log = logging.getLogger("retab")

StepFn = Callable[[torch.nn.Module, object, torch.device], tuple[torch.Tensor, dict]]


def _seed_worker(worker_id: int) -> None:
    # Datasets draw their randomness from their own (seed, epoch, index) generators; this only
    # pins the global generators that library code might touch.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def make_loader(dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                drop_last: bool = True, batch_sampler=None) -> DataLoader:
    """The training DataLoader; with `batch_sampler` (a process's ShardedBatchSampler) that
    sampler picks the batches and batch_size / shuffle / drop_last are not used."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=False,
                          worker_init_fn=_seed_worker, generator=generator, persistent_workers=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      drop_last=drop_last and len(dataset) >= batch_size, pin_memory=False,
                      worker_init_fn=_seed_worker, generator=generator,
                      persistent_workers=False)


@dataclass
class TrainConfig:
    session_name: str
    max_epoches: int
    batch_size: int
    num_workers: int = 0
    seed: int = 0
    out_dir: str = "."          # where {session_name}.pth goes
    tblog_dir: str | None = None  # TensorBoard folder (None: no TensorBoard)
    resume: bool = False
    amp: str = "none"             # retab.misc.precision: none | bf16 | fp16
    channels_last: bool = False


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    return max(1, n_samples // batch_size) if n_samples >= batch_size else 1


def max_steps(n_samples: int, cfg: TrainConfig) -> int:
    """The poly schedule's max_step, as published: (len // batch) * epochs."""
    return steps_per_epoch(n_samples, cfg.batch_size) * cfg.max_epoches


def _summary_writer(tblog_dir):
    if not tblog_dir:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but never let logging stop a run
        log.warning("tensorboard is not installed: no training curves")
        return None
    return SummaryWriter(tblog_dir)


def session_paths(out_dir, session_name: str) -> tuple[Path, Path]:
    """The final state dict and the resumable per-epoch checkpoint of a training session."""
    out = Path(out_dir)
    return out / f"{session_name}.pth", out / f"{session_name}.last.pt"


def checkpoint_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    return session_paths(cfg.out_dir, cfg.session_name)


def train(model: torch.nn.Module, optimizer, dataset, step_fn: StepFn, cfg: TrainConfig,
          device: torch.device, val_fn: Callable[[torch.nn.Module], float] | None = None) -> Path:
    """Train for cfg.max_epoches; returns the path of the final state dict."""
    final_path, last_path = checkpoint_paths(cfg)
    info = distributed.current()
    if info.distributed and not distributed.is_initialized():  # a caller that skipped setup_training
        distributed.setup_process(device, process_group=True)
    precision = Precision(cfg.amp, cfg.channels_last)
    precision.check(device)
    sampler = None
    if info.distributed:
        sampler = distributed.ShardedBatchSampler(len(dataset), cfg.batch_size, cfg.seed * 1000, info)
    start_epoch = 0
    # On the device first: the optimizer's loaded state (momentum) follows its parameters' device.
    model.to(device)
    scaler = precision.grad_scaler(device)
    if info.is_main:  # only rank 0 writes checkpoints, so no other process can be writing these
        for path in (last_path, final_path):
            remove_stale_temporaries(path)
    if cfg.resume and last_path.is_file():
        start_epoch = resume(last_path, model, optimizer, scaler)
    if info.distributed and device.type == "cuda" and getattr(model, "from_scratch", False):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the same module, its BatchNorms replaced
    net = apply_precision(model, precision, device)  # `model` itself unless --amp / --channels_last
    if info.distributed:
        net = distributed.wrap_model(net, device)
    writer = _summary_writer(cfg.tblog_dir) if info.is_main else None
    loader = make_loader(dataset, cfg.batch_size, True, cfg.num_workers, cfg.seed, batch_sampler=sampler)
    for epoch in range(start_epoch, cfg.max_epoches):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader.generator.manual_seed(cfg.seed * 1000 + epoch)  # reproducible shuffles, also on resume
        if sampler is not None:
            sampler.set_epoch(epoch)
            distributed.seed_process(cfg.seed, epoch, info.rank)
        net.train()
        bar = progress(loader, desc=f"{cfg.session_name} epoch {epoch + 1}/{cfg.max_epoches}", leave=False,
                   disable=not info.is_main)
        seen, t0, running = 0, time.perf_counter(), 0.0
        for i, batch in enumerate(bar):
            loss, logs = step_fn(net, batch, device)
            loss_value = float(loss.detach())
            if info.distributed:  # every process sees the same value, so a divergence stops them all
                loss_value = distributed.mean_over_processes(loss_value, device)
            if not math.isfinite(loss_value):
                raise RetabError(f"{cfg.session_name}: the loss became {loss_value} at epoch {epoch + 1} "
                                 "(training diverged: lower the learning rate)")
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            n = _batch_size(batch) * info.world_size
            seen += n
            running = 0.9 * running + 0.1 * loss_value if i else loss_value
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{running:.4f}", img_s=f"{rate:.1f}", lr=f"{_lr(optimizer):.2e}")
            if writer is not None:
                step = getattr(optimizer, "global_step", epoch * len(loader) + i)
                writer.add_scalar("train/loss", loss_value, step)
                writer.add_scalar("train/lr", _lr(optimizer), step)
                for k, v in logs.items():
                    writer.add_scalar(f"train/{k}", float(v), step)
        msg = f"{cfg.session_name} epoch {epoch + 1}/{cfg.max_epoches}: loss {running:.4f}, {seen} images"
        if val_fn is not None:
            val_loss = val_fn(net.module if info.distributed else net)
            msg += f", val loss {val_loss:.4f}"
            if writer is not None:
                writer.add_scalar("val/loss", val_loss, epoch + 1)
        log.info(msg)
        if info.is_main:
            checkpoint = {"model": state_dict_for_saving(model), "optimizer": optimizer.state_dict(),
                          "epoch": epoch + 1, "rng": get_rng_state(), **checkpoint_identity(model, optimizer)}
            if scaler is not None:
                checkpoint["scaler"] = scaler.state_dict()
            save_torch(last_path, checkpoint)
    if writer is not None:
        writer.close()
    if info.is_main:
        save_torch(final_path, state_dict_for_saving(model))
        log.info("wrote %s", final_path)
    distributed.finish()  # every process returns once the final state dict exists
    return final_path


# ----------------------------------------------------------------------------- resumable checkpoints

def checkpoint_identity(model, optimizer) -> dict:
    """What a `.last.pt` says about the run that wrote it, so that a resume can name a mismatch."""
    return {"network": type(model).__name__, "width": float(getattr(model, "width", 0.0)),
            "optimizer_kind": type(optimizer).__name__}


def resume(last_path: Path, model, optimizer, scaler) -> int:
    """Load a `.last.pt` (weights_only: it holds tensors, numbers and strings only) into the model,
    optimizer and random generators; returns its epoch. A file of another network, width,
    optimizer or schedule, or a truncated one, is a RetabError that names what differs."""
    from retab.models.weights import check_finite, compare_state_dict  # models import this package's modules

    def refuse(what: str) -> RetabError:
        return RetabError(f"{last_path}: cannot resume from it: {what} (delete it to train from the start)")

    try:
        state = read_checkpoint(last_path)
    except Exception as exc:  # noqa: BLE001 - a truncated zip, a foreign pickle: torch raises many kinds
        raise refuse(f"not a readable checkpoint, e.g. truncated by a kill ({_first_line(exc)})") from None
    missing = [k for k in ("model", "optimizer", "epoch") if not isinstance(state, dict) or k not in state]
    if missing:
        raise refuse(f"not a resume checkpoint: it lacks {', '.join(missing)}")
    now = checkpoint_identity(model, optimizer)
    for key, what in (("network", "network"), ("width", "--width"), ("optimizer_kind", "optimizer")):
        if key in state and state[key] != now[key]:
            raise refuse(f"it was written for {what} {state[key]}, this run has {now[key]}")
    report = compare_state_dict(model, state["model"], last_path)
    if not report.clean:
        raise refuse(f"its weights are of another network or --width than this {type(model).__name__}: "
                     f"{report.describe()}")
    check_finite(state["model"], last_path)
    problem = optimizer_mismatch(optimizer, state["optimizer"])
    if problem:
        raise refuse(problem)
    try:
        model.load_state_dict(state["model"], strict=False)  # every key was checked above
        optimizer.load_state_dict(state["optimizer"])
        if "rng" in state:
            set_rng_state(state["rng"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
    except RetabError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise refuse(f"its content does not load ({_first_line(exc)})") from None
    log.info("resumed %s at epoch %d (step %d)", last_path, start_epoch, getattr(optimizer, "global_step", -1))
    return start_epoch


def read_checkpoint(path):
    """torch.load(weights_only=True) of a resume file. Files written before the RNG states were
    held as tensors keep numpy's state as an array: torch's restricted unpickler reads those
    once numpy's array globals are allowed (still no other object)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        from retab.misc.safe_pickle import NUMPY_ARRAY_GLOBALS

        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)


# settings of a parameter group that a resumed run must share ('lr' decays, 'params' are indices)
_GROUP_SETTINGS = ("momentum", "weight_decay", "dampening", "nesterov", "betas", "eps", "amsgrad")


def optimizer_mismatch(optimizer, saved) -> str | None:
    """What makes the optimizer state `saved` unfit for `optimizer`, in words; None when it fits."""
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
        return "its optimizer state is not an optimizer's state dict"
    groups, saved_groups = optimizer.param_groups, saved["param_groups"]
    if len(groups) != len(saved_groups):
        return f"its optimizer has {len(saved_groups)} parameter groups, this run's {len(groups)}"
    for i, (group, old) in enumerate(zip(groups, saved_groups)):
        if len(group["params"]) != len(old.get("params", ())):
            return (f"its parameter group {i} holds {len(old.get('params', ()))} tensors, this run's "
                    f"{len(group['params'])} (another network, or --from_scratch on one side only)")
        kind_keys = {"momentum", "betas"}
        if (kind_keys & group.keys()) != (kind_keys & old.keys()):
            return (f"its optimizer is {'AdamW' if 'betas' in old else 'SGD'}, this run's "
                    f"{'AdamW' if 'betas' in group else 'SGD'} (--optimizer)")
        for key in _GROUP_SETTINGS:
            if key in group and key in old and _differ(group[key], old[key]):
                flag = {"momentum": "--momentum", "weight_decay": "--wt_dec"}.get(key, key)
                return f"{flag} was {old[key]} in its run, {group[key]} in this one"
    poly = saved.get("poly")
    if poly is not None and hasattr(optimizer, "max_step"):
        if int(poly.get("max_step", -1)) != optimizer.max_step:
            return (f"its schedule has {poly.get('max_step')} steps, this run's {optimizer.max_step} "
                    "(--max_epoches, --batch_size or the training list differ)")
        if any(_differ(a, b) for a, b in zip(poly.get("initial_lrs", ()), optimizer.initial_lrs)):
            return f"--lr was {poly['initial_lrs'][0]} in its run, {optimizer.initial_lrs[0]} in this one"
    params = [p for group in groups for p in group["params"]]
    for index, entry in (saved.get("state") or {}).items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            return f"its optimizer state names parameter {index!r}, this run has {len(params)}"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                return (f"its optimizer's {name} of parameter {index} has shape {list(value.shape)}, "
                        f"the parameter {list(params[index].shape)}")
    return None


def _differ(a, b) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) != len(b) or any(_differ(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a != b


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def get_rng_state() -> dict:
    """The global generators that training draws from (dropout uses torch's), for a checkpoint:
    a resumed run then continues exactly as an uninterrupted one would. Held as tensors and plain
    numbers, so that the checkpoint loads with torch.load(weights_only=True)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()  # ('MT19937', uint32[624], ...)
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """get_rng_state's states, or those of older resume files (numpy's and Python's own tuples)."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = ("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    python_state = state["python"]
    if isinstance(python_state, dict):
        python_state = (python_state["version"], tuple(int(x) for x in python_state["internal"].tolist()),
                        python_state["gauss_next"])
    random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _batch_size(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(first.shape[0]) if hasattr(first, "shape") else 1


def _lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
