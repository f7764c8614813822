"""Moving guest RAM between the memfd, KVM's dirty log and files, without a Python copy.

Writes go from the memfd to the file with ``sendfile`` (from the mapping with
``pwrite`` for a lazily restored VM), reads into the memfd with ``sendfile``; holes in the memfd (pages
the guest never touched) are skipped with SEEK_DATA, so they stay holes in
the file.
"""

from __future__ import annotations

import ctypes
import os
import re

from ..layout import PAGE_SIZE
from ..kvm import abi
from .format import CHUNK_SIZE, ZERO_CHUNK_DIGEST, data_ranges, digest

NONZERO = re.compile(rb"[^\x00]+")


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


def copy_into(memfd: int, fd: int, start: int, end: int) -> None:
    """File to guest RAM at the same offsets, inside the kernel (sendfile)."""
    os.lseek(memfd, start, os.SEEK_SET)
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


def set_dirty_logging(machine, enabled: bool) -> None:
    machine.register_memory(abi.MEM_LOG_DIRTY_PAGES if enabled else 0)


def _runs(bitmap: bytes):
    """(first page, page count) for each run of set bits."""
    run_start, run_length = None, 0
    for match in NONZERO.finditer(bitmap):
        for byte_index in range(match.start(), match.end()):
            byte = bitmap[byte_index]
            for bit in range(8):
                page = byte_index * 8 + bit
                if byte >> bit & 1:
                    if run_start is not None and run_start + run_length == page:
                        run_length += 1
                    else:
                        if run_start is not None:
                            yield run_start, run_length
                        run_start, run_length = page, 1
    if run_start is not None:
        yield run_start, run_length


def dirty_ranges(machine) -> list[tuple[int, int]]:
    """Backing-file ranges written since the last call (KVM clears the log as it reads)."""
    ranges = []
    for slot, region in enumerate(machine.memory.regions):
        pages = region.size // PAGE_SIZE
        bitmap = (ctypes.c_uint64 * ((pages + 63) // 64))()
        machine.vm.get_dirty_log(slot, ctypes.addressof(bitmap))
        for first, count in _runs(bytes(bitmap)):
            start = region.offset + first * PAGE_SIZE
            ranges.append((start, start + count * PAGE_SIZE))
    return ranges


def total(ranges) -> int:
    return sum(end - start for start, end in ranges)
