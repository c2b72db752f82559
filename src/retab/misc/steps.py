"""A driver's steps, timed where they run: a stage started with RETAB_STEP=NAME in its environment
logs its command line and, when it did work, records `NAME<TAB>seconds` in the file RETAB_TIMINGS
names (one line per step: the time of its last run, so a rerun that finds a step done keeps it)."""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from retab.misc.fileio import write_text

STEP_VAR = "RETAB_STEP"
TIMINGS_VAR = "RETAB_TIMINGS"

_nothing_done = False


def nothing_to_do() -> None:
    """Called by a stage that found its work done (a trained net): its step's time is not recorded."""
    global _nothing_done
    _nothing_done = True


def take_nothing_to_do() -> bool:
    """Whether the stage run so far found nothing to do, the flag then cleared: for a command that
    runs several stages (use_dataset), nothing to do only when each part had none."""
    global _nothing_done
    found, _nothing_done = _nothing_done, False
    return found


def record_time(path, name: str, seconds: float) -> None:
    """Replace (or append) the line of `name` in the timings file, through a temporary name."""
    path = Path(path)
    lines = path.read_text().splitlines() if path.is_file() else []
    row = f"{name}\t{seconds:.2f}"
    kept = [row if line.partition("\t")[0] == name else line for line in lines]
    if row not in kept:
        kept.append(row)
    write_text(path, "\n".join(kept) + "\n")


def run_step(command: str, argv: list[str], run, environ=os.environ) -> int:
    """run() under the step named by RETAB_STEP, if any: its command line first, then, on success,
    its time (recorded unless the stage found nothing to do). Returns run()'s exit status."""
    take_nothing_to_do()  # a flag left by an earlier stage in this process is not this one's
    name = environ.get(STEP_VAR) or None
    if name:
        print(f"[{name}] {shlex.join([command, *argv])}", flush=True)
    start = time.perf_counter()
    rc = run()
    seconds = time.perf_counter() - start
    if name and rc == 0:
        if take_nothing_to_do():
            print(f"[{name}] nothing to do: done before", flush=True)
        else:
            timings = environ.get(TIMINGS_VAR)
            if timings:
                record_time(timings, name, seconds)
            print(f"[{name}] done in {seconds:.2f}s", flush=True)
    return rc
