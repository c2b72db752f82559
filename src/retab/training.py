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
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from retab.misc import distributed
from retab.misc.errors import RetabError
from retab.misc.fileio import save_torch
from retab.misc.precision import Precision, apply_precision, state_dict_for_saving

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


def checkpoint_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    out = Path(cfg.out_dir)
    return out / f"{cfg.session_name}.pth", out / f"{cfg.session_name}.last.pt"


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
    if cfg.resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
        if "rng" in state:
            set_rng_state(state["rng"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        log.info("resumed %s at epoch %d (step %d)", last_path, start_epoch, getattr(optimizer, "global_step", -1))
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
        bar = tqdm(loader, desc=f"{cfg.session_name} epoch {epoch + 1}/{cfg.max_epoches}", leave=False,
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
                          "epoch": epoch + 1, "rng": get_rng_state()}
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


def get_rng_state() -> dict:
    """The global generators that training draws from (dropout uses torch's), for a checkpoint:
    a resumed run then continues exactly as an uninterrupted one would."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _batch_size(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(first.shape[0]) if hasattr(first, "shape") else 1


def _lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
