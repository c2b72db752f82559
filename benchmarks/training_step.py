"""Training steps of the classifier (train_cls's step in retab.engines.training.train): images/s of variants in one run.

Variants, all through the project's training loop (retab.engines.training.train) on synthetic crops, with
the same global batch:
  fp32, 1 process          the default
  bf16 AMP, 1 process      --amp bf16 (on CUDA also fp16 when --fp16)
  fp32, N processes        torchrun-style: N processes with the launcher's environment, gloo on
                           the CPU (nccl on CUDA, one GPU each: needs N GPUs), each taking
                           global batch / N images per step
Every process of every variant gets the same resources: --threads CPU threads (default 1) or one
GPU; so the N-process ratio is the scale-out speed-up of N times the hardware (ideal: N), with the
cost of the gradient all-reduce and of smaller per-process batches. (Sharing a fixed set of CPU
cores instead says more about OpenMP than about the training: on a machine with other load, two
threads that wait for each other at every operation can be many times slower than one.)
Every variant runs in fresh child processes (spawned). The rate counts the global batch over the
steps after the first (warm-up) one: from the start of step 2 to the start of the last step,
so each interval is a whole step (forward, loss, backward, gradient all-reduce, optimizer).

    .venv/bin/python benchmarks/training_step.py                          # CPU: 2 processes
    .venv/bin/python benchmarks/training_step.py --device cuda --width 1 --crop 448 --batch 8
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class SyntheticCrops:
    """Deterministic random crops and labels (no file reading: the step is what is measured)."""

    def __init__(self, n: int, crop: int, seed: int):
        self.n, self.crop, self.seed = n, crop, seed

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        import torch

        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        labels = (torch.rand(20, generator=g) < 0.15).float()
        return torch.randn(3, self.crop, self.crop, generator=g), labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, opts: dict, out_dir: str, queue) -> None:
    """One process of a variant: train one epoch through retab.engines.training.train; rank 0 reports."""
    import torch
    from tqdm import tqdm

    if world > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(opts["threads"])
    from retab.misc import distributed
    from retab.models import build_model
    from retab.optim import make_optimizer, param_groups
    from retab.stages.train_cls import cls_step
    from retab.engines import training
    from retab.engines.training import TrainConfig, max_steps, train

    def quiet_bar(*args, **kwargs):  # no progress bars from the training loop
        kwargs["disable"] = True
        return tqdm(*args, **kwargs)

    training.tqdm = quiet_bar

    info, device = distributed.setup_process(opts["device"], process_group=world > 1)
    torch.manual_seed(0)
    model = build_model("cls", opts["width"])
    dataset = SyntheticCrops(opts["batch"] * opts["steps"], opts["crop"], 0)
    cfg = TrainConfig(session_name=f"bench{rank}", max_epoches=1, batch_size=opts["batch"], out_dir=out_dir,
                      amp=opts["amp"], channels_last=opts["channels_last"])
    optimizer = make_optimizer("sgd", param_groups(model), lr=1e-3, weight_decay=5e-4,
                               max_step=max_steps(len(dataset), cfg))
    starts = []

    def timed_step(net, batch, dev):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        starts.append(time.perf_counter())
        return cls_step(net, batch, dev)

    train(model, optimizer, dataset, timed_step, cfg, device)
    if info.is_main:
        steps = len(starts) - 2  # whole steps between the start of step 2 and that of the last
        queue.put(steps * opts["batch"] / (starts[-1] - starts[1]))


def measure(world: int, opts: dict) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    with tempfile.TemporaryDirectory() as out_dir:
        procs = [ctx.Process(target=_worker, args=(rank, world, port, opts, out_dir, queue)) for rank in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"a worker of the {world}-process variant failed")
        return queue.get(timeout=10)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--width", type=float, default=None,
                        help="ResNet-38 width (default: 1.0 on CUDA, 0.125 on CPU)")
    parser.add_argument("--crop", type=int, default=None, help="crop size (default: 448 on CUDA, 128 on CPU)")
    parser.add_argument("--batch", type=int, default=8, help="global batch (published: 8)")
    parser.add_argument("--steps", type=int, default=None, help="steps per variant (default: 20 on CUDA, 8 on CPU)")
    parser.add_argument("--processes", type=int, default=2, help="processes of the distributed variant (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every process (default 1)")
    parser.add_argument("--fp16", action="store_true", help="on CUDA also measure --amp fp16")
    args = parser.parse_args(argv)

    import torch

    from machine_info import describe

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    device = "cuda" if cuda else "cpu"
    opts = {"device": device, "width": args.width if args.width is not None else (1.0 if cuda else 0.125),
            "crop": args.crop or (448 if cuda else 128), "batch": args.batch,
            "steps": args.steps or (20 if cuda else 8), "threads": args.threads,
            "amp": "none", "channels_last": False}
    if opts["steps"] < 3:
        parser.error("--steps must be at least 3 (the first step is a warm-up)")
    torch.set_num_threads(opts["threads"])
    print(describe(device))
    print(f"train_cls step on {device}: ResNet-38 width {opts['width']}, crop {opts['crop']}, global batch "
          f"{opts['batch']}, {opts['steps']} steps per variant (the first is not timed), {opts['threads']} CPU "
          f"thread(s) per process")

    variants = [("fp32, 1 process", 1, {})]
    if not cuda or torch.cuda.is_bf16_supported():
        variants.append(("bf16 AMP, 1 process", 1, {"amp": "bf16"}))
    if cuda and args.fp16:
        variants.append(("fp16 AMP, 1 process", 1, {"amp": "fp16"}))
    if cuda:
        variants.append(("bf16 AMP + channels_last, 1 process", 1, {"amp": "bf16", "channels_last": True}))
    if args.processes > 1:
        if cuda and torch.cuda.device_count() < args.processes:
            print(f"({args.processes}-process variant skipped: {torch.cuda.device_count()} GPU(s))")
        elif args.batch % args.processes:
            parser.error(f"--batch {args.batch} must be divisible by --processes {args.processes}")
        else:
            variants.append((f"fp32, {args.processes} processes ({'nccl' if cuda else 'gloo'})", args.processes, {}))

    rates = {}
    for name, world, extra in variants:
        rates[name] = measure(world, {**opts, **extra})
        print(f"{name:40s} {rates[name]:8.2f} images/s", flush=True)
    print()
    base = rates["fp32, 1 process"]
    for name, rate in rates.items():
        if name != "fp32, 1 process":
            print(f"{name} / fp32, 1 process: {rate / base:.2f}x images/s")


if __name__ == "__main__":
    main()
