"""ACPI fixed-feature power management: the PM1a event and control blocks.

The device is registered as ONE port range, ``PM1A_EVT_BLK`` (0x600)
length ``BLOCK_LENGTH`` (8), because the two blocks sit next to each other
and share one state and one lock:

    0x600  PM1_STS  16 bits, write 1 to clear
    0x602  PM1_EN   16 bits
    0x604  PM1_CNT  16 bits
    0x606  RESET_REG (8 bits, write RESET_VALUE to reset the machine; only
           when an ``on_reset`` callback was given, else ignored)
    0x607  unused, reads as all ones

Registers may be accessed with any width at any offset; each byte lands in
the register it belongs to.

Modelled: the fixed power button (PWRBTN_STS/PWRBTN_EN); the SCI as a
level-triggered line, high while SCI_EN is set and any status bit with an
SCI enable bit is set together with that enable bit; and sleep requests:
SLP_EN with SLP_TYP ``S5_SLP_TYP`` powers the machine off through
``on_poweroff``.

Not modelled, and why: the machine has no SMM and no SMI_CMD port, so it
is always in ACPI mode, as the spec requires when the FADT's SMI_CMD is
zero: SCI_EN is set from reset and, being hardware-owned, keeps its value
whatever OSPM writes. There is no PM timer, sleep button, RTC wake or bus
master tracking; their status bits never get set. Sleep states other than
S5 are not implemented: the machine "wakes" at once by setting WAK_STS,
so an OSPM waiting for the wake does not spin forever.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, ClassVar

from ..layout import PM1A_CNT_BLK, PM1A_EVT_BLK, RESET_REG, RESET_VALUE, S5_SLP_TYP
from .base import Device, DeviceState, IrqSetter

BLOCK_LENGTH = 8

STS_OFFSET = 0
EN_OFFSET = 2
CNT_OFFSET = PM1A_CNT_BLK - PM1A_EVT_BLK
RESET_OFFSET = RESET_REG - PM1A_EVT_BLK

# PM1_STS / PM1_EN
TMR = 1 << 0
GBL = 1 << 5
PWRBTN = 1 << 8
SLPBTN = 1 << 9
RTC = 1 << 10
PCIEXP_WAKE_DIS = 1 << 14
WAK_STS = 1 << 15
SCI_EVENTS = TMR | GBL | PWRBTN | SLPBTN | RTC
EN_WRITABLE = SCI_EVENTS | PCIEXP_WAKE_DIS

# PM1_CNT
SCI_EN = 1 << 0
BM_RLD = 1 << 1
SLP_TYP_SHIFT = 10
SLP_TYP = 0x7 << SLP_TYP_SHIFT
SLP_EN = 1 << 13
# GBL_RLS and SLP_EN are write-only and SCI_EN is hardware-owned.
CNT_WRITABLE = BM_RLD | SLP_TYP


@dataclass
class AcpiPmState(DeviceState):
    """PM1_STS, PM1_EN and the readable bits of PM1_CNT."""

    VERSION: ClassVar[int] = 1

    status: int = 0
    enable: int = 0
    control: int = SCI_EN


class AcpiPm(Device):
    NAME = "acpi.pm"  # its section's name in snapshots and migrations
    STATE = AcpiPmState

    def __init__(self, name: str = NAME, sci: IrqSetter | None = None,
                 on_poweroff: Callable[[], None] | None = None,
                 on_reset: Callable[[], None] | None = None) -> None:
        if sci is None or on_poweroff is None:
            raise TypeError("AcpiPm needs an sci setter and an on_poweroff callback")
        self.name = name
        self._sci = sci
        self._on_poweroff = on_poweroff
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._line = False
        self._regs = AcpiPmState()

    # -- bus side ---------------------------------------------------------

    def io_read(self, offset: int, size: int) -> bytes:
        with self._lock:
            r = self._regs
            block = (r.status.to_bytes(2, "little") + r.enable.to_bytes(2, "little")
                     + r.control.to_bytes(2, "little") + b"\xff\xff")
        return block[offset:offset + size].ljust(size, b"\xff")

    def io_write(self, offset: int, data: bytes) -> None:
        with self._lock:
            actions = self._write_block(offset, data)
        # Outside the lock: the VMM's power-off and reset paths may call back.
        for action in actions:
            action()

    # -- host side --------------------------------------------------------

    def press_power_button(self) -> None:
        with self._lock:
            self._regs.status |= PWRBTN
            self._update_sci()

    def reset(self) -> None:
        with self._lock:
            self._regs = AcpiPmState()
            self._update_sci()

    def save(self) -> AcpiPmState:
        with self._lock:
            r = self._regs
            return AcpiPmState(status=r.status, enable=r.enable, control=r.control)

    def load(self, state: DeviceState) -> None:
        if not isinstance(state, AcpiPmState):
            raise TypeError(f"{self.name}: cannot load {type(state).__name__}")
        with self._lock:
            self._regs = AcpiPmState(
                status=state.status & 0xFFFF,
                enable=state.enable & EN_WRITABLE,
                control=state.control & (CNT_WRITABLE | SCI_EN))
            self._line = self._sci_level()
            self._sci(self._line)

    # -- registers --------------------------------------------------------

    def _write_block(self, offset: int, data: bytes) -> list[Callable[[], None]]:
        value = int.from_bytes(data, "little") << (8 * offset)
        mask = ((1 << (8 * len(data))) - 1) << (8 * offset)
        actions = []
        for reg_offset, width, write in ((STS_OFFSET, 2, self._write_status),
                                         (EN_OFFSET, 2, self._write_enable),
                                         (CNT_OFFSET, 2, self._write_control),
                                         (RESET_OFFSET, 1, self._write_reset)):
            bits = (1 << (8 * width)) - 1
            reg_mask = (mask >> (8 * reg_offset)) & bits
            if reg_mask:
                action = write((value >> (8 * reg_offset)) & reg_mask, reg_mask)
                if action is not None:
                    actions.append(action)
        self._update_sci()
        return actions

    def _write_status(self, value: int, mask: int) -> None:
        self._regs.status &= ~value

    def _write_enable(self, value: int, mask: int) -> None:
        writable = mask & EN_WRITABLE
        self._regs.enable = (self._regs.enable & ~writable) | (value & writable)

    def _write_control(self, value: int, mask: int) -> Callable[[], None] | None:
        writable = mask & CNT_WRITABLE
        self._regs.control = (self._regs.control & ~writable) | (value & writable)
        if not value & SLP_EN:
            return None
        if (self._regs.control & SLP_TYP) >> SLP_TYP_SHIFT == S5_SLP_TYP:
            return self._on_poweroff
        self._regs.status |= WAK_STS
        return None

    def _write_reset(self, value: int, mask: int) -> Callable[[], None] | None:
        if value == RESET_VALUE and self._on_reset is not None:
            return self._on_reset
        return None

    # -- SCI --------------------------------------------------------------

    def _sci_level(self) -> bool:
        r = self._regs
        return bool(r.control & SCI_EN and r.status & r.enable & SCI_EVENTS)

    def _update_sci(self) -> None:
        level = self._sci_level()
        if level != self._line:
            self._line = level
            self._sci(level)
