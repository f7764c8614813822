import pytest

from ferry.devices.base import StateVersionError
from ferry.devices.bus import PortIoBus
from ferry.devices.i8042 import I8042, I8042State

DATA = 0x60
CMD = STATUS = 0x64
OBF = 0x01


class Controller:
    def __init__(self):
        self.resets = 0
        self.dev = I8042("i8042", self._reset)
        self.bus = PortIoBus()
        self.bus.register(0x60, 5, self.dev)

    def _reset(self):
        self.resets += 1

    def status(self):
        return self.bus.read(STATUS, 1)[0]

    def command(self, cmd, *params):
        """Issue a controller command the way Linux's i8042_command does."""
        assert not self.status() & 0x02, "input buffer must be empty"
        self.bus.write(CMD, bytes([cmd]))
        for p in params:
            self.bus.write(DATA, bytes([p]))

    def result(self):
        assert self.status() & OBF, "expected a result byte"
        return self.bus.read(DATA, 1)[0]


@pytest.fixture
def kbc():
    return Controller()


def test_controller_is_present_and_idle(kbc):
    status = kbc.status()
    assert status != 0xFF
    assert not status & OBF
    assert status & 0x10  # keylock off
    assert status & 0x04  # system flag


def test_self_test_answers_0x55(kbc):
    kbc.command(0xAA)
    assert kbc.result() == 0x55
    assert not kbc.status() & OBF


def test_port_tests_report_no_fault(kbc):
    kbc.command(0xAB)
    assert kbc.result() == 0x00
    kbc.command(0xA9)
    assert kbc.result() == 0x00


def test_command_byte_read_and_write(kbc):
    kbc.command(0x20)
    initial = kbc.result()
    kbc.command(0x20)
    assert kbc.result() == initial
    kbc.command(0x60, 0x34)
    assert not kbc.status() & 0x08  # A2: the last write went to the data port
    kbc.command(0x20)
    assert kbc.status() & 0x08
    assert kbc.result() == 0x34


def test_linux_probe_sequence(kbc):
    # i8042_flush: nothing buffered.
    assert not kbc.status() & OBF
    kbc.command(0xAA)
    assert kbc.result() == 0x55
    kbc.command(0x20)
    ctr = kbc.result()
    ctr = (ctr | 0x10) & ~0x01  # keyboard disabled, interrupt off
    kbc.command(0x60, ctr)
    kbc.command(0x20)
    assert kbc.result() == ctr
    # AUX bit-assignment test: disabling and enabling must read back.
    kbc.command(0x60, ctr | 0x20)
    kbc.command(0x20)
    assert kbc.result() & 0x20
    kbc.command(0x60, ctr & ~0x20)
    kbc.command(0x20)
    assert not kbc.result() & 0x20
    assert kbc.resets == 0


def test_port_enable_commands_update_command_byte(kbc):
    def ctr():
        kbc.command(0x20)
        return kbc.result()

    kbc.command(0xAD)
    assert ctr() & 0x10
    kbc.command(0xAE)
    assert not ctr() & 0x10
    kbc.command(0xA7)
    assert ctr() & 0x20
    kbc.command(0xA8)
    assert not ctr() & 0x20


def test_output_port_read_and_write(kbc):
    kbc.command(0xD0)
    assert kbc.result() & 0x03 == 0x03  # not in reset, A20 on
    kbc.command(0xD1, 0xDD)  # A20 off, as old boot code writes
    kbc.command(0xD0)
    assert kbc.result() & 0x03 == 0x01
    assert kbc.resets == 0


def test_output_buffer_writes_echo_back(kbc):
    kbc.command(0xD2, 0x1C)
    assert kbc.status() & 0x21 == 0x01
    assert kbc.result() == 0x1C
    kbc.command(0xD3, 0x5A)
    assert kbc.status() & 0x21 == 0x21
    assert kbc.result() == 0x5A


def test_no_keyboard_or_mouse_data(kbc):
    kbc.bus.write(DATA, b"\xF2")  # keyboard "identify"
    kbc.command(0xD4, 0xF2)  # mouse "identify"
    assert not kbc.status() & OBF


def test_0xfe_pulses_reset(kbc):
    kbc.command(0xFE)
    assert kbc.resets == 1
    kbc.command(0xFF)  # pulses nothing
    assert kbc.resets == 1


def test_output_port_write_with_reset_low_resets(kbc):
    kbc.command(0xD1, 0xFE)
    assert kbc.resets == 1
    kbc.command(0xD0)
    assert kbc.result() & 0x01


def test_reset_callback_may_reenter_the_device():
    seen = []
    dev = I8042("i8042", lambda: seen.append(dev.io_read(4, 1)))
    dev.io_write(4, b"\xfe")
    assert len(seen) == 1


def test_unused_offsets_float(kbc):
    assert kbc.bus.read(0x61, 1) == b"\xff"
    assert kbc.bus.read(0x63, 1) == b"\xff"


def _observe(c):
    seen = [c.status()]
    c.command(0x20)
    seen.append(c.result())
    c.command(0xD0)
    seen.append(c.result())
    c.command(0x21)
    seen.append(c.result())
    return seen


def test_save_load_round_trip_behaves_identically():
    original = Controller()
    original.command(0x60, 0x47)
    original.command(0x61, 0x99)
    original.command(0xD1, 0xCD)
    original.command(0xD3, 0x42)  # leave a byte in the output buffer
    original.bus.write(CMD, b"\x60")  # and a command waiting for its data byte
    data = original.dev.save().to_bytes()

    restored = Controller()
    restored.dev.load(I8042State.from_bytes(data, I8042State.VERSION, "i8042"))
    for c in (original, restored):
        c.bus.write(DATA, b"\x45")
    assert restored.status() == original.status()
    assert restored.bus.read(DATA, 1) == original.bus.read(DATA, 1) == b"\x42"
    assert _observe(restored) == _observe(original) == [0x14, 0x45, 0xCD, 0x99]


def test_newer_state_version_is_refused_by_section_name(kbc):
    data = kbc.dev.save().to_bytes()
    with pytest.raises(StateVersionError, match="i8042"):
        I8042State.from_bytes(data, I8042State.VERSION + 1, "i8042")
