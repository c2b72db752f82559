"""Progress a person can read: a tqdm bar on a terminal; on a file or a pipe (a driver's log) a
plain line every LOG_EVERY_S seconds and one at the end, instead of a bar's refreshes, which
put one epoch of train_cls into a single 52 kB line."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_EVERY_S = 30.0


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LineProgress:
    """The part of tqdm's interface the stages use (iterate, update, set_postfix, close, `with`),
    written as whole lines: `desc: n/total, rate/s, postfix`."""

    def __init__(self, iterable=None, total=None, desc: str = "", leave: bool = True, stream=None,
                 every_s: float = LOG_EVERY_S, clock=time.monotonic):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.leave, self.stream, self.every_s, self.clock = desc, leave, stream or sys.stderr, every_s, clock
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = clock()

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        return f"{self.desc}: {count} in {elapsed:.0f} s ({self.n / elapsed:.2f}/s){self.postfix}\n"

    def _write(self) -> None:
        self.stream.write(self.line())
        self.stream.flush()
        self.last = self.clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every_s:
            self._write()

    def set_postfix(self, **values) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and self.leave and self.n:
            self._write()
        self.closed = True

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable=None, *, total=None, desc: str = "", leave: bool = True, disable: bool = False,
             stream=None, **bar_options):
    """tqdm(iterable, ...) on a terminal, LineProgress elsewhere, nothing with disable."""
    stream = stream or sys.stderr
    if disable:
        return tqdm(iterable, total=total, disable=True)
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, leave=leave, file=stream, **bar_options)
    return LineProgress(iterable, total, desc, leave, stream)
