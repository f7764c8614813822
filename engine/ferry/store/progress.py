"""How far a long operation has got, for the command waiting on it.

A VM process doing a long operation for a command (a save) writes
``progress.json`` in the VM's folder: ``{"op", "step", "done", "total"}``,
replaced whole (never read half written), at most ten times a second, and
removed when the operation ends. The command polls it; nothing else reads it.
Reporting is best effort: a full disk loses the figures, never the operation.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .statedir import read_record, write_atomic

INTERVAL = 0.1  # seconds between two writes (and two polls)


def progress_file(vm_folder: Path) -> Path:
    return vm_folder / "progress.json"


class ProgressWriter:
    """``writer(step, done, total)``: the figures of operation ``op``, for ``progress_file``."""

    def __init__(self, path: Path, op: str):
        self.path = path
        self.op = op
        self.last = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < INTERVAL:
            return
        self.last = now
        record = {"op": self.op, "step": step, "done": int(done), "total": int(total)}
        try:
            write_atomic(self.path, json.dumps(record, sort_keys=True), durable=False)
        except OSError:
            pass

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def read_progress(path: Path) -> dict | None:
    """The figures if there are any, well formed; None otherwise."""
    record = read_record(path)
    if not isinstance(record.get("step"), str) or not all(
            isinstance(record.get(key), int) and record[key] >= 0 for key in ("done", "total")):
        return None
    return record


class Watch:
    """While open, a thread polls ``path`` and hands each new reading to ``progress(step, done, total)``."""

    def __init__(self, path: Path, progress):
        import threading  # here: only commands that wait on a VM process's work pay for it
        self.path = path
        self.progress = progress
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="progress", daemon=True)

    def __enter__(self) -> Watch:
        if self.progress:
            self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()

    def _poll(self) -> None:
        seen = None
        while not self.stopped.wait(INTERVAL):
            record = read_progress(self.path)
            if record is not None and record != seen:
                seen = record
                self.progress(record["step"], record["done"], record["total"])
