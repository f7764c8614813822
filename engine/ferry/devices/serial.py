"""A 16550A UART: the VM's console (COM1, ports 0x3f8-0x3ff, IRQ 4).

Modelled, as a driver sees them: RBR/THR, IER, IIR/FCR, LCR with the
divisor latch, MCR with loopback, LSR, MSR and SCR; the receive FIFO with
its trigger levels; and the four interrupt sources in the 16550's
priority order (line status, received data or character timeout, THR
empty, modem status). The interrupt line is driven only while OUT2 is set
and loopback is off, because on a PC the UART's INTR pin reaches the
interrupt controller through a buffer that OUT2 enables, and loopback
forces OUT2 inactive; Linux's 8250 driver depends on that gating.

Not modelled, and why:

- Timing. Output leaves the moment THR is written, so THRE and TEMT are
  always set and there is no transmit FIFO to fill; baud rate, word length
  and parity are stored but change nothing. With no time passing, a
  receive FIFO below its trigger level reports a character timeout at
  once, which is what a real UART does once the line goes quiet.
- Line errors other than overrun: a virtual wire has no parity, framing
  or break errors. Overrun only happens in loopback, where the guest
  feeds the FIFO itself.
- Host input behaves like a sender under hardware flow control: bytes
  from ``feed`` wait on the host side (up to ``INPUT_LIMIT``) until the
  FIFO has room, so console input is never lost to overrun, and clearing
  the FIFO drops only what had reached it.
- Modem lines: outside loopback the "modem" is always ready (CTS, DSR
  and DCD set, RI clear).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Protocol

from .base import Device, DeviceState, IrqSetter

# Register offsets from the base port.
RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_RDI = 0x01
IER_THRI = 0x02
IER_RLSI = 0x04
IER_MSI = 0x08
IER_MASK = 0x0F

IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_TIMEOUT = 0x0C
IIR_FIFO_ENABLED = 0xC0

FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_TRIGGER = 0xC0

LCR_DLAB = 0x80

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F

LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40

MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80

FIFO_SIZE = 16
TRIGGER_LEVELS = (1, 4, 8, 14)
INPUT_LIMIT = 64 * 1024


class Output(Protocol):
    def write(self, data: bytes) -> object: ...
    def flush(self) -> object: ...


@dataclass
class SerialState(DeviceState):
    """Every guest-visible register, the FIFO, host input not yet delivered
    and the latched interrupt conditions. Byte queues are hex strings."""

    VERSION: ClassVar[int] = 1

    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    fcr: int = 0
    # A divisor of 0 would make guests that compute the baud rate divide
    # by zero; 1 is 115200 baud.
    dll: int = 1
    dlm: int = 0
    scr: int = 0
    rx_fifo: str = ""
    pending_input: str = ""
    thr_interrupt: bool = False
    overrun: bool = False
    msr_delta: int = 0


class Serial(Device):
    NAME = "serial.com1"  # its section's name in snapshots and migrations
    STATE = SerialState

    def __init__(self, name: str = NAME, irq: IrqSetter | None = None,
                 output: Output | None = None) -> None:
        if irq is None or output is None:
            raise TypeError("Serial needs an irq setter and an output")
        self.name = name
        self._irq = irq
        self._output = output
        self._lock = threading.Lock()
        self._line = False
        self._unflushed = False
        self._apply(SerialState())

    # -- bus side ---------------------------------------------------------

    def io_read(self, offset: int, size: int) -> bytes:
        # A wide access to byte-wide ISA registers reaches consecutive ports.
        with self._lock:
            return bytes(self._read_register(offset + i) for i in range(size))

    def io_write(self, offset: int, data: bytes) -> None:
        with self._lock:
            for i, value in enumerate(data):
                self._write_register(offset + i, value)

    # -- host side --------------------------------------------------------

    def feed(self, data: bytes) -> int:
        """Queue console input for the guest; returns how many bytes fit."""
        with self._lock:
            accepted = data[:max(INPUT_LIMIT - len(self._pending), 0)]
            self._pending.extend(accepted)
            self._refill()
            self._update_irq()
            return len(accepted)

    def reset(self) -> None:
        """Power-on register values and an empty FIFO, as the chip's reset
        pin gives; host input not yet delivered stays queued."""
        with self._lock:
            self._apply(SerialState(pending_input=bytes(self._pending).hex()))
            self._refill()
            self._update_irq()

    def save(self) -> SerialState:
        with self._lock:
            self._flush()
            return SerialState(
                ier=self._ier, lcr=self._lcr, mcr=self._mcr, fcr=self._fcr,
                dll=self._dll, dlm=self._dlm, scr=self._scr,
                rx_fifo=bytes(self._rx).hex(), pending_input=bytes(self._pending).hex(),
                thr_interrupt=self._thr_interrupt, overrun=self._overrun,
                msr_delta=self._msr_delta)

    def load(self, state: DeviceState) -> None:
        if not isinstance(state, SerialState):
            raise TypeError(f"{self.name}: cannot load {type(state).__name__}")
        with self._lock:
            self._apply(state)
            self._line = self._irq_level()
            self._irq(self._line)

    def _apply(self, state: SerialState) -> None:
        self._ier = state.ier & IER_MASK
        self._lcr = state.lcr & 0xFF
        self._mcr = state.mcr & MCR_MASK
        self._fcr = state.fcr & (FCR_ENABLE | FCR_TRIGGER)
        self._dll = state.dll & 0xFF
        self._dlm = state.dlm & 0xFF
        self._scr = state.scr & 0xFF
        self._rx = deque(bytes.fromhex(state.rx_fifo))
        self._pending = deque(bytes.fromhex(state.pending_input))
        self._thr_interrupt = state.thr_interrupt
        self._overrun = state.overrun
        self._msr_delta = state.msr_delta & 0x0F

    # -- registers --------------------------------------------------------

    def _read_register(self, offset: int) -> int:
        dlab = self._lcr & LCR_DLAB
        if offset == RBR:
            return self._dll if dlab else self._read_rbr()
        if offset == IER:
            return self._dlm if dlab else self._ier
        if offset == IIR:
            return self._read_iir()
        if offset == LCR:
            return self._lcr
        if offset == MCR:
            return self._mcr
        if offset == LSR:
            return self._read_lsr()
        if offset == MSR:
            return self._read_msr()
        if offset == SCR:
            return self._scr
        return 0xFF

    def _write_register(self, offset: int, value: int) -> None:
        dlab = self._lcr & LCR_DLAB
        if offset == THR:
            if dlab:
                self._dll = value
            else:
                self._write_thr(value)
        elif offset == IER:
            if dlab:
                self._dlm = value
            else:
                self._write_ier(value)
        elif offset == FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self._lcr = value
        elif offset == MCR:
            self._write_mcr(value)
        elif offset == SCR:
            self._scr = value
        # LSR and MSR writes are factory-test features; ignored.

    def _read_rbr(self) -> int:
        value = self._rx.popleft() if self._rx else 0
        self._refill()
        self._update_irq()
        return value

    def _read_iir(self) -> int:
        ident = self._interrupt_id()
        if ident == IIR_THRI:
            # Reading IIR acknowledges a THR-empty interrupt, and only that one.
            self._thr_interrupt = False
            self._update_irq()
        return ident | (IIR_FIFO_ENABLED if self._fcr & FCR_ENABLE else 0)

    def _read_lsr(self) -> int:
        value = LSR_THRE | LSR_TEMT
        if self._rx:
            value |= LSR_DR
        if self._overrun:
            value |= LSR_OE
            self._overrun = False
            self._update_irq()
        # Drivers poll LSR before each byte and when they are done: a cheap
        # moment to push a partial line out to the log.
        self._flush()
        return value

    def _read_msr(self) -> int:
        value = self._modem_status() | self._msr_delta
        if self._msr_delta:
            self._msr_delta = 0
            self._update_irq()
        return value

    def _write_thr(self, value: int) -> None:
        # Writing THR clears a THR-empty interrupt; since the byte leaves at
        # once, THR is empty again straight away and the interrupt re-arms.
        # The line dips in between so an edge-triggered controller sees a
        # fresh interrupt, as it would from real hardware.
        self._thr_interrupt = False
        self._update_irq()
        if self._mcr & MCR_LOOP:
            self._loop_back(value)
        else:
            self._transmit(value)
        self._thr_interrupt = True
        self._update_irq()

    def _write_ier(self, value: int) -> None:
        changed = (self._ier ^ value) & IER_THRI
        self._ier = value & IER_MASK
        if changed:
            # A 16550 raises THR-empty as soon as the interrupt is enabled
            # while THR is empty (always, here); Linux tests for exactly this.
            self._thr_interrupt = bool(self._ier & IER_THRI)
        self._update_irq()

    def _write_fcr(self, value: int) -> None:
        if not value & FCR_ENABLE:
            # The other FCR bits only take effect together with FIFO enable.
            clear = bool(self._fcr & FCR_ENABLE)
            self._fcr = 0
        else:
            clear = not self._fcr & FCR_ENABLE or bool(value & FCR_CLEAR_RX)
            self._fcr = value & (FCR_ENABLE | FCR_TRIGGER)
        if clear:
            # Switching FIFO mode on or off also empties the FIFO.
            self._rx.clear()
        self._refill()
        self._update_irq()

    def _write_mcr(self, value: int) -> None:
        before = self._modem_status()
        left_loopback = self._mcr & MCR_LOOP and not value & MCR_LOOP
        self._mcr = value & MCR_MASK
        self._note_modem_change(before, self._modem_status())
        if left_loopback:
            self._refill()
        self._update_irq()

    # -- data paths -------------------------------------------------------

    def _transmit(self, value: int) -> None:
        self._output.write(bytes((value,)))
        if value == 0x0A:
            self._output.flush()
            self._unflushed = False
        else:
            self._unflushed = True

    def _flush(self) -> None:
        if self._unflushed:
            self._output.flush()
            self._unflushed = False

    def _loop_back(self, value: int) -> None:
        if len(self._rx) < self._capacity():
            self._rx.append(value)
        else:
            self._overrun = True

    def _refill(self) -> None:
        # In loopback the receiver is cut off from the line, so host input waits.
        if self._mcr & MCR_LOOP:
            return
        room = self._capacity() - len(self._rx)
        while room > 0 and self._pending:
            self._rx.append(self._pending.popleft())
            room -= 1

    def _capacity(self) -> int:
        return FIFO_SIZE if self._fcr & FCR_ENABLE else 1

    def _trigger_level(self) -> int:
        if not self._fcr & FCR_ENABLE:
            return 1
        return TRIGGER_LEVELS[self._fcr >> 6]

    # -- modem lines ------------------------------------------------------

    def _modem_status(self) -> int:
        if not self._mcr & MCR_LOOP:
            return MSR_CTS | MSR_DSR | MSR_DCD
        status = 0
        if self._mcr & MCR_RTS:
            status |= MSR_CTS
        if self._mcr & MCR_DTR:
            status |= MSR_DSR
        if self._mcr & MCR_OUT1:
            status |= MSR_RI
        if self._mcr & MCR_OUT2:
            status |= MSR_DCD
        return status

    def _note_modem_change(self, before: int, after: int) -> None:
        changed = before ^ after
        if changed & MSR_CTS:
            self._msr_delta |= MSR_DCTS
        if changed & MSR_DSR:
            self._msr_delta |= MSR_DDSR
        if changed & MSR_DCD:
            self._msr_delta |= MSR_DDCD
        if before & MSR_RI and not after & MSR_RI:
            self._msr_delta |= MSR_TERI

    # -- interrupts -------------------------------------------------------

    def _interrupt_id(self) -> int:
        if self._ier & IER_RLSI and self._overrun:
            return IIR_RLSI
        if self._ier & IER_RDI and self._rx:
            return IIR_RDI if len(self._rx) >= self._trigger_level() else IIR_TIMEOUT
        if self._ier & IER_THRI and self._thr_interrupt:
            return IIR_THRI
        if self._ier & IER_MSI and self._msr_delta:
            return IIR_MSI
        return IIR_NO_INT

    def _irq_level(self) -> bool:
        gated = self._mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2
        return gated and self._interrupt_id() != IIR_NO_INT

    def _update_irq(self) -> None:
        level = self._irq_level()
        if level != self._line:
            self._line = level
            self._irq(level)
