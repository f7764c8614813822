import pytest

from ferry.devices.bus import MmioBus, PortIoBus


class PortDevice:
    def __init__(self, name=""):
        self.name = name
        self.reads = []
        self.writes = []

    def io_read(self, offset, size):
        self.reads.append((offset, size))
        return bytes([offset]) * size

    def io_write(self, offset, data):
        self.writes.append((offset, bytes(data)))


class MmioDevice:
    def __init__(self):
        self.writes = []

    def mmio_read(self, offset, size):
        return offset.to_bytes(size, "little")

    def mmio_write(self, offset, data):
        self.writes.append((offset, bytes(data)))


def test_port_bus_dispatches_by_range_with_offsets():
    bus = PortIoBus()
    low, high, mid = PortDevice("low"), PortDevice("high"), PortDevice("mid")
    bus.register(0x3F8, 8, high)
    bus.register(0x60, 5, low)
    bus.register(0x70, 2, mid)

    assert bus.read(0x3FD, 1) == b"\x05"
    assert bus.read(0x64, 1) == b"\x04"
    bus.write(0x71, b"\x42")
    bus.write(0x3F8, b"A")

    assert high.reads == [(5, 1)]
    assert low.reads == [(4, 1)]
    assert mid.writes == [(1, b"\x42")]
    assert high.writes == [(0, b"A")]


def test_unclaimed_reads_are_all_ones_and_writes_vanish():
    bus = PortIoBus()
    device = PortDevice()
    bus.register(0x70, 2, device)

    assert bus.read(0x72, 1) == b"\xff"
    assert bus.read(0x6F, 2) == b"\xff\xff"
    assert bus.read(0x80, 4) == b"\xff" * 4
    bus.write(0x72, b"\x01")
    bus.write(0x0, b"\x01")
    assert device.writes == [] and device.reads == []


def test_adjacent_ranges_are_fine():
    bus = PortIoBus()
    bus.register(0x600, 8, PortDevice("a"))
    bus.register(0x608, 8, PortDevice("b"))
    bus.register(0x5F8, 8, PortDevice("c"))
    assert bus.read(0x607, 1) == b"\x07"
    assert bus.read(0x608, 1) == b"\x00"
    assert bus.read(0x5FF, 1) == b"\x07"


@pytest.mark.parametrize("base, length", [(0x3F8, 8), (0x3F0, 9), (0x3FF, 1), (0x3FA, 2), (0x300, 0x200)])
def test_overlapping_registration_is_refused_naming_both_ranges(base, length):
    bus = PortIoBus()
    bus.register(0x3F8, 8, PortDevice("serial.com1"))
    with pytest.raises(ValueError) as err:
        bus.register(base, length, PortDevice("intruder"))
    message = str(err.value)
    assert "0x3f8-0x3ff (serial.com1)" in message
    assert f"{base:#x}-{base + length - 1:#x} (intruder)" in message
    # The refused device left no trace.
    assert bus.read(0x3F8, 1) == b"\x00"
    if base < 0x3F8:
        assert bus.read(base, 1) == b"\xff"


def test_bad_ranges_and_devices_are_refused():
    bus = PortIoBus()
    with pytest.raises(ValueError):
        bus.register(0xFFFF, 2, PortDevice())
    with pytest.raises(ValueError):
        bus.register(0x10, 0, PortDevice())
    with pytest.raises(TypeError):
        bus.register(0x10, 1, MmioDevice())
    with pytest.raises(TypeError):
        MmioBus().register(0xFEC00000, 0x1000, PortDevice())


def test_mmio_bus_uses_mmio_methods():
    bus = MmioBus()
    device = MmioDevice()
    bus.register(0xD0000000, 0x1000, device)
    assert bus.read(0xD0000010, 4) == (0x10).to_bytes(4, "little")
    bus.write(0xD0000FFC, b"\x01\x02\x03\x04")
    assert device.writes == [(0xFFC, b"\x01\x02\x03\x04")]
    assert bus.read(0xD0001000, 8) == b"\xff" * 8
    assert bus.read(0xCFFFFFFF, 1) == b"\xff"
