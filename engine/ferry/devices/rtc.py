"""MC146818 CMOS real-time clock and NVRAM at ports 0x70 (index) and 0x71 (data).

Modelled: the time and date registers (seconds, minutes, hours, day of
week, day, month, year, and the century at 0x32), in BCD or binary and
12- or 24-hour form as register B selects; the SET bit, which freezes the
clock while the guest writes a new time; registers A-D; the three alarm
registers as plain storage; and the NVRAM bytes 0x0e-0x7f. Bit 7 of the
index port is the NMI mask: it is kept, but NMIs are KVM's business.

Time is never stored as register values. The guest sees the host clock
plus an offset, and a guest that writes the time only moves the offset.
A snapshot therefore keeps the guest's wall time relative to the host's:
after a restore the guest clock runs on from the host clock, shifted by
whatever the guest set.

Not modelled, and why: the periodic, alarm and update-ended interrupts
(IRQ 8) and the square-wave output. Guests read the clock by polling,
which needs none of them, and a Linux kernel without RTC interrupts just
leaves those rtc-cmos features unused. So register C never reports a flag
(no event happens, and no IRQF without an interrupt), register B keeps
the enable bits a guest writes, and register A never shows an update in
progress: each read computes the time at once, so no read can be torn.
Register A's divider bits are kept but do not stop the clock.
"""

from __future__ import annotations

import calendar
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from .base import Device, DeviceState

INDEX_PORT = 0x70
DATA_PORT = 0x71

SECONDS = 0x00
SECONDS_ALARM = 0x01
MINUTES = 0x02
MINUTES_ALARM = 0x03
HOURS = 0x04
HOURS_ALARM = 0x05
WEEKDAY = 0x06
DAY = 0x07
MONTH = 0x08
YEAR = 0x09
REG_A = 0x0A
REG_B = 0x0B
REG_C = 0x0C
REG_D = 0x0D
CENTURY = 0x32

NVRAM_START = 0x0E
NVRAM_SIZE = 0x80 - NVRAM_START

A_UIP = 0x80
B_SET = 0x80
B_UIE = 0x10
B_INTERRUPTS = 0x78  # PIE, AIE, UIE, SQWE: cleared by the chip's RESET pin
B_BINARY = 0x04
B_24H = 0x02
D_VRT = 0x80

INDEX_MASK = 0x7F
NMI_MASK = 0x80

ALARMS = (SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM)

# Position of each time register in a [year, month, day, hour, minute,
# second] list, and the range a written value is clamped to so that garbage
# from the guest can never make the date arithmetic fail.
FIELDS = {YEAR: 0, MONTH: 1, DAY: 2, HOURS: 3, MINUTES: 4, SECONDS: 5}
LIMITS = ((1, 9999), (1, 12), (1, 31), (0, 23), (0, 59), (0, 59))


@dataclass
class RtcState(DeviceState):
    """Registers, NVRAM (hex) and the guest clock: host time + ``offset``
    seconds, or the ``frozen`` [year, month, day, hour, minute, second]
    while register B's SET bit is on."""

    VERSION: ClassVar[int] = 1

    index: int = 0
    nmi_masked: bool = False
    reg_a: int = 0x26  # 32.768 kHz time base, 1024 Hz periodic rate
    reg_b: int = B_24H
    alarms: list[int] = field(default_factory=lambda: [0, 0, 0])
    nvram: str = bytes(NVRAM_SIZE).hex()
    offset: float = 0.0
    frozen: list[int] | None = None


class Rtc(Device):
    NAME = "rtc"  # its section's name in snapshots and migrations
    STATE = RtcState

    def __init__(self, name: str = NAME, clock: Callable[[], float] = time.time,
                 nvram: bytes | None = None) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._apply(RtcState(nvram=_nvram_image(nvram or b"").hex()))

    # -- bus side ---------------------------------------------------------

    def io_read(self, offset: int, size: int) -> bytes:
        with self._lock:
            return bytes(self._read_port(offset + i) for i in range(size))

    def io_write(self, offset: int, data: bytes) -> None:
        with self._lock:
            for i, value in enumerate(data):
                self._write_port(offset + i, value)

    # -- host side --------------------------------------------------------

    def nvram(self) -> bytes:
        """The NVRAM bytes 0x0e-0x7f, to hand to a new ``Rtc``."""
        with self._lock:
            return bytes(self._nvram)

    def reset(self) -> None:
        """What the chip's RESET pin does on a machine reset: interrupt
        enables off; time, NVRAM and the other registers are battery-backed."""
        with self._lock:
            self._reg_b &= ~B_INTERRUPTS

    def save(self) -> RtcState:
        with self._lock:
            return RtcState(
                index=self._index, nmi_masked=self._nmi_masked,
                reg_a=self._reg_a, reg_b=self._reg_b, alarms=list(self._alarms),
                nvram=bytes(self._nvram).hex(), offset=self._offset,
                frozen=None if self._frozen is None else list(self._frozen))

    def load(self, state: DeviceState) -> None:
        if not isinstance(state, RtcState):
            raise TypeError(f"{self.name}: cannot load {type(state).__name__}")
        with self._lock:
            self._apply(state)

    def _apply(self, state: RtcState) -> None:
        nvram = bytes.fromhex(state.nvram)
        if len(nvram) != NVRAM_SIZE or len(state.alarms) != len(ALARMS):
            raise ValueError(f"{self.name}: malformed state")
        self._index = state.index & INDEX_MASK
        self._nmi_masked = state.nmi_masked
        self._reg_a = state.reg_a & ~A_UIP & 0xFF
        self._reg_b = state.reg_b & 0xFF
        self._alarms = [value & 0xFF for value in state.alarms]
        self._nvram = bytearray(nvram)
        self._offset = float(state.offset)
        self._frozen = None
        if self._reg_b & B_SET:
            # SET and a frozen time go together; rebuild whichever is missing.
            self._frozen = self._now() if state.frozen is None else _clamp(state.frozen)

    # -- ports ------------------------------------------------------------

    def _read_port(self, offset: int) -> int:
        if offset == DATA_PORT - INDEX_PORT:
            return self._read_register(self._index)
        # The index port is write-only.
        return 0xFF

    def _write_port(self, offset: int, value: int) -> None:
        if offset == 0:
            self._index = value & INDEX_MASK
            self._nmi_masked = bool(value & NMI_MASK)
        elif offset == DATA_PORT - INDEX_PORT:
            self._write_register(self._index, value)

    # -- registers --------------------------------------------------------

    def _read_register(self, index: int) -> int:
        if index in FIELDS or index == CENTURY or index == WEEKDAY:
            return self._read_time(index)
        if index in ALARMS:
            return self._alarms[ALARMS.index(index)]
        if index == REG_A:
            return self._reg_a
        if index == REG_B:
            return self._reg_b
        if index == REG_C:
            return 0
        if index == REG_D:
            return D_VRT
        return self._nvram[index - NVRAM_START]

    def _write_register(self, index: int, value: int) -> None:
        if index in FIELDS or index == CENTURY:
            self._write_time(index, value)
        elif index in ALARMS:
            self._alarms[ALARMS.index(index)] = value
        elif index == REG_A:
            self._reg_a = value & ~A_UIP
        elif index == REG_B:
            self._write_reg_b(value)
        elif index >= NVRAM_START:
            self._nvram[index - NVRAM_START] = value
        # REG_C and REG_D are read-only; the day of week follows the date.

    def _write_reg_b(self, value: int) -> None:
        was_set = self._reg_b & B_SET
        if value & B_SET:
            # The MC146818 clears UIE whenever SET is written as 1.
            value &= ~B_UIE
        if value & B_SET and not was_set:
            self._frozen = self._now()
        elif was_set and not value & B_SET:
            self._offset = calendar.timegm(tuple(self._frozen)) - self._clock()
            self._frozen = None
        self._reg_b = value

    # -- time -------------------------------------------------------------

    def _now(self) -> list[int]:
        if self._frozen is not None:
            return list(self._frozen)
        moment = time.gmtime(math.floor(self._clock() + self._offset))
        return [moment.tm_year, moment.tm_mon, moment.tm_mday,
                moment.tm_hour, moment.tm_min, moment.tm_sec]

    def _read_time(self, index: int) -> int:
        now = self._now()
        if index == CENTURY:
            return self._encode(now[0] // 100 % 100)
        if index == YEAR:
            return self._encode(now[0] % 100)
        if index == HOURS:
            return self._encode_hour(now[3])
        if index == WEEKDAY:
            return self._encode(_weekday(now))
        return self._encode(now[FIELDS[index]])

    def _write_time(self, index: int, value: int) -> None:
        now = self._now()
        if index == CENTURY:
            now[0] = self._decode(value) * 100 + now[0] % 100
        elif index == YEAR:
            now[0] = now[0] // 100 * 100 + self._decode(value) % 100
        elif index == HOURS:
            now[3] = self._decode_hour(value)
        else:
            now[FIELDS[index]] = self._decode(value)
        now = _clamp(now)
        if self._frozen is not None:
            self._frozen = now
        else:
            self._offset = calendar.timegm(tuple(now)) - self._clock()

    def _encode(self, value: int) -> int:
        if self._reg_b & B_BINARY:
            return value & 0xFF
        return (value // 10 % 10) << 4 | value % 10

    def _decode(self, value: int) -> int:
        if self._reg_b & B_BINARY:
            return value
        return (value >> 4) * 10 + (value & 0x0F)

    def _encode_hour(self, hour: int) -> int:
        if self._reg_b & B_24H:
            return self._encode(hour)
        pm = 0x80 if hour >= 12 else 0
        return self._encode(hour % 12 or 12) | pm

    def _decode_hour(self, value: int) -> int:
        if self._reg_b & B_24H:
            return self._decode(value)
        return self._decode(value & 0x7F) % 12 + (12 if value & 0x80 else 0)


def _clamp(values: list[int]) -> list[int]:
    return [min(max(int(v), low), high) for v, (low, high) in zip(values, LIMITS)]


def _weekday(now: list[int]) -> int:
    """1 for Sunday to 7 for Saturday, the MC146818 convention."""
    # timegm normalises a frozen date like 31 February instead of failing.
    moment = time.gmtime(calendar.timegm(tuple(now)))
    return (moment.tm_wday + 1) % 7 + 1


def _nvram_image(data: bytes) -> bytes:
    if len(data) > NVRAM_SIZE:
        raise ValueError(f"NVRAM holds {NVRAM_SIZE} bytes, got {len(data)}")
    return bytes(data).ljust(NVRAM_SIZE, b"\0")
