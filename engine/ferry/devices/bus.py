"""Address decoding for port I/O and MMIO exits.

A bus maps non-overlapping address ranges to devices. A vCPU thread that
takes an I/O or MMIO exit asks the bus, which finds the range with a
binary search over the sorted range starts and hands the device the
offset from the range's base. An access that nobody claims behaves as on
a PC with nothing on that address: reads float to all ones and writes
vanish.

The bus itself holds no lock on the access path. Registration publishes a
new immutable table in a single assignment, so lookups from several vCPU
threads never see a half-built table; each device serialises its own
state with its own lock.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from typing import Any, Callable, NamedTuple


class _Range(NamedTuple):
    base: int
    end: int  # exclusive
    device: Any
    read: Callable[[int, int], bytes]
    write: Callable[[int, bytes], None]


def _describe(base: int, end: int, device: Any) -> str:
    label = getattr(device, "name", "") or type(device).__name__
    return f"{base:#x}-{end - 1:#x} ({label})"


class _Bus:
    kind = ""
    limit = 0
    read_method = ""
    write_method = ""

    def __init__(self) -> None:
        self._register_lock = threading.Lock()
        self._table: tuple[tuple[int, ...], tuple[_Range, ...]] = ((), ())

    def register(self, base: int, length: int, device: Any) -> None:
        if length <= 0 or base < 0 or base + length > self.limit:
            raise ValueError(f"{self.kind} range {base:#x}+{length:#x} is outside {0:#x}-{self.limit - 1:#x}")
        entry = _Range(base, base + length, device, *self._methods(device))
        with self._register_lock:
            starts, ranges = self._table
            index = bisect_right(starts, base)
            self._refuse_overlap(entry, ranges[max(index - 1, 0):index + 1])
            ranges = ranges[:index] + (entry,) + ranges[index:]
            self._table = (tuple(r.base for r in ranges), ranges)

    def read(self, addr: int, size: int) -> bytes:
        hit = self._find(addr)
        if hit is None:
            return b"\xff" * size
        return hit.read(addr - hit.base, size)

    def write(self, addr: int, data: bytes) -> None:
        hit = self._find(addr)
        if hit is not None:
            hit.write(addr - hit.base, data)

    def _find(self, addr: int) -> _Range | None:
        starts, ranges = self._table
        index = bisect_right(starts, addr) - 1
        if index >= 0 and addr < ranges[index].end:
            return ranges[index]
        return None

    def _methods(self, device: Any) -> tuple[Callable, Callable]:
        read = getattr(device, self.read_method, None)
        write = getattr(device, self.write_method, None)
        if not callable(read) or not callable(write):
            raise TypeError(
                f"{type(device).__name__} cannot sit on the {self.kind} bus: "
                f"it needs {self.read_method}() and {self.write_method}()")
        return read, write

    def _refuse_overlap(self, entry: _Range, neighbours: tuple[_Range, ...]) -> None:
        # Existing ranges never overlap each other, so only the ranges
        # immediately before and after the new base can collide with it.
        for other in neighbours:
            if entry.base < other.end and other.base < entry.end:
                raise ValueError(
                    f"{self.kind} range {_describe(entry.base, entry.end, entry.device)} overlaps "
                    f"{_describe(other.base, other.end, other.device)}")


class PortIoBus(_Bus):
    """x86 I/O port space: 64 KiB of ports, devices implement ``io_read``/``io_write``."""

    kind = "port I/O"
    limit = 1 << 16
    read_method = "io_read"
    write_method = "io_write"


class MmioBus(_Bus):
    """Guest-physical MMIO: devices implement ``mmio_read``/``mmio_write``."""

    kind = "MMIO"
    limit = 1 << 64
    read_method = "mmio_read"
    write_method = "mmio_write"
