"""A vCPU thread with an explicit run state machine.

    CREATED --start--> RUNNING <--pause/resume--> PAUSED
                          \\________________________\\--stop / guest event--> STOPPED

``pause`` returns only when the thread is out of KVM_RUN with any port or
MMIO access completed, so the register state a snapshot reads is exact. A
kick sets ``immediate_exit`` and signals the thread: KVM_RUN then returns at
once even if the signal arrived before the thread entered it.
"""

from __future__ import annotations

import enum
import signal
import threading
import time
from typing import Callable

from ..kvm import exits
from ..kvm.fds import VcpuFd

KICK_SIGNAL = signal.SIGUSR1
THROTTLE_SLICE = 0.01


class RunState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class GuestEvent(enum.Enum):
    POWEROFF = "poweroff"
    RESET = "reset"
    CRASH = "crash"


def install_kick_handler() -> None:
    """Called once from the main thread: a no-op handler makes the signal interrupt KVM_RUN."""
    signal.signal(KICK_SIGNAL, lambda *_: None)


class Vcpu:
    def __init__(self, fd: VcpuFd, io_bus, mmio_bus,
                 on_event: Callable[[GuestEvent, str], None]):
        self.fd = fd
        self.index = fd.index
        self.io_bus = io_bus
        self.mmio_bus = mmio_bus
        self.on_event = on_event
        self.state = RunState.CREATED
        self._wanted = RunState.PAUSED
        self._cond = threading.Condition()
        self._needs_completion = False
        self._thread: threading.Thread | None = None
        self.exits = 0
        self.throttle = 0.0  # share of time kept out of the guest (migration auto-converge)
        self._throttle_due = False

    # --- control, from other threads ---

    def start(self, paused: bool = False) -> None:
        self._wanted = RunState.PAUSED if paused else RunState.RUNNING
        self._thread = threading.Thread(target=self._loop, name=f"vcpu{self.index}", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Make the thread leave KVM_RUN once (throttling uses this every timeslice)."""
        self._kick()

    def request(self, wanted: RunState) -> None:
        with self._cond:
            if self.state is RunState.STOPPED:
                return
            self._wanted = wanted
            self._cond.notify_all()
        if wanted is not RunState.RUNNING:
            self._kick()

    def wait_for(self, states: tuple[RunState, ...], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.state in states, timeout)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _kick(self) -> None:
        self.fd.set_immediate_exit(True)
        thread = self._thread
        if thread is not None and thread.ident is not None and thread.is_alive():
            signal.pthread_kill(thread.ident, KICK_SIGNAL)

    # --- the thread ---

    def _loop(self) -> None:
        try:
            while self._next_state() is RunState.RUNNING:
                self._handle(self.fd.run())
        except Exception as err:  # a VMM bug must stop the VM visibly, not hang it
            self._finish(GuestEvent.CRASH, f"vCPU {self.index}: {type(err).__name__}: {err}")

    def _next_state(self) -> RunState:
        if self._needs_completion and self._wanted is not RunState.RUNNING:
            self._complete_pending_access()
        self.fd.set_immediate_exit(False)
        if self._throttle_due and self._wanted is RunState.RUNNING:
            self._throttle_due = False
            # As QEMU's auto-converge: for each timeslice run, sleep throttle/(1-throttle) of it.
            time.sleep(THROTTLE_SLICE * self.throttle / (1.0 - self.throttle))
        with self._cond:
            while self._wanted is RunState.PAUSED:
                self._set_state(RunState.PAUSED)
                self._cond.wait()
            if self._wanted is RunState.STOPPED:
                self._set_state(RunState.STOPPED)
                return RunState.STOPPED
            self._set_state(RunState.RUNNING)
            return RunState.RUNNING

    def _set_state(self, state: RunState) -> None:
        if self.state is not state:
            self.state = state
            self._cond.notify_all()

    def _complete_pending_access(self) -> None:
        """Re-enter KVM_RUN with immediate_exit so KVM finishes the port/MMIO instruction."""
        self.fd.set_immediate_exit(True)
        self.fd.run()
        self._needs_completion = False

    def _finish(self, event: GuestEvent, message: str) -> None:
        with self._cond:
            self._wanted = RunState.STOPPED
            self._set_state(RunState.STOPPED)
        self.on_event(event, message)

    def _handle(self, exit_) -> None:
        self.exits += 1
        match exit_:
            case exits.IoOut(port, size, count, data):
                for start in range(0, size * count, size):
                    self.io_bus.write(port, data[start:start + size])
                self._needs_completion = True
            case exits.IoIn(port, size, count, offset):
                data = b"".join(self.io_bus.read(port, size) for _ in range(count))
                self.fd.complete_io_in(offset, data)
                self._needs_completion = True
            case exits.MmioWrite(address, data):
                self.mmio_bus.write(address, data)
                self._needs_completion = True
            case exits.MmioRead(address, size):
                self.fd.complete_mmio_read(self.mmio_bus.read(address, size))
                self._needs_completion = True
            case exits.Interrupted():
                self._needs_completion = False
                self._throttle_due = self.throttle > 0
            case exits.SystemEvent() if exit_.is_reset:
                self._finish(GuestEvent.RESET, f"vCPU {self.index}: guest requested a reset")
            case exits.SystemEvent():
                self._finish(GuestEvent.POWEROFF, f"vCPU {self.index}: guest powered off")
            case exits.Shutdown():
                self._finish(GuestEvent.CRASH, self._where("triple fault (KVM_EXIT_SHUTDOWN)"))
            case exits.InternalError():
                self._finish(GuestEvent.CRASH, self._where(exit_.describe()))
            case exits.FailEntry(reason, cpu):
                self._finish(GuestEvent.CRASH, self._where(
                    f"KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"))
            case exits.Halt():
                self._finish(GuestEvent.CRASH, self._where("halted with no interrupt controller to wake it"))
            case _:
                self._finish(GuestEvent.CRASH, self._where(f"unhandled exit {exit_}"))

    def _where(self, what: str) -> str:
        try:
            regs = self.fd.get_regs()
            cs = self.fd.get_sregs().cs
            return f"vCPU {self.index}: {what} at rip={regs.rip:#x} cpl={cs.selector & 3}"
        except OSError:
            return f"vCPU {self.index}: {what}"
