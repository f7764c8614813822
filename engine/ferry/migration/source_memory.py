"""The source VM's RAM as the sending process sees it.

A VM on a memfd hands the fd over (SCM_RIGHTS): the sender maps it and
moves it with sendfile. A lazily restored VM keeps copy-on-write pages in
its own process, so the sender reads those through /proc/PID/mem.
"""

from __future__ import annotations

import mmap
import os

from ..snapshot import format as fmt


class SourceMemory:
    def __init__(self, size: int, fd: int | None = None, pid: int | None = None, base: int = 0):
        self.size = size
        self.fd = fd
        self._proc = None
        self._map = None
        if fd is not None:
            self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED)
            self.view = memoryview(self._map)
        else:
            self._proc = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            self.base = base

    def read(self, offset: int, length: int):
        if self._map is not None:
            return self.view[offset:offset + length]
        return os.pread(self._proc, length, self.base + offset)

    def used_ranges(self) -> list[tuple[int, int]]:
        if self.fd is not None:
            return list(fmt.data_ranges(self.fd, self.size))
        return [(0, self.size)]

    def digests(self) -> list[str]:
        with_data = fmt.chunks_with_data(self.fd, self.size) if self.fd is not None else None
        return fmt.chunk_digests(self.size, self.read, with_data)

    def close(self) -> None:
        if self._map is not None:
            self.view.release()
            self._map.close()
            os.close(self.fd)
        if self._proc is not None:
            os.close(self._proc)
