"""Everything guest-visible about a machine, as named, versioned sections.

``capture`` reads a paused machine; ``apply`` writes the same sections into
a freshly built one (built by ``Machine`` exactly as for a boot, so the same
devices sit at the same addresses). KVM structures travel as their raw
bytes: they are the kernel's stable ABI. The restore order below is the one
KVM needs; each step says why it comes where it does.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass

from ..errors import FerryError
from ..kvm import abi
from ..kvm.ioctl import KvmIoctlError

VCPU_VERSION = 1
KVM_VM_VERSION = 1
VM_SECTIONS = ("pic.master", "pic.slave", "ioapic", "pit", "clock")
IRQCHIPS = {"pic.master": abi.IRQCHIP_PIC_MASTER, "pic.slave": abi.IRQCHIP_PIC_SLAVE,
            "ioapic": abi.IRQCHIP_IOAPIC}


@dataclass(frozen=True)
class Section:
    name: str
    version: int
    data: bytes


class RestoreError(FerryError):
    pass


def _hex(struct) -> str:
    return bytes(struct).hex()


def _struct(cls, text: str, section: str):
    raw = bytes.fromhex(text)
    if len(raw) != ctypes.sizeof(cls):
        raise RestoreError(f"section {section}: {cls.__name__} is {len(raw)} bytes, expected {ctypes.sizeof(cls)}")
    return cls.from_buffer_copy(raw)


# --- vCPUs ---

def capture_vcpu(fd, msr_indices: list[int]) -> Section:
    msrs = {}
    for index in msr_indices:
        value = fd.get_msr(index)
        if value is not None:
            msrs[f"{index:#x}"] = value
    values = {
        "regs": _hex(fd.get_regs()), "sregs": _hex(fd.get_sregs()), "xsave": _hex(fd.get_xsave()),
        "xcrs": _hex(fd.get_xcrs()), "lapic": _hex(fd.get_lapic()), "msrs": msrs,
        "events": _hex(fd.get_vcpu_events()), "mp_state": fd.get_mp_state(),
        "debugregs": _hex(fd.get_debugregs()),
    }
    return Section(f"vcpu.{fd.index}", VCPU_VERSION, json.dumps(values, sort_keys=True).encode())


def apply_vcpu(fd, section: Section) -> None:
    name = section.name
    values = json.loads(section.data)
    # CPUID was set when the vCPU was built: MSR and XSAVE checks depend on it.
    # sregs before regs: the mode (long mode, paging) decides how RIP/RSP are read.
    fd.set_sregs(_struct(abi.Sregs, values["sregs"], name))
    fd.set_regs(_struct(abi.Regs, values["regs"], name))
    # XSAVE carries the FPU/SSE/AVX state; XCR0 says which parts of it are live.
    fd.set_xsave(_struct(abi.Xsave, values["xsave"], name))
    fd.set_xcrs(_struct(abi.Xcrs, values["xcrs"], name))
    # LAPIC before MSRs: KVM drops a TSC_DEADLINE write unless the LAPIC is in that timer mode.
    fd.set_lapic(_struct(abi.LapicState, values["lapic"], name))
    _apply_msrs(fd, values["msrs"], name)
    # Events last among the registers: a pending exception or interrupt refers to all of the above.
    fd.set_vcpu_events(_struct(abi.VcpuEvents, values["events"], name))
    fd.set_mp_state(values["mp_state"])
    fd.set_debugregs(_struct(abi.DebugRegs, values["debugregs"], name))


def _apply_msrs(fd, msrs: dict[str, int], section: str) -> None:
    # One at a time: KVM_SET_MSRS stops at the first MSR it refuses.
    refused = [index for index, value in msrs.items() if fd.set_msrs({int(index, 16): value}) != 1]
    if refused:
        raise RestoreError(f"section {section}: KVM refused MSRs {', '.join(refused)} on this host")


# --- the VM-wide in-kernel state ---

def capture_vm(vm) -> list[Section]:
    sections = [Section(name, KVM_VM_VERSION, bytes(vm.get_irqchip(chip))) for name, chip in IRQCHIPS.items()]
    sections.append(Section("pit", KVM_VM_VERSION, bytes(vm.get_pit2())))
    sections.append(Section("clock", KVM_VM_VERSION, bytes(vm.get_clock())))
    return sections


def _raw(cls, section: Section):
    if len(section.data) != ctypes.sizeof(cls):
        raise RestoreError(f"section {section.name}: {len(section.data)} bytes, expected {ctypes.sizeof(cls)}")
    return cls.from_buffer_copy(section.data)


def apply_vm(vm, sections: dict[str, Section]) -> None:
    for name in IRQCHIPS:
        vm.set_irqchip(_raw(abi.Irqchip, sections[name]))
    vm.set_pit2(_raw(abi.PitState2, sections["pit"]))
    clock = _raw(abi.ClockData, sections["clock"])
    # Only the clock value: the saved realtime/host_tsc belong to the old host's timeline.
    vm.set_clock(abi.ClockData(clock=clock.clock, flags=0))


def notify_clock_jump(vcpu_fds) -> None:
    """Tell a guest using kvmclock that it was stopped, so its watchdogs don't fire."""
    for fd in vcpu_fds:
        try:
            fd.kvmclock_ctrl()
        except KvmIoctlError:
            pass  # EINVAL: this guest never enabled kvmclock


# --- devices ---

def capture_devices(devices) -> list[Section]:
    return [Section(d.name, type(d.save()).VERSION, d.save().to_bytes()) for d in devices]


def apply_devices(devices, sections: dict[str, Section]) -> None:
    for device in devices:
        section = sections[device.name]
        state_type = type(device.save())
        device.load(state_type.from_bytes(section.data, section.version, section.name))


# --- the whole machine ---

def capture(machine) -> list[Section]:
    """All sections of a paused machine, vCPUs first."""
    indices = machine.kvm.msr_index_list()
    sections = [capture_vcpu(v.fd, indices) for v in machine.vcpus]
    return sections + capture_vm(machine.vm) + capture_devices(machine.devices.all)


def expected_names(machine) -> list[str]:
    return ([f"vcpu.{v.index}" for v in machine.vcpus] + list(VM_SECTIONS)
            + [d.name for d in machine.devices.all])


def apply(machine, sections: dict[str, Section]) -> None:
    missing = [name for name in expected_names(machine) if name not in sections]
    if missing:
        raise RestoreError(f"section {missing[0]}: missing from the saved state")
    for vcpu in machine.vcpus:
        apply_vcpu(vcpu.fd, sections[f"vcpu.{vcpu.index}"])
    # The interrupt controllers and PIT after the vCPUs, so their state is not
    # disturbed by LAPIC writes; device state after them, so lines it re-asserts land.
    apply_vm(machine.vm, sections)
    apply_devices(machine.devices.all, sections)
    notify_clock_jump([v.fd for v in machine.vcpus])
