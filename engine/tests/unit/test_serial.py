import threading

import pytest

from ferry.devices.base import StateVersionError
from ferry.devices.bus import PortIoBus
from ferry.devices.serial import (DLL, DLM, FCR, IER, IIR, INPUT_LIMIT, LCR, LSR, MCR, MSR, RBR, SCR, THR,  # noqa: F401
                                  Serial, SerialState)

COM1 = 0x3F8

OUT2 = 0x08
LOOP = 0x10
RTS = 0x02
THRI = 0x02
RDI = 0x01
RLSI = 0x04
MSI = 0x08


class Log:
    """Console log fake that records writes and flushes separately."""

    def __init__(self):
        self.data = bytearray()
        self.flushed = bytearray()
        self.flushes = 0

    def write(self, data):
        self.data += data

    def flush(self):
        self.flushes += 1
        self.flushed = bytearray(self.data)


class Uart:
    def __init__(self, device=None):
        self.irq = []
        self.log = Log()
        self.dev = device or Serial("serial.com1", self.irq.append, self.log)
        self.bus = PortIoBus()
        self.bus.register(COM1, 8, self.dev)

    def out(self, reg, value):
        self.bus.write(COM1 + reg, bytes([value]))

    def inb(self, reg):
        return self.bus.read(COM1 + reg, 1)[0]

    @property
    def line(self):
        return self.irq[-1] if self.irq else False


@pytest.fixture
def uart():
    return Uart()


def test_linux_8250_probe_sees_a_16550a(uart):
    # Scratch test on IER: only the low four bits exist.
    uart.out(IER, 0)
    assert uart.inb(IER) & 0x0F == 0
    uart.out(IER, 0x0F)
    assert uart.inb(IER) & 0x0F == 0x0F
    uart.out(IER, 0x4F)  # XScale's UUE bit must not stick
    assert uart.inb(IER) == 0x0F
    uart.out(IER, 0)

    # Loopback: RTS shows up as CTS and OUT2 as DCD.
    uart.out(MCR, LOOP | OUT2 | RTS)
    assert uart.inb(MSR) & 0xF0 == 0x90
    uart.out(MCR, 0)

    # FIFO identification: 0xC0 means 16550A, and no 64-byte FIFO bit.
    uart.out(LCR, 0xBF)
    uart.out(FCR, 0)
    uart.out(LCR, 0)
    uart.out(FCR, 0x01)
    assert uart.inb(IIR) >> 6 == 3
    uart.out(FCR, 0x21)
    assert uart.inb(IIR) & 0xE0 == 0xC0
    uart.out(FCR, 0)
    assert uart.inb(IIR) == 0x01

    # Scratch register.
    for value in (0x55, 0xAA, 0x00):
        uart.out(SCR, value)
        assert uart.inb(SCR) == value


def test_power_on_registers(uart):
    assert uart.inb(IER) == 0
    assert uart.inb(IIR) == 0x01
    assert uart.inb(LCR) == 0
    assert uart.inb(MCR) == 0
    assert uart.inb(LSR) == 0x60
    assert uart.inb(MSR) == 0xB0
    assert uart.irq == []


def test_dlab_divisor_round_trip(uart):
    uart.out(LCR, 0x83)
    uart.out(DLL, 0x0C)
    uart.out(DLM, 0x01)
    assert uart.inb(DLL) == 0x0C
    assert uart.inb(DLM) == 0x01
    assert uart.log.data == b""
    uart.out(LCR, 0x03)
    assert uart.inb(IER) == 0
    uart.out(THR, ord("x"))
    assert uart.log.data == b"x"
    uart.out(LCR, 0x83)
    assert (uart.inb(DLL), uart.inb(DLM)) == (0x0C, 0x01)


def test_thre_interrupt_raised_when_enabled_and_cleared_by_iir_read(uart):
    uart.out(MCR, OUT2)
    uart.out(IER, THRI)
    assert uart.irq == [True]
    assert uart.inb(IIR) == 0x02
    assert uart.irq == [True, False]
    assert uart.inb(IIR) == 0x01  # acknowledged: gone until THR empties again


def test_thre_interrupt_cleared_by_thr_write_and_rearmed_when_byte_leaves(uart):
    uart.out(MCR, OUT2)
    uart.out(IER, THRI)
    uart.out(THR, ord("A"))
    # The line dips for the write and rises again because THR is empty at once.
    assert uart.irq == [True, False, True]
    assert uart.log.data == b"A"
    assert uart.inb(IIR) == 0x02


def test_thre_reasserts_when_reenabled_so_linux_does_not_flag_bug_thre(uart):
    uart.out(IER, THRI)
    iir1 = uart.inb(IIR)
    uart.out(IER, 0)
    uart.out(IER, THRI)
    iir = uart.inb(IIR)
    uart.out(IER, 0)
    assert not iir1 & 0x01 and not iir & 0x01


def test_out2_gates_the_interrupt_line(uart):
    uart.out(IER, THRI)
    assert uart.irq == []  # pending but OUT2 is low
    uart.out(MCR, OUT2)
    assert uart.irq == [True]
    uart.out(MCR, OUT2 | LOOP)  # loopback forces OUT2 inactive
    assert uart.irq == [True, False]
    uart.out(MCR, 0)
    uart.out(MCR, OUT2)
    assert uart.irq == [True, False, True]


def test_received_data_sets_dr_and_raises_interrupt(uart):
    uart.out(FCR, 0x01)  # FIFO on, trigger at 1 byte
    uart.out(MCR, OUT2)
    uart.out(IER, RDI)
    assert uart.inb(LSR) & 0x01 == 0
    uart.dev.feed(b"hi")
    assert uart.irq == [True]
    assert uart.inb(LSR) & 0x01
    assert uart.inb(IIR) == 0xC4
    assert uart.inb(RBR) == ord("h")
    assert uart.line
    assert uart.inb(RBR) == ord("i")
    assert uart.irq == [True, False]
    assert uart.inb(LSR) & 0x01 == 0
    assert uart.inb(IIR) == 0xC1


def test_fifo_trigger_level_and_character_timeout(uart):
    uart.out(FCR, 0x81)  # trigger at 8 bytes
    uart.out(IER, RDI)
    uart.dev.feed(b"abc")
    assert uart.inb(IIR) == 0xCC  # below trigger: character timeout
    uart.dev.feed(b"defgh")
    assert uart.inb(IIR) == 0xC4


def test_received_data_outranks_thre(uart):
    uart.out(IER, RDI | THRI)
    uart.dev.feed(b"z")
    assert uart.inb(IIR) & 0x0F == 0x04
    assert uart.inb(RBR) == ord("z")
    assert uart.inb(IIR) & 0x0F == 0x02


def test_host_input_waits_for_fifo_room_and_is_not_lost(uart):
    uart.out(FCR, 0x07)
    data = bytes(range(40))
    assert uart.dev.feed(data) == 40
    received = bytearray()
    while uart.inb(LSR) & 0x01:
        received.append(uart.inb(RBR))
    assert bytes(received) == data
    assert uart.inb(LSR) & 0x02 == 0


def test_fifo_clear_drops_only_what_reached_the_fifo(uart):
    uart.out(FCR, 0x01)
    uart.dev.feed(bytes(range(20)))
    uart.out(FCR, 0x03)
    received = bytearray()
    while uart.inb(LSR) & 0x01:
        received.append(uart.inb(RBR))
    assert bytes(received) == bytes(range(16, 20))


def test_input_queue_is_bounded(uart):
    assert uart.dev.feed(bytes(INPUT_LIMIT + 10)) == INPUT_LIMIT


def test_loopback_returns_data_and_overrun_raises_line_status(uart):
    uart.out(MCR, LOOP)
    uart.out(THR, 0x41)
    assert uart.log.data == b""
    assert uart.inb(LSR) & 0x01
    uart.out(IER, RLSI)
    uart.out(THR, 0x42)  # no FIFO: the holding register is still full
    assert uart.inb(IIR) == 0x06
    assert uart.inb(LSR) & 0x02
    assert uart.inb(LSR) & 0x02 == 0
    assert uart.inb(IIR) == 0x01
    assert uart.inb(RBR) == 0x41


def test_host_input_waits_while_in_loopback(uart):
    uart.out(MCR, LOOP)
    uart.dev.feed(b"k")
    assert uart.inb(LSR) & 0x01 == 0
    uart.out(MCR, 0)
    assert uart.inb(RBR) == ord("k")


def test_modem_status_deltas_and_interrupt(uart):
    uart.out(MCR, OUT2)
    uart.out(IER, MSI)
    assert uart.irq == []
    uart.out(MCR, OUT2 | LOOP | 0x04)  # OUT1 -> RI in loopback
    assert uart.irq == []  # loopback keeps the line quiet
    uart.out(MCR, OUT2)  # RI falls: trailing edge
    assert uart.irq == [True]
    assert uart.inb(IIR) == 0x00
    msr = uart.inb(MSR)
    assert msr & 0xF0 == 0xB0
    assert msr & 0x0F == 0x07  # CTS and DSR changed, RI trailing edge; DCD stayed
    assert uart.inb(MSR) & 0x0F == 0
    assert uart.irq == [True, False]


def test_output_flushes_at_newline_and_on_lsr_poll(uart):
    for ch in b"ok":
        uart.out(THR, ch)
    assert uart.log.data == b"ok" and uart.log.flushes == 0
    uart.inb(LSR)
    assert uart.log.flushes == 1 and uart.log.flushed == b"ok"
    uart.inb(LSR)
    assert uart.log.flushes == 1
    uart.out(THR, ord("\n"))
    assert uart.log.flushes == 2 and uart.log.flushed == b"ok\n"


def test_wide_access_reaches_consecutive_registers(uart):
    uart.out(SCR, 0x5A)
    assert uart.bus.read(COM1 + LSR, 3) == bytes([0x60, 0xB0, 0x5A])


def test_concurrent_writers_lose_nothing(uart):
    def writer():
        for _ in range(500):
            uart.out(THR, ord("x"))

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert uart.log.data == b"x" * 4000


def _observe(u):
    """What a driver would see, touching every register."""
    seen = [u.inb(r) for r in (IER, LCR, MCR, LSR, SCR)]
    seen.append(u.inb(IIR))
    u.out(LCR, u.inb(LCR) | 0x80)
    seen += [u.inb(DLL), u.inb(DLM)]
    u.out(LCR, u.inb(LCR) & 0x7F)
    while u.inb(LSR) & 0x01:
        seen.append(u.inb(IIR))
        seen.append(u.inb(RBR))
    seen += [u.inb(IIR), u.inb(IIR), u.inb(MSR)]
    return seen


def _busy_uart():
    u = Uart()
    u.out(LCR, 0x83)
    u.out(DLL, 0x03)
    u.out(LCR, 0x03)
    u.out(FCR, 0x41)
    u.out(MCR, OUT2 | RTS | 0x01)
    u.out(SCR, 0x77)
    u.out(IER, RDI | THRI | MSI)
    u.dev.feed(bytes(range(0x30, 0x30 + 20)))
    return u


def test_save_load_round_trip_behaves_identically():
    original = _busy_uart()
    state = original.dev.save()
    data = state.to_bytes()
    restored = Uart()
    restored.dev.load(SerialState.from_bytes(data, SerialState.VERSION, "serial.com1"))
    assert restored.irq == [True]  # the pending interrupt is re-asserted
    assert original.line
    original.irq.clear()
    restored.irq.clear()
    assert _observe(restored) == _observe(original)
    assert restored.irq == original.irq
    assert restored.dev.save() == original.dev.save()


def test_load_lowers_the_line_when_nothing_is_pending():
    u = Uart()
    u.dev.load(SerialState())
    assert u.irq == [False]


def test_newer_state_version_is_refused_by_section_name():
    data = _busy_uart().dev.save().to_bytes()
    with pytest.raises(StateVersionError, match="serial.com1"):
        SerialState.from_bytes(data, SerialState.VERSION + 1, "serial.com1")


def test_reset_empties_the_receiver_but_keeps_queued_host_input(uart):
    uart.out(IER, THRI)
    uart.out(SCR, 1)
    uart.dev.feed(b"ab")  # "a" reaches the holding register, "b" waits on the host
    uart.dev.reset()
    assert uart.inb(IER) == 0 and uart.inb(SCR) == 0
    assert uart.inb(RBR) == ord("b")
    assert uart.inb(LSR) & 0x01 == 0


def test_constructor_requires_irq_and_output():
    with pytest.raises(TypeError):
        Serial("serial.com1")
    s = Serial(irq=lambda level: None, output=Log())
    assert s.name == "serial.com1"
