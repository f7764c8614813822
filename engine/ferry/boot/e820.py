"""The guest's memory map, as both boot paths hand it to the guest.

Linux gets the PC picture it expects: conventional RAM up to the EBDA,
the EBDA/BIOS area (where the ACPI tables live) reserved, RAM from
1 MiB to the MMIO hole and the rest of RAM above 4 GiB. Guests booted by
the ELF contract get the same map with the whole first MiB reserved,
because the VMM's GDT, page tables, stacks and boot-info block live
there and such a guest has no reason to reuse that memory.
"""

from __future__ import annotations

from ..memory import GuestMemory
from ..layout import E820_RAM, E820_RESERVED, EBDA_START, HIGH_MEMORY

Entry = tuple[int, int, int]   # (addr, size, type)


def e820_map(mem: GuestMemory) -> list[Entry]:
    """The map for a Linux guest of ``mem``: entries sorted, none overlapping."""
    low, *high = mem.regions
    entries: list[Entry] = [
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIGH_MEMORY - EBDA_START, E820_RESERVED),
    ]
    if low.end > HIGH_MEMORY:
        entries.append((HIGH_MEMORY, low.end - HIGH_MEMORY, E820_RAM))
    entries.extend((region.gpa, region.size, E820_RAM) for region in high)
    return entries


def elf_e820_map(mem: GuestMemory) -> list[Entry]:
    """The map promised by the ELF boot contract: the first MiB reserved, RAM above."""
    return restrict_low_memory(e820_map(mem))


def restrict_low_memory(entries: list[Entry]) -> list[Entry]:
    """``entries`` with everything below 1 MiB folded into one reserved entry."""
    above = []
    for addr, size, kind in entries:
        end = addr + size
        if end > HIGH_MEMORY:
            start = max(addr, HIGH_MEMORY)
            above.append((start, end - start, kind))
    return [(0, HIGH_MEMORY, E820_RESERVED), *above]
