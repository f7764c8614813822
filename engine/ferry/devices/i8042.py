"""The i8042 PS/2 controller, with nothing plugged into it.

Registered at port 0x60, length 5: offset 0 is the data port (0x60) and
offset 4 the status/command port (0x64). Offsets 1-3 answer as unclaimed;
port 0x61 in particular belongs to KVM's in-kernel PIT (speaker gate) and
never reaches us.

Modelled: enough of the controller for Linux's i8042 driver to find it
and probe it, and for guests to reboot the machine through it. The status
register; the controller's 32 bytes of RAM, whose first byte is the
command byte (0x20-0x3f read, 0x60-0x7f write); self-test 0xaa (0x55);
port tests 0xa9/0xab (0, "no fault"); port disable/enable 0xa7/0xa8/
0xad/0xae; output port read/write 0xd0/0xd1; the output-buffer writes
0xd2/0xd3, which echo a byte back as if the keyboard or mouse had sent
it; and the pulse commands 0xf0-0xff, where pulsing bit 0 (0xfe, the
usual reboot) or writing the output port with bit 0 clear resets the
machine through ``on_reset``.

Not modelled, and why: there is no keyboard or mouse, so bytes a guest
sends to either device are dropped and no scancodes ever arrive. With no
device data there is nothing to interrupt about, so the controller has no
IRQ lines; Linux's probe for the keyboard and mouse then times out and
carries on without them. The A20 gate bit is kept but does nothing: KVM
guests always see A20 enabled. The input port (0xc0) and vendor commands
are ignored.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from .base import Device, DeviceState

DATA = 0
COMMAND = STATUS = 4

STS_OBF = 0x01
STS_SYS = 0x04
STS_CMD = 0x08      # last write went to the command port
STS_UNLOCKED = 0x10  # keyboard inhibit switch off; Linux warns otherwise
STS_AUX = 0x20

CTR_KBDINT = 0x01
CTR_SYS = 0x04
CTR_KBDDIS = 0x10
CTR_AUXDIS = 0x20
CTR_XLATE = 0x40
# What a PC BIOS leaves after POST: translation on, system flag set,
# keyboard interrupt enabled, mouse port disabled.
CTR_RESET = CTR_XLATE | CTR_AUXDIS | CTR_SYS | CTR_KBDINT

OUT_RESET = 0x01    # active low: 0 holds the CPU in reset
OUT_A20 = 0x02
OUT_KBD_FULL = 0x10
OUT_AUX_FULL = 0x20
OUTPUT_PORT_RESET = 0xCC | OUT_A20 | OUT_RESET

CMD_READ_RAM = 0x20
CMD_WRITE_RAM = 0x60
CMD_AUX_DISABLE = 0xA7
CMD_AUX_ENABLE = 0xA8
CMD_AUX_TEST = 0xA9
CMD_SELF_TEST = 0xAA
CMD_KBD_TEST = 0xAB
CMD_KBD_DISABLE = 0xAD
CMD_KBD_ENABLE = 0xAE
CMD_READ_OUTPUT = 0xD0
CMD_WRITE_OUTPUT = 0xD1
CMD_WRITE_KBD_BUFFER = 0xD2
CMD_WRITE_AUX_BUFFER = 0xD3
CMD_WRITE_AUX = 0xD4
CMD_PULSE = 0xF0

SELF_TEST_OK = 0x55
PORT_TEST_OK = 0x00
RAM_SIZE = 32

# Commands whose argument follows on the data port.
TAKES_DATA = {CMD_WRITE_OUTPUT, CMD_WRITE_KBD_BUFFER, CMD_WRITE_AUX_BUFFER, CMD_WRITE_AUX}


def _reset_ram() -> list[int]:
    return [CTR_RESET] + [0] * (RAM_SIZE - 1)


@dataclass
class I8042State(DeviceState):
    """Controller RAM (``ram[0]`` is the command byte), the one-byte output
    buffer, the command waiting for its data byte, and the output port."""

    VERSION: ClassVar[int] = 1

    ram: list[int] = field(default_factory=_reset_ram)
    output: int = 0
    output_full: bool = False
    output_aux: bool = False
    last_was_command: bool = False
    pending_command: int | None = None
    output_port: int = OUTPUT_PORT_RESET


class I8042(Device):
    NAME = "i8042"  # its section's name in snapshots and migrations
    STATE = I8042State

    def __init__(self, name: str = NAME, on_reset: Callable[[], None] | None = None) -> None:
        if on_reset is None:
            raise TypeError("I8042 needs an on_reset callback")
        self.name = name
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._state = I8042State()

    # -- bus side ---------------------------------------------------------

    def io_read(self, offset: int, size: int) -> bytes:
        with self._lock:
            return bytes(self._read_port(offset + i) for i in range(size))

    def io_write(self, offset: int, data: bytes) -> None:
        reset = False
        with self._lock:
            for i, value in enumerate(data):
                reset |= self._write_port(offset + i, value)
        # Outside the lock: the VMM's reset path may well come back to us.
        if reset:
            self._on_reset()

    # -- host side --------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._state = I8042State()

    def save(self) -> I8042State:
        with self._lock:
            return copy.deepcopy(self._state)

    def load(self, state: DeviceState) -> None:
        if not isinstance(state, I8042State):
            raise TypeError(f"{self.name}: cannot load {type(state).__name__}")
        if len(state.ram) != RAM_SIZE:
            raise ValueError(f"{self.name}: controller RAM must be {RAM_SIZE} bytes")
        with self._lock:
            self._state = copy.deepcopy(state)

    # -- ports ------------------------------------------------------------

    def _read_port(self, offset: int) -> int:
        if offset == DATA:
            return self._read_data()
        if offset == STATUS:
            return self._status()
        return 0xFF

    def _write_port(self, offset: int, value: int) -> bool:
        """True when the write resets the machine."""
        if offset == DATA:
            self._state.last_was_command = False
            return self._write_data(value)
        if offset == COMMAND:
            self._state.last_was_command = True
            return self._command(value)
        return False

    def _status(self) -> int:
        s = self._state
        status = STS_UNLOCKED
        if s.output_full:
            status |= STS_OBF | (STS_AUX if s.output_aux else 0)
        if s.ram[0] & CTR_SYS:
            status |= STS_SYS
        if s.last_was_command:
            status |= STS_CMD
        return status

    def _read_data(self) -> int:
        # An empty buffer still reads back the last byte, as on hardware.
        self._state.output_full = False
        return self._state.output

    def _put(self, value: int, aux: bool = False) -> None:
        s = self._state
        s.output, s.output_full, s.output_aux = value & 0xFF, True, aux

    # -- commands ---------------------------------------------------------

    def _command(self, cmd: int) -> bool:
        s = self._state
        s.pending_command = None
        if CMD_READ_RAM <= cmd < CMD_READ_RAM + RAM_SIZE:
            self._put(s.ram[cmd - CMD_READ_RAM])
        elif CMD_WRITE_RAM <= cmd < CMD_WRITE_RAM + RAM_SIZE or cmd in TAKES_DATA:
            s.pending_command = cmd
        elif cmd in (CMD_AUX_TEST, CMD_KBD_TEST):
            self._put(PORT_TEST_OK)
        elif cmd == CMD_SELF_TEST:
            s.ram[0] |= CTR_SYS
            self._put(SELF_TEST_OK)
        elif cmd == CMD_READ_OUTPUT:
            self._put(self._output_port())
        elif cmd >= CMD_PULSE:
            # Bits 0-3 select output-port lines to pulse low; a 0 in bit 0
            # pulses the CPU reset line.
            return not cmd & OUT_RESET
        else:
            self._port_enables(cmd)
        return False

    def _port_enables(self, cmd: int) -> None:
        changes = {
            CMD_AUX_DISABLE: (CTR_AUXDIS, True), CMD_AUX_ENABLE: (CTR_AUXDIS, False),
            CMD_KBD_DISABLE: (CTR_KBDDIS, True), CMD_KBD_ENABLE: (CTR_KBDDIS, False),
        }
        if cmd in changes:
            bit, disable = changes[cmd]
            ram = self._state.ram
            ram[0] = ram[0] | bit if disable else ram[0] & ~bit

    def _write_data(self, value: int) -> bool:
        s = self._state
        cmd, s.pending_command = s.pending_command, None
        if cmd is None or cmd == CMD_WRITE_AUX:
            # A byte for the keyboard or the mouse: neither is there.
            return False
        if cmd == CMD_WRITE_OUTPUT:
            # A low reset line restarts the machine, which lets it go high
            # again; it cannot stay held low in a VM.
            s.output_port = value | OUT_RESET
            return not value & OUT_RESET
        if cmd in (CMD_WRITE_KBD_BUFFER, CMD_WRITE_AUX_BUFFER):
            self._put(value, aux=cmd == CMD_WRITE_AUX_BUFFER)
        else:
            s.ram[cmd - CMD_WRITE_RAM] = value
        return False

    def _output_port(self) -> int:
        s = self._state
        value = s.output_port & ~(OUT_KBD_FULL | OUT_AUX_FULL)
        if s.output_full:
            value |= OUT_AUX_FULL if s.output_aux else OUT_KBD_FULL
        return value
