"""KVM's dirty log of guest RAM: turning it on and off, and reading what was written.

Snapshots (a live save) and migration (pre-copy) both copy RAM while the guest runs,
then only what it dirtied since.
"""

from __future__ import annotations

import ctypes
import re

from ..layout import PAGE_SIZE
from ..kvm import abi

NONZERO = re.compile(rb"[^\x00]+")


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
