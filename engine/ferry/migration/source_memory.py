"""The source VM's RAM as the sending process sees it.

A VM on a memfd hands the fd over (SCM_RIGHTS): the sender moves it with
sendfile and reads it with pread, never mapping it (a mapping would fault
in every page it looked at). A lazily restored VM keeps copy-on-write
pages in its own process, so the sender reads those through /proc/PID/mem.
"""

from __future__ import annotations

import os

from ..errors import FerryError
from ..memory.chunks import CHUNK_SIZE, data_ranges


class SourceMemory:
    def __init__(self, size: int, fd: int | None = None, pid: int | None = None, base: int = 0):
        self.size = size
        self.fd = fd
        self._read_fd, self._base = fd, 0
        if fd is None:
            self._read_fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            self._base = base
        self._buffer = memoryview(bytearray(CHUNK_SIZE))

    def read(self, offset: int, length: int) -> memoryview:
        """Up to a chunk of RAM, in one buffer reused by every read (a fresh 2 MiB object per
        chunk costs more in page faults than the copy): valid only until the next read."""
        if length > len(self._buffer):
            self._buffer = memoryview(bytearray(length))
        view = self._buffer[:length]
        got = 0
        while got < length:
            count = os.preadv(self._read_fd, [view[got:]], self._base + offset + got)
            if count == 0:
                raise FerryError(f"guest RAM ends at {offset + got:#x}, inside the VM's {self.size:#x} bytes")
            got += count
        return view

    def used_ranges(self) -> list[tuple[int, int]]:
        if self.fd is not None:
            return list(data_ranges(self.fd, self.size))
        return [(0, self.size)]

    def close(self) -> None:
        os.close(self._read_fd)
