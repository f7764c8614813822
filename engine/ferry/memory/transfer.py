"""Moving guest RAM between the memfd and files, without a Python copy.

Writes go from the memfd to the file with ``sendfile`` (from the mapping with
``pwrite`` for a lazily restored VM), reads into the memfd with ``sendfile``; holes in the memfd (pages
the guest never touched) are skipped with SEEK_DATA, so they stay holes in
the file.
"""

from __future__ import annotations

import os

from .chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST, data_ranges, digest


def write_range(memory, fd: int, start: int, end: int) -> None:
    """Guest RAM to a file at the same offsets: sendfile from the memfd (no page of it is
    touched in this process), or pwrite from the mapping of a lazily restored VM."""
    if memory.private:
        while start < end:
            start += os.pwrite(fd, memory.view[start:end], start)
        return
    os.lseek(fd, start, os.SEEK_SET)
    while start < end:
        sent = os.sendfile(fd, memory.fd, start, end - start)
        if sent == 0:
            raise OSError(f"guest RAM ends at {start:#x}")
        start += sent


def copy_into(memfd: int, fd: int, start: int, end: int, at: int | None = None) -> None:
    """File bytes ``start`` to ``end`` to guest RAM at offset ``at`` (the same offsets if
    not given), inside the kernel (sendfile)."""
    os.lseek(memfd, start if at is None else at, os.SEEK_SET)
    while start < end:
        got = os.sendfile(memfd, fd, start, end - start)
        if got == 0:
            raise EOFError(f"memory file ends at {start:#x}, expected {end:#x}")
        start += got


def used_ranges(memory):
    """Ranges of the memory backing that may hold non-zero data."""
    if memory.private:
        # Copy-on-write pages of a lazily restored VM are not visible through
        # the file's holes, so every chunk is looked at; all-zero ones are skipped.
        return [(start, min(start + CHUNK_SIZE, memory.size))
                for start in range(0, memory.size, CHUNK_SIZE)
                if digest(memory.read_backing(start, CHUNK_SIZE)) != ZERO_CHUNK_DIGEST]
    return list(data_ranges(memory.fd, memory.size))
