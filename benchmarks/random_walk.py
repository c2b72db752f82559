"""Time and peak memory of the sparse random walk against the dense published-style walk, in one run.

Sizes: a VOC image (375 x 500 -> 47 x 63 grid, N = 2961) and 4x its pixels (752 x 1008 -> 94 x 126,
N = 11844); 448 affinity channels, background + 2 classes, PSA mode (every pair), beta 8, logt 8.
The dense reference runs in float32 like the published code (dense N x N matrix, matrix power by
repeated squaring). At 4x it needs about 4 GB and, on a 2-core CPU, several minutes: pass
--skip-dense-large for a quick run.

Every measurement runs in a fresh child process so that peak memories do not mix. The peak is the
memory above the level just before the measured calls (after a warm-up): on CPU the resident set's
high-water mark (torch's allocations are invisible to tracemalloc), on CUDA
torch.cuda.max_memory_allocated. Times: the fastest of --repeats runs for the fast walk, one run for
the dense one. On a machine busy with other work, --threads 1 gives the steadiest numbers.

    .venv/bin/python benchmarks/random_walk.py [--device auto|cpu|cuda] [--skip-dense-large]

--device auto (the default) measures on CUDA when a GPU is there, else on the CPU; the machine
line names the CPU, torch and the GPU.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"VOC": (375, 500), "4x": (752, 1008)}
CLASSES = (4, 14)  # boat, person: background + 2 classes are walked

sys.path.insert(0, str(Path(__file__).resolve().parent))  # machine_info, also in the measuring processes
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the dense reference walk


def synthetic_inputs(height: int, width: int, channels: int, seed: int):
    """Affinity features with a few regions (so the walk has structure), CAM bumps for two classes."""
    import torch

    from retab.random_walk import grid_size, stage1_labels, stage1_scores

    rng = np.random.default_rng(seed)
    gh, gw = grid_size(height, width)
    centres = rng.uniform(0, 1, size=(4, 2)) * (gh, gw)
    yy, xx = np.mgrid[0:gh, 0:gw]
    region = np.argmin([(yy - cy) ** 2 + (xx - cx) ** 2 for cy, cx in centres], axis=0)
    features = rng.normal(size=(4, channels))[region].transpose(2, 0, 1)
    features = features + 0.3 * rng.normal(size=features.shape)
    py, px = np.mgrid[0:height, 0:width]
    cams = {}
    for k in CLASSES:
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        bump = np.exp(-((py - cy) ** 2 + (px - cx) ** 2) / (2 * (0.25 * width) ** 2))
        cams[k] = (bump / bump.max()).astype(np.float32)
    scores = stage1_scores(cams, height, width)
    return torch.from_numpy(features.astype(np.float32)), scores, stage1_labels(cams)


class PeakMemory:
    """Peak memory above the level at `start()`: CUDA allocator statistics, or on CPU the resident set.

    On Linux the kernel's high-water mark (VmHWM) is reset at `start()` through /proc/self/clear_refs,
    so library loading and warm-up before `start()` do not count; elsewhere ru_maxrss (whole process).
    """

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def start(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
            self.before = self.torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.before = self._status_kb("VmRSS") * 1024

    def peak(self) -> int:
        if self.device.type == "cuda":
            return self.torch.cuda.max_memory_allocated(self.device) - self.before
        high_water = self._status_kb("VmHWM") * 1024
        if not high_water:
            high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return high_water - self.before

    @staticmethod
    def _status_kb(key: str) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0


def _measure(kind: str, size_name: str, device_name: str, channels: int, repeats: int, seed: int,
             threads: int):
    """Child process: one walk (`fast` or `dense`) on one size -> (seconds, peak bytes, walked channels)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from dense_walk import dense_random_walk_reference
    from retab.random_walk import random_walk

    device = torch.device(device_name)

    def walk(inputs):
        features, scores, labels = inputs
        if kind == "fast":
            return random_walk(features.to(device), scores, labels, "psa")
        return dense_random_walk_reference(features.to(device), scores, labels, "psa", dtype=torch.float32)

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    inputs = synthetic_inputs(*SIZES[size_name], channels, seed)
    # warm-up (first-call library initialisation is not the walk's cost): at full size for the
    # fast walk, which is timed over several runs, on a small image for the slow dense one
    walk(inputs if kind == "fast" else synthetic_inputs(64, 96, channels, seed))
    memory = PeakMemory(device)
    memory.start()
    times = []
    for _ in range(repeats if kind == "fast" else 1):
        synchronise()
        start = time.perf_counter()
        out = walk(inputs)
        synchronise()
        times.append(time.perf_counter() - start)
    return min(times), memory.peak(), out[inputs[2]]


def measure(kind, size_name, args):
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_measure, kind, size_name, args.device, args.channels, args.repeats,
                           args.seed, args.threads).result()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: cuda when available, else cpu")
    parser.add_argument("--skip-dense-large", action="store_true", help="skip the slow dense walk at 4x")
    parser.add_argument("--channels", type=int, default=448, help="affinity feature channels (448 = f9)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of the fast walk; the fastest counts (least disturbed by other load)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads in the measuring processes (0 = torch's default); "
                             "1 gives steadier timings on a busy machine")
    args = parser.parse_args(argv)

    import torch

    from machine_info import describe
    from retab.random_walk import grid_size, labels_from_scores

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    threads = args.threads or torch.get_num_threads()
    print(describe(args.device))
    print(f"device {args.device}, torch {torch.__version__}, {threads} CPU threads, "
          f"{args.channels} channels, PSA mode, beta 8, logt 8, background + {len(CLASSES)} classes")
    results = {}
    for size_name, (height, width) in SIZES.items():
        gh, gw = grid_size(height, width)
        fast_s, fast_mem, fast_out = measure("fast", size_name, args)
        row = {"grid": (gh, gw), "fast_s": fast_s, "fast_mem": fast_mem}
        if size_name == "4x" and args.skip_dense_large:
            print(f"{size_name}: dense walk skipped (--skip-dense-large)")
        else:
            print(f"{size_name}: running the dense walk (N = {gh * gw}; minutes at 4x on a CPU) ...", flush=True)
            dense_s, dense_mem, dense_out = measure("dense", size_name, args)
            row.update(dense_s=dense_s, dense_mem=dense_mem,
                       max_rel_diff=float(np.abs(fast_out - dense_out).max() / np.abs(dense_out).max()),
                       label_agreement=float((labels_from_scores(fast_out) == labels_from_scores(dense_out)).mean()))
        results[size_name] = row

    print()
    print(f"{'size':5} {'grid':>8} {'N':>6} {'fast s':>8} {'dense s':>9} {'speed-up':>9} "
          f"{'fast MB':>8} {'dense MB':>9} {'mem ratio':>9} {'max rel diff':>12} {'labels equal':>12}")
    for size_name, row in results.items():
        gh, gw = row["grid"]
        line = f"{size_name:5} {f'{gh}x{gw}':>8} {gh * gw:6d} {row['fast_s']:8.3f} "
        if "dense_s" in row:
            line += (f"{row['dense_s']:9.2f} {row['dense_s'] / row['fast_s']:8.1f}x "
                     f"{row['fast_mem'] / 2**20:8.1f} {row['dense_mem'] / 2**20:9.1f} "
                     f"{row['dense_mem'] / max(row['fast_mem'], 1):8.1f}x {row['max_rel_diff']:12.2e} "
                     f"{100 * row['label_agreement']:11.3f}%")
        else:
            line += f"{'-':>9} {'-':>9} {row['fast_mem'] / 2**20:8.1f} {'-':>9} {'-':>9}"
        print(line)
    voc, large = results["VOC"], results["4x"]
    print(f"\nfast walk time 4x / VOC: {large['fast_s'] / voc['fast_s']:.2f} (4.00 = linear in pixels)")
    print(f"fast walk peak memory 4x / VOC: {large['fast_mem'] / max(voc['fast_mem'], 1):.2f}")
    if "dense_s" in large:
        print(f"dense walk time 4x / VOC: {large['dense_s'] / voc['dense_s']:.2f} (64 = cubic in pixels)")


if __name__ == "__main__":
    main()
