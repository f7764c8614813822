import calendar

import pytest

from ferry.devices.base import StateVersionError
from ferry.devices.bus import PortIoBus
from ferry.devices.rtc import NVRAM_SIZE, Rtc, RtcState

# Thursday 29 February 2024, 13:45:56.25 UTC
START = calendar.timegm((2024, 2, 29, 13, 45, 56)) + 0.25

SEC, MIN, HOUR, WDAY, DAY, MON, YEAR, CENTURY = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D


class Clock:
    def __init__(self, now=START):
        self.now = now

    def __call__(self):
        return self.now


class Cmos:
    def __init__(self, clock=None, device=None):
        self.clock = clock or Clock()
        self.dev = device or Rtc("rtc", self.clock)
        self.bus = PortIoBus()
        self.bus.register(0x70, 2, self.dev)

    def read(self, index):
        self.bus.write(0x70, bytes([index]))
        return self.bus.read(0x71, 1)[0]

    def write(self, index, value):
        self.bus.write(0x70, bytes([index]))
        self.bus.write(0x71, bytes([value]))

    def time(self):
        return [self.read(r) for r in (CENTURY, YEAR, MON, DAY, HOUR, MIN, SEC)]


@pytest.fixture
def cmos():
    return Cmos()


def test_time_reads_in_bcd_by_default(cmos):
    assert cmos.time() == [0x20, 0x24, 0x02, 0x29, 0x13, 0x45, 0x56]
    assert cmos.read(WDAY) == 5  # Thursday, Sunday being 1


def test_binary_mode(cmos):
    cmos.write(REG_B, 0x06)
    assert cmos.time() == [20, 24, 2, 29, 13, 45, 56]


def test_twelve_hour_mode(cmos):
    cmos.write(REG_B, 0x00)
    assert cmos.read(HOUR) == 0x81  # 1 PM
    cmos.write(REG_B, 0x04)
    assert cmos.read(HOUR) == 0x81
    cmos.clock.now -= 13 * 3600  # 00:45
    assert cmos.read(HOUR) == 12  # 12 AM, binary


def test_status_registers(cmos):
    assert cmos.read(REG_A) & 0x80 == 0
    assert cmos.read(REG_A) == 0x26
    assert cmos.read(REG_B) == 0x02
    assert cmos.read(REG_C) == 0
    assert cmos.read(REG_D) == 0x80
    cmos.write(REG_A, 0xA6)
    assert cmos.read(REG_A) == 0x26  # UIP is read-only
    cmos.write(REG_B, 0x52)  # PIE and UIE kept, though no interrupt is delivered
    assert cmos.read(REG_B) == 0x52
    cmos.write(REG_D, 0)
    assert cmos.read(REG_D) == 0x80


def test_clock_follows_the_host_clock(cmos):
    cmos.clock.now += 4
    assert cmos.read(SEC) == 0x00
    assert cmos.read(MIN) == 0x46


def test_nmi_mask_bit_does_not_change_the_index(cmos):
    cmos.bus.write(0x70, bytes([0x80 | SEC]))
    assert cmos.bus.read(0x71, 1) == b"\x56"
    assert cmos.bus.read(0x70, 1) == b"\xff"


def test_nvram_is_readable_and_writable(cmos):
    for index in range(0x0E, 0x80):
        if index != CENTURY:
            cmos.write(index, index ^ 0xA5)
    for index in range(0x0E, 0x80):
        if index != CENTURY:
            assert cmos.read(index) == index ^ 0xA5
    assert cmos.dev.nvram()[0x10 - 0x0E] == 0x10 ^ 0xA5
    assert len(cmos.dev.nvram()) == NVRAM_SIZE


def test_nvram_can_be_carried_to_a_new_device(cmos):
    cmos.write(0x40, 0x99)
    successor = Cmos(device=Rtc("rtc", Clock(), nvram=cmos.dev.nvram()))
    assert successor.read(0x40) == 0x99
    with pytest.raises(ValueError):
        Rtc(nvram=bytes(NVRAM_SIZE + 1))


def test_nvram_survives_reset(cmos):
    cmos.write(0x20, 0x42)
    cmos.write(REG_B, 0x72)
    cmos.dev.reset()
    assert cmos.read(0x20) == 0x42
    assert cmos.read(REG_B) == 0x02


def test_guest_setting_the_time_moves_the_offset(cmos):
    cmos.write(HOUR, 0x08)
    assert cmos.time() == [0x20, 0x24, 0x02, 0x29, 0x08, 0x45, 0x56]
    cmos.clock.now += 10
    assert cmos.time() == [0x20, 0x24, 0x02, 0x29, 0x08, 0x46, 0x06]
    assert cmos.dev.save().offset == pytest.approx(-5 * 3600 - 0.25)


def test_set_bit_freezes_the_clock_while_the_guest_writes(cmos):
    # mc146818_set_time: SET on, write every field, SET off.
    cmos.write(REG_B, 0x82)
    for index, value in ((SEC, 0x00), (MIN, 0x30), (HOUR, 0x22), (DAY, 0x31),
                         (MON, 0x12), (YEAR, 0x99), (CENTURY, 0x19)):
        cmos.write(index, value)
    cmos.clock.now += 100
    assert cmos.time() == [0x19, 0x99, 0x12, 0x31, 0x22, 0x30, 0x00]
    cmos.write(REG_B, 0x02)
    cmos.clock.now += 3600 * 2 - 1800 + 5
    assert cmos.time() == [0x20, 0x00, 0x01, 0x01, 0x00, 0x00, 0x05]


def test_set_bit_clears_uie(cmos):
    cmos.write(REG_B, 0x12)
    cmos.write(REG_B, 0x92)
    assert cmos.read(REG_B) == 0x82


def test_garbage_time_writes_do_not_break_the_clock(cmos):
    for index in (SEC, MIN, HOUR, DAY, MON, YEAR, CENTURY):
        cmos.write(index, 0xFF)
        cmos.write(index, 0x00)
    assert len(cmos.time()) == 7


def test_snapshot_keeps_guest_time_relative_to_host_time(cmos):
    cmos.write(YEAR, 0x28)
    cmos.write(0x70, 0x12)
    data = cmos.dev.save().to_bytes()

    later = Cmos(clock=Clock(START + 3600))
    later.dev.load(RtcState.from_bytes(data, RtcState.VERSION, "rtc"))
    assert later.time() == [0x20, 0x28, 0x02, 0x29, 0x14, 0x45, 0x56]
    assert later.read(0x70) == 0x12


def test_save_load_round_trip_behaves_identically(cmos):
    cmos.write(REG_B, 0x06)
    cmos.write(0x0F, 0x0A)
    cmos.write(MIN, 7)
    cmos.write(0x01, 0x33)  # seconds alarm: plain storage
    cmos.bus.write(0x70, b"\x80")  # NMI masked, index at seconds
    data = cmos.dev.save().to_bytes()

    restored = Cmos(clock=Clock(cmos.clock.now))
    restored.dev.load(RtcState.from_bytes(data, RtcState.VERSION, "rtc"))
    assert restored.bus.read(0x71, 1) == cmos.bus.read(0x71, 1)
    assert restored.dev.save() == cmos.dev.save()
    indexes = list(range(0x80))
    assert [restored.read(i) for i in indexes] == [cmos.read(i) for i in indexes]


def test_frozen_clock_survives_save_load(cmos):
    cmos.write(REG_B, 0x82)
    cmos.write(YEAR, 0x50)
    data = cmos.dev.save().to_bytes()
    restored = Cmos(clock=Clock(START + 500))
    restored.dev.load(RtcState.from_bytes(data, RtcState.VERSION, "rtc"))
    assert restored.time() == [0x20, 0x50, 0x02, 0x29, 0x13, 0x45, 0x56]


def test_newer_state_version_is_refused_by_section_name(cmos):
    data = cmos.dev.save().to_bytes()
    with pytest.raises(StateVersionError, match="rtc"):
        RtcState.from_bytes(data, RtcState.VERSION + 1, "rtc")
