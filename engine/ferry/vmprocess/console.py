"""The guest's serial console as the VM process keeps it: ``console.log``, rotated."""

from __future__ import annotations

import os
from pathlib import Path

from ..store import statedir

CONSOLE_LIMIT = 16 * 2**20  # console.log moves to console.log.1 past this, so it never fills the disk


class Console:
    """The console log: every byte the guest writes to COM1, kept across reboots, in two
    generations of at most ``limit`` bytes (``console.log`` and ``console.log.1``)."""

    def __init__(self, path: Path, limit: int = CONSOLE_LIMIT):
        self.path = path
        self.limit = limit
        self._open()

    def _open(self) -> None:
        fd = statedir.open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.handle = os.fdopen(fd, "ab", buffering=0)
        self.size = os.fstat(fd).st_size

    def write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
        except OSError:
            return  # a full disk loses console bytes, never the guest (this runs in a vCPU thread)
        self.size += len(data)
        if self.size > self.limit:
            self._rotate()

    def _rotate(self) -> None:
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self.handle.close()
            self._open()
        except OSError:
            self.size = 0  # keep writing where we are; try again a limit later

    def flush(self) -> None:
        pass

    def note(self, text: str) -> None:
        self.write(f"\n[ferry] {text}\n".encode())
