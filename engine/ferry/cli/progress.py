"""A progress line on stderr for long commands (``snapshot create``, ``snapshot verify``,
``restore``), drawn only when stderr is a terminal: a pipe, a log or a program reading
``--json`` gets nothing more than without it."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

WIDTH = 24
INTERVAL = 0.1


class Bar:
    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.drawn = 0
        self.last = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.drawn and now - self.last < INTERVAL:
            return
        self.last = now
        share = min(done / total, 1.0) if total else 1.0
        text = (f"{self.label}: {step:<8} [{'#' * int(share * WIDTH):<{WIDTH}}] {share:4.0%} "
                f"{done / 2**20:.0f}/{total / 2**20:.0f} MiB")
        self.stream.write("\r" + text.ljust(self.drawn))
        self.stream.flush()
        self.drawn = max(self.drawn, len(text))

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * self.drawn + "\r")
            self.stream.flush()


@contextmanager
def progress_bar(label: str):
    """A ``progress(step, done, total)`` callable drawing on a terminal's stderr (None when it
    is not one); the line is cleared at the end, whatever ended the command."""
    if not sys.stderr.isatty():
        yield None
        return
    bar = Bar(label)
    try:
        yield bar
    finally:
        bar.clear()
