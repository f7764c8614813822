"""Guest RAM layout: the PCI hole below 4 GiB."""

import pytest

from ferry.layout import GIB, MIB, PCI_HOLE_END, PCI_HOLE_START
from ferry.memory import GuestMemory, GuestMemoryError, plan_regions


def test_small_guest_is_one_region():
    assert [(r.gpa, r.size, r.offset) for r in plan_regions(64 * MIB)] == [(0, 64 * MIB, 0)]


def test_large_guest_skips_the_pci_hole():
    low, high = plan_regions(4 * GIB)
    assert (low.gpa, low.end) == (0, PCI_HOLE_START)
    assert (high.gpa, high.size, high.offset) == (PCI_HOLE_END, 1 * GIB, PCI_HOLE_START)


def test_addresses_in_the_hole_are_not_ram():
    memory = GuestMemory(4 * GIB)
    try:
        memory.write(PCI_HOLE_END, b"above")
        assert memory.read(PCI_HOLE_END, 5) == b"above"
        assert bytes(memory.view[PCI_HOLE_START:PCI_HOLE_START + 5]) == b"above"
        with pytest.raises(GuestMemoryError, match="not RAM"):
            memory.read(PCI_HOLE_START, 1)
    finally:
        memory.close()


@pytest.mark.parametrize("size", [0, 3 * MIB])
def test_sizes_must_be_whole_2_mib_pages(size):
    with pytest.raises(GuestMemoryError):
        GuestMemory(size)
