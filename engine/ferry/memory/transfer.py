"""Moving guest RAM from files into the memfd, without a Python copy, and finding the
ranges of RAM that hold data.

Reads into the memfd go with ``sendfile``; holes in the memfd (pages the guest
never touched) are found with SEEK_DATA, so a save keeps them holes in its files.
"""

from __future__ import annotations

import os

from .chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST, data_ranges, digest


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
