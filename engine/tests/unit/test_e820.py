"""The memory map both boot paths hand to the guest."""

import pytest

from ferry import layout
from ferry.boot.e820 import e820_map, elf_e820_map, restrict_low_memory
from ferry.memory import GuestMemory

RAM, RESERVED = layout.E820_RAM, layout.E820_RESERVED


@pytest.fixture
def memory():
    made = []

    def make(size):
        made.append(GuestMemory(size))
        return made[-1]
    yield make
    for mem in made:
        mem.close()


def covering(entries, addr):
    return [kind for start, size, kind in entries if start <= addr < start + size]


def assert_sorted_and_disjoint(entries):
    for (start, size, _), (next_start, _, _) in zip(entries, entries[1:]):
        assert start + size <= next_start


def test_small_guest(memory):
    mem = memory(64 * layout.MIB)
    assert e820_map(mem) == [
        (0, layout.EBDA_START, RAM),
        (layout.EBDA_START, layout.HIGH_MEMORY - layout.EBDA_START, RESERVED),
        (layout.HIGH_MEMORY, 63 * layout.MIB, RAM),
    ]


def test_smallest_guest(memory):
    entries = e820_map(memory(2 * layout.MIB))
    assert entries[-1] == (layout.HIGH_MEMORY, layout.MIB, RAM)


def test_guest_above_3_gib_continues_past_the_hole(memory):
    mem = memory(5 * layout.GIB)
    entries = e820_map(mem)
    assert entries[2] == (layout.HIGH_MEMORY, layout.PCI_HOLE_START - layout.HIGH_MEMORY, RAM)
    assert entries[3] == (layout.PCI_HOLE_END, 2 * layout.GIB, RAM)
    assert covering(entries, layout.IOAPIC_BASE) == []
    assert sum(size for _, size, kind in entries if kind == RAM) == mem.size - (layout.HIGH_MEMORY - layout.EBDA_START)


def test_acpi_tables_reserved_and_boot_data_in_ram(memory):
    entries = e820_map(memory(64 * layout.MIB))
    assert_sorted_and_disjoint(entries)
    assert covering(entries, layout.ACPI_TABLES) == [RESERVED]
    assert covering(entries, layout.ACPI_TABLES_END - 1) == [RESERVED]
    assert covering(entries, layout.EBDA_START) == [RESERVED]
    for addr in (layout.ZERO_PAGE, layout.CMDLINE, layout.HIGH_MEMORY):
        assert covering(entries, addr) == [RAM]


def test_elf_guests_see_the_first_mib_reserved(memory):
    mem = memory(5 * layout.GIB)
    entries = elf_e820_map(mem)
    assert entries[0] == (0, layout.HIGH_MEMORY, RESERVED)
    assert all(kind == RAM and start >= layout.HIGH_MEMORY for start, _, kind in entries[1:])
    assert sum(size for _, size, kind in entries if kind == RAM) == mem.size - layout.HIGH_MEMORY
    assert_sorted_and_disjoint(entries)


def test_restrict_clips_an_entry_straddling_1_mib():
    entries = [(0, 2 * layout.MIB, RAM), (4 * layout.MIB, layout.MIB, RAM)]
    assert restrict_low_memory(entries) == [
        (0, layout.HIGH_MEMORY, RESERVED),
        (layout.HIGH_MEMORY, layout.MIB, RAM),
        (4 * layout.MIB, layout.MIB, RAM),
    ]
