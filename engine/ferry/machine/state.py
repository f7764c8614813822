"""The saved state of a machine's vCPUs and of KVM's VM-wide devices, and the section it travels in.

A ``Section`` is one named, versioned piece of a machine's saved state; the
registry (``sections.py``) says which exist and who captures and applies
each. Here: the State types of the sections that belong to KVM rather than
to a device model (``VcpuState``, the irqchips, PIT and clock), how they are
read from a paused machine and written into a fresh one in the order KVM
needs (each step says why it comes where it does). KVM structures travel as
their raw bytes: they are the kernel's stable ABI.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from typing import ClassVar

from ..devices.base import VersionedState
from ..errors import FerryError
from ..kvm import abi
from ..kvm.ioctl import KvmIoctlError


@dataclass(frozen=True)
class Section:
    name: str
    version: int
    data: bytes


class RestoreError(FerryError):
    pass


def _struct(cls, text: str, section: str):
    if not isinstance(text, str):
        raise RestoreError(f"section {section}: {cls.__name__} must be hex text")
    raw = bytes.fromhex(text)
    if len(raw) != ctypes.sizeof(cls):
        raise RestoreError(f"section {section}: {cls.__name__} is {len(raw)} bytes, expected {ctypes.sizeof(cls)}")
    return cls.from_buffer_copy(raw)


# --- vCPUs ---

VCPU_STRUCTS = {"regs": abi.Regs, "sregs": abi.Sregs, "xsave": abi.Xsave, "xcrs": abi.Xcrs,
                "lapic": abi.LapicState, "events": abi.VcpuEvents, "debugregs": abi.DebugRegs}
VCPU_KEYS = frozenset(VCPU_STRUCTS) | {"msrs", "mp_state", "cpuid"}
U32, U64 = 2**32, 2**64
CPUID_FIELDS = ("function", "index", "flags", "eax", "ebx", "ecx", "edx")
MAX_CPUID_ENTRIES = 1024  # KVM's own limit is 256 today (KVM_MAX_CPUID_ENTRIES)


@dataclass
class VcpuState(VersionedState):
    """Section ``vcpu.N``: JSON of each KVM structure as hex, the MSRs by hex index, the MP
    state, and (from version 2) the CPUID the guest sees, so it sees the same after a restore
    or a migration to another host; version 1 has none, and the VM then gets its model's
    CPUID on the host it lands on."""

    VERSION: ClassVar[int] = 2
    regs: abi.Regs
    sregs: abi.Sregs
    xsave: abi.Xsave
    xcrs: abi.Xcrs
    lapic: abi.LapicState
    events: abi.VcpuEvents
    debugregs: abi.DebugRegs
    msrs: dict[int, int]
    mp_state: int
    cpuid: object = None  # a kvm_cpuid2 table, or None from a version 1 section

    def to_bytes(self) -> bytes:
        values = {key: bytes(getattr(self, key)).hex() for key in VCPU_STRUCTS}
        values["msrs"] = {f"{index:#x}": value for index, value in self.msrs.items()}
        values["mp_state"] = self.mp_state
        values["cpuid"] = None if self.cpuid is None else [
            [getattr(self.cpuid.entries[slot], key) for key in CPUID_FIELDS] for slot in range(self.cpuid.nent)]
        return json.dumps(values, sort_keys=True).encode()

    @classmethod
    def upgrade(cls, version: int, saved):
        if version != 1:
            return super().upgrade(version, saved)
        # Anything but a mapping is left for from_bytes to refuse by name.
        return dict(saved, cpuid=None) if isinstance(saved, dict) else saved

    @classmethod
    def from_bytes(cls, data: bytes, version: int, section: str = "vcpu") -> "VcpuState":
        """The state in ``data``; raises on anything malformed."""
        values = cls.upgraded(data, version, section, json.loads)
        if not isinstance(values, dict) or set(values) != VCPU_KEYS:
            raise RestoreError(f"section {section}: expected exactly the keys {', '.join(sorted(VCPU_KEYS))}")
        structs = {key: _struct(kind, values[key], section) for key, kind in VCPU_STRUCTS.items()}
        mp_state = values["mp_state"]
        if isinstance(mp_state, bool) or not isinstance(mp_state, int) or not 0 <= mp_state < U32:
            raise RestoreError(f"section {section}: mp_state must be a 32-bit number")
        return cls(**structs, msrs=_msrs(values["msrs"], section), mp_state=mp_state,
                   cpuid=_cpuid(values["cpuid"], section))


def _cpuid(values, section: str):
    if values is None:
        return None
    if not isinstance(values, list) or not 0 < len(values) <= MAX_CPUID_ENTRIES:
        raise RestoreError(f"section {section}: cpuid must be a list of 1 to {MAX_CPUID_ENTRIES} entries")
    table = abi.cpuid(len(values))()
    table.nent = len(values)
    for slot, entry in enumerate(values):
        if (not isinstance(entry, list) or len(entry) != len(CPUID_FIELDS)
                or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < U32 for v in entry)):
            raise RestoreError(f"section {section}: each cpuid entry must be {len(CPUID_FIELDS)} 32-bit numbers "
                               f"({', '.join(CPUID_FIELDS)})")
        table.entries[slot] = abi.CpuidEntry(*entry)
    return table


def _msrs(values, section: str) -> dict[int, int]:
    if not isinstance(values, dict):
        raise RestoreError(f"section {section}: msrs must be a mapping of MSR index to value")
    msrs = {}
    for index, value in values.items():
        number = int(index, 16)
        if not 0 <= number < U32 or isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < U64:
            raise RestoreError(f"section {section}: MSR {index[:20]!r} must be a 32-bit index with a 64-bit value")
        msrs[number] = value
    return msrs


def capture_vcpu(fd, msr_indices: list[int], cpuid) -> VcpuState:
    msrs = {}
    for index in msr_indices:
        value = fd.get_msr(index)
        if value is not None:
            msrs[index] = value
    return VcpuState(regs=fd.get_regs(), sregs=fd.get_sregs(), xsave=fd.get_xsave(), xcrs=fd.get_xcrs(),
                     lapic=fd.get_lapic(), events=fd.get_vcpu_events(), debugregs=fd.get_debugregs(),
                     msrs=msrs, mp_state=fd.get_mp_state(), cpuid=cpuid)


def apply_vcpu(fd, values: VcpuState, section: str) -> None:
    # CPUID first (the machine's was set when the vCPU was built; a saved one replaces it
    # before the vCPU first runs, as KVM requires): MSR and XSAVE checks depend on it.
    if values.cpuid is not None:
        fd.set_cpuid(values.cpuid)
    # sregs before regs: the mode (long mode, paging) decides how RIP/RSP are read.
    fd.set_sregs(values.sregs)
    fd.set_regs(values.regs)
    # XSAVE carries the FPU/SSE/AVX state; XCR0 says which parts of it are live.
    fd.set_xsave(values.xsave)
    fd.set_xcrs(values.xcrs)
    # LAPIC before MSRs: KVM drops a TSC_DEADLINE write unless the LAPIC is in that timer mode.
    fd.set_lapic(values.lapic)
    _apply_msrs(fd, values.msrs, section)
    # Events last among the registers: a pending exception or interrupt refers to all of the above.
    fd.set_vcpu_events(values.events)
    fd.set_mp_state(values.mp_state)
    fd.set_debugregs(values.debugregs)


def _apply_msrs(fd, msrs: dict[int, int], section: str) -> None:
    # One at a time: KVM_SET_MSRS stops at the first MSR it refuses.
    refused = [f"{index:#x}" for index, value in msrs.items() if fd.set_msrs({index: value}) != 1]
    if refused:
        raise RestoreError(f"section {section}: KVM refused MSRs {', '.join(refused)} on this host")


# --- the VM-wide in-kernel state ---

@dataclass
class KvmStructState(VersionedState):
    """A VM-wide in-kernel section: one KVM structure, as its raw bytes."""

    STRUCT: ClassVar[type] = ctypes.Structure
    value: ctypes.Structure

    def to_bytes(self) -> bytes:
        return bytes(self.value)

    @classmethod
    def from_bytes(cls, data: bytes, version: int, section: str = ""):
        raw = cls.upgraded(data, version, section or cls.__name__)
        if len(raw) != ctypes.sizeof(cls.STRUCT):
            raise RestoreError(f"section {section}: {len(raw)} bytes, expected {ctypes.sizeof(cls.STRUCT)}")
        return cls(cls.STRUCT.from_buffer_copy(raw))


class IrqchipState(KvmStructState):
    """Sections ``pic.master``, ``pic.slave``, ``ioapic``: KVM's in-kernel interrupt controllers."""
    STRUCT = abi.Irqchip


class PitState(KvmStructState):
    """Section ``pit``: KVM's in-kernel i8254."""
    STRUCT = abi.PitState2


class ClockState(KvmStructState):
    """Section ``clock``: the kvmclock value."""
    STRUCT = abi.ClockData


IRQCHIPS = {"pic.master": abi.IRQCHIP_PIC_MASTER, "pic.slave": abi.IRQCHIP_PIC_SLAVE,
            "ioapic": abi.IRQCHIP_IOAPIC}


def set_clock(vm, state: ClockState) -> None:
    # Only the clock value: the saved realtime/host_tsc belong to the old host's timeline.
    vm.set_clock(abi.ClockData(clock=state.value.clock, flags=0))


def notify_clock_jump(vcpu_fds) -> None:
    """Tell a guest using kvmclock that it was stopped, so its watchdogs don't fire."""
    for fd in vcpu_fds:
        try:
            fd.kvmclock_ctrl()
        except KvmIoctlError:
            pass  # EINVAL: this guest never enabled kvmclock
