"""One line about the machine a benchmark ran on (CPU model and cores, load, torch, threads, GPU);
run as a script it prints that line."""
from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device=None) -> str:
    import torch

    load = f", load average {os.getloadavg()[0]:.1f} before the run" if hasattr(os, "getloadavg") else ""
    parts = [f"{cpu_model()}, {os.cpu_count()} CPUs{load}", f"torch {torch.__version__}",
             f"{torch.get_num_threads()} torch threads", f"python {platform.python_version()}"]
    if torch.cuda.is_available():
        index = 0
        if device is not None and torch.device(device).type == "cuda":
            index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        parts.append(f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}")
    else:
        parts.append("no CUDA device")
    return "machine: " + "; ".join(parts)


if __name__ == "__main__":
    print(describe())
