"""Runs of several processes under torchrun: the one place that reads the launcher's environment.

`torchrun --nproc_per_node=N -m retab <stage> ...` (or `torchrun ... psa/train_cls.py ...`)
starts N copies of a stage with RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/MASTER_PORT) in
their environment. Without those variables every function here describes a single process, and
the stages run exactly as they always did.

Training (retab.engines.training): `setup_process(..., process_group=True)` joins the process group
(gloo on the CPU, nccl on CUDA, or --dist_backend); the model is wrapped in
DistributedDataParallel (`wrap_model`); `ShardedBatchSampler` splits every global batch of the
single-process run into one contiguous part per process, so that the averaged gradient is the
one of the whole batch; only rank 0 writes logs, TensorBoard and checkpoints; `finish` waits for
every process and leaves the group.

Inference (every per-image stage): `shard(names)` is this process's share of the image list,
names[rank::world]; the processes never talk to each other (no process group), so they may
start, skip finished images and end independently.

On CUDA each process uses the GPU of its LOCAL_RANK (`process_device`).
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import numpy as np

from retab.misc.device import resolve_device
from retab.misc.errors import RetabError

log = logging.getLogger("retab")

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"process {self.rank} of {self.world_size}"


def _env_int(env, key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise RetabError(f"environment variable {key}={env[key]!r} is not an integer") from None


def process_info(environ=None) -> ProcessInfo:
    """The launch described by RANK / WORLD_SIZE / LOCAL_RANK (LOCAL_WORLD_SIZE optional) in
    `environ` (default os.environ); all absent: a single process. Some but not all present, or
    values that do not fit together, is an error."""
    env = os.environ if environ is None else environ
    present = [k for k in LAUNCH_VARS if k in env]
    if not present:
        return ProcessInfo()
    if len(present) != len(LAUNCH_VARS):
        missing = [k for k in LAUNCH_VARS if k not in env]
        raise RetabError(f"incomplete torchrun environment: {', '.join(present)} set but {', '.join(missing)} "
                         "not (launch with torchrun, or unset them for a single process)")
    rank, world, local = (_env_int(env, k) for k in LAUNCH_VARS)
    local_world = _env_int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world
    if world < 1 or not 0 <= rank < world:
        raise RetabError(f"torchrun environment: RANK={rank} does not lie in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    if local_world < 1 or not 0 <= local < local_world:
        raise RetabError(f"torchrun environment: LOCAL_RANK={local} does not lie in 0..LOCAL_WORLD_SIZE-1 "
                         f"(LOCAL_WORLD_SIZE={local_world})")
    return ProcessInfo(rank, world, local, local_world)


def current() -> ProcessInfo:
    """This process's place: the joined process group if there is one, else the environment."""
    if is_initialized():
        import torch.distributed as dist

        info = process_info()
        return ProcessInfo(dist.get_rank(), dist.get_world_size(), info.local_rank, info.local_world_size)
    return process_info()


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


# ----------------------------------------------------------------------------- start-up

def process_device(name: str = "auto"):
    """--device for this process: as retab.misc.device.resolve_device, except that under torchrun
    `cuda` (or auto on a CUDA machine) means the GPU of LOCAL_RANK, which becomes the current device."""
    import torch

    device = resolve_device(name)
    info = process_info()
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        if info.local_rank >= torch.cuda.device_count():
            raise RetabError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                             "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        if device.index is None:  # plain `cuda`: the current GPU, named (set_device needs an index)
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def setup_process(device="auto", backend: str | None = None, process_group: bool = False):
    """(ProcessInfo, device) of this process; `device` a --device name (see process_device) or a
    torch.device. Under torchrun with more than one process: `process_group=True` (training)
    joins the group with `backend` (default gloo on the CPU, nccl on CUDA); processes other than
    rank 0 log errors only."""
    info = process_info()
    if backend is not None and backend not in BACKENDS:
        raise RetabError(f"--dist_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(device, str):
        device = process_device(device)
    if not info.distributed:
        if backend is not None:
            log.warning("--dist_backend %s is ignored: not launched by torchrun with several processes", backend)
        return info, device
    if not info.is_main:
        logging.getLogger("retab").setLevel(logging.ERROR)
    if process_group:
        _join_group(info, device, backend)
    log.info("%s (%s), on %s", info.describe(), "process group " + _backend_name() if process_group else
             "no process group", device)
    return info, device


def _backend_name() -> str:
    import torch.distributed as dist

    return str(dist.get_backend()) if is_initialized() else "none"


def _join_group(info: ProcessInfo, device, backend: str | None) -> None:
    import torch.distributed as dist

    if is_initialized():
        if dist.get_world_size() != info.world_size:
            raise RetabError(f"a process group of {dist.get_world_size()} processes exists, but "
                             f"WORLD_SIZE is {info.world_size}")
        return
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise RetabError("--dist_backend nccl needs CUDA devices; on the CPU use gloo (the default there)")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RetabError(f"{', '.join(missing)} not set: launch several processes with torchrun")
    if not dist.is_available():
        raise RetabError("this PyTorch build has no torch.distributed")
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)


def finish() -> None:
    """Wait for every process, then leave the process group (nothing without one)."""
    import torch.distributed as dist

    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- inference

def shard(names, info: ProcessInfo | None = None) -> list:
    """This process's share of a list: names[rank::world] (the whole list for a single process).

    The shares depend on the list alone, never on which outputs exist, so processes that skip
    finished images at different moments still cover every image exactly once."""
    info = current() if info is None else info
    return list(names)[info.rank::info.world_size]


def default_workers(total: int, info: ProcessInfo | None = None) -> int:
    """`total` worker processes shared among the processes of this machine (at least 1)."""
    info = process_info() if info is None else info
    return max(1, total // info.local_world_size)


# ----------------------------------------------------------------------------- training

def per_process_batch(global_batch: int, world_size: int | None = None) -> int:
    """--batch_size is the global batch (the published one by default): each process takes
    global // world images; a global batch that does not divide is an error."""
    world = current().world_size if world_size is None else world_size
    if global_batch % world:
        raise RetabError(f"--batch_size {global_batch} is the global batch and must be divisible by the "
                         f"{world} processes (e.g. {max(world, global_batch // world * world)})")
    return global_batch // world


def single_process_order(n: int, seed: int) -> list[int]:
    """The sample order of one epoch of the single-process run: what retab.engines.training.make_loader's
    DataLoader (shuffle, its generator seeded with `seed`) visits. Found by running such a
    DataLoader over the indices, so that it follows that DataLoader's use of its generator."""
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator()
    generator.manual_seed(seed)
    return [int(i) for i in DataLoader(range(n), batch_size=None, shuffle=True, generator=generator)]


class ShardedBatchSampler:
    """Batches of one process: global batch k of the single-process run (order
    `single_process_order(n, seed_base + epoch)`, the last incomplete batch dropped) split into
    world equal contiguous parts; this process takes part `rank`.

    With a loss that is a mean over the images of a batch (classification), the gradients that
    DistributedDataParallel averages give exactly the single-process gradient (up to rounding).
    Losses that average over pixels or pairs (affinity, boundary, segmentation) are averaged per
    process first, which weights the images slightly differently than one big batch does."""

    def __init__(self, n: int, global_batch: int, seed_base: int, info: ProcessInfo | None = None):
        info = current() if info is None else info
        self.n, self.global_batch, self.seed_base = int(n), int(global_batch), int(seed_base)
        self.rank, self.world = info.rank, info.world_size
        self.batch = per_process_batch(global_batch, self.world)
        if self.n < self.global_batch:
            raise RetabError(f"{self.n} training images are fewer than one global batch of {self.global_batch}: "
                             f"lower --batch_size or use fewer processes")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        order = single_process_order(self.n, self.seed_base + self.epoch)
        for k in range(len(self)):
            start = k * self.global_batch + self.rank * self.batch
            yield order[start:start + self.batch]


def seed_process(seed: int, epoch: int, rank: int) -> None:
    """Global generators of one process for one epoch (dropout draws from torch's): distinct per
    process, so that the processes do not drop the same channels, and a function of (seed, epoch,
    rank) alone, so that a resumed run draws what the uninterrupted one drew."""
    import torch

    state = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(rank)]).generate_state(2)
    value = int(state[0]) << 32 | int(state[1])
    torch.manual_seed(value)
    np.random.seed(int(state[0]))
    random.seed(value)


def wrap_model(model, device):
    """DistributedDataParallel around `model` (on `device`); the caller keeps `model` itself for
    state dicts, whose keys then carry no `module.` prefix."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)


def mean_over_processes(value: float, device) -> float:
    """The mean of a number over every process (the value itself for a single process)."""
    if not is_initialized():
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def sum_over_processes(values, device) -> list[float]:
    """Element-wise sums of a list of numbers over every process (the numbers themselves for one)."""
    values = [float(v) for v in values]
    if not is_initialized():
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]
