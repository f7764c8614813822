"""vCPU exits decoded from ``struct kvm_run`` into typed values."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from . import abi


@dataclass(frozen=True)
class IoIn:
    port: int
    size: int
    count: int
    data_offset: int


@dataclass(frozen=True)
class IoOut:
    port: int
    size: int
    count: int
    data: bytes


@dataclass(frozen=True)
class MmioRead:
    address: int
    size: int


@dataclass(frozen=True)
class MmioWrite:
    address: int
    data: bytes


@dataclass(frozen=True)
class Halt:
    pass


@dataclass(frozen=True)
class Interrupted:
    """KVM_RUN returned early: a kick (pause, stop) or immediate_exit."""


@dataclass(frozen=True)
class Shutdown:
    """Triple fault (or another shutdown condition) in the guest."""


@dataclass(frozen=True)
class SystemEvent:
    kind: int

    @property
    def is_reset(self) -> bool:
        return self.kind == abi.SYSTEM_EVENT_RESET


@dataclass(frozen=True)
class InternalError:
    suberror: int
    data: tuple[int, ...]

    def describe(self) -> str:
        kinds = {abi.INTERNAL_ERROR_EMULATION: "instruction emulation failed",
                 abi.INTERNAL_ERROR_SIMUL_EX: "exception while delivering an exception",
                 abi.INTERNAL_ERROR_DELIVERY_EV: "event delivery failed"}
        detail = " ".join(f"{word:#x}" for word in self.data)
        return f"KVM internal error: {kinds.get(self.suberror, f'suberror {self.suberror}')}" + (
            f" [{detail}]" if detail else "")


@dataclass(frozen=True)
class FailEntry:
    reason: int
    cpu: int


@dataclass(frozen=True)
class Unhandled:
    reason: int


Exit = (IoIn | IoOut | MmioRead | MmioWrite | Halt | Interrupted | Shutdown | SystemEvent
        | InternalError | FailEntry | Unhandled)


def decode(run: abi.Run, run_address: int) -> Exit:
    reason = run.exit_reason
    if reason == abi.EXIT_IO:
        io = run.exit.io
        if io.direction == abi.EXIT_IO_OUT:
            data = ctypes.string_at(run_address + io.data_offset, io.size * io.count)
            return IoOut(io.port, io.size, io.count, data)
        return IoIn(io.port, io.size, io.count, io.data_offset)
    if reason == abi.EXIT_MMIO:
        mmio = run.exit.mmio
        if mmio.is_write:
            return MmioWrite(mmio.phys_addr, bytes(mmio.data[:mmio.len]))
        return MmioRead(mmio.phys_addr, mmio.len)
    if reason == abi.EXIT_HLT:
        return Halt()
    if reason == abi.EXIT_INTR:
        return Interrupted()
    if reason == abi.EXIT_SHUTDOWN:
        return Shutdown()
    if reason == abi.EXIT_SYSTEM_EVENT:
        return SystemEvent(run.exit.system_event.type)
    if reason == abi.EXIT_INTERNAL_ERROR:
        internal = run.exit.internal
        return InternalError(internal.suberror, tuple(internal.data[:min(internal.ndata, 16)]))
    if reason == abi.EXIT_FAIL_ENTRY:
        fail = run.exit.fail_entry
        return FailEntry(fail.hardware_entry_failure_reason, fail.cpu)
    return Unhandled(reason)
