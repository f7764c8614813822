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
    if not isinstance(text, str):
        raise RestoreError(f"section {section}: {cls.__name__} must be hex text")
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


VCPU_STRUCTS = {"regs": abi.Regs, "sregs": abi.Sregs, "xsave": abi.Xsave, "xcrs": abi.Xcrs,
                "lapic": abi.LapicState, "events": abi.VcpuEvents, "debugregs": abi.DebugRegs}
VCPU_KEYS = frozenset(VCPU_STRUCTS) | {"msrs", "mp_state"}
U32, U64 = 2**32, 2**64


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


def decode_vcpu(section: Section) -> dict:
    """A vCPU section's values as the structures KVM takes; raises on anything malformed."""
    values = json.loads(section.data)
    if not isinstance(values, dict) or set(values) != VCPU_KEYS:
        raise RestoreError(f"section {section.name}: expected exactly the keys {', '.join(sorted(VCPU_KEYS))}")
    decoded = {key: _struct(cls, values[key], section.name) for key, cls in VCPU_STRUCTS.items()}
    decoded["msrs"] = _msrs(values["msrs"], section.name)
    mp_state = values["mp_state"]
    if isinstance(mp_state, bool) or not isinstance(mp_state, int) or not 0 <= mp_state < U32:
        raise RestoreError(f"section {section.name}: mp_state must be a 32-bit number")
    decoded["mp_state"] = mp_state
    return decoded


def apply_vcpu(fd, section: Section) -> None:
    values = decode_vcpu(section)
    # CPUID was set when the vCPU was built: MSR and XSAVE checks depend on it.
    # sregs before regs: the mode (long mode, paging) decides how RIP/RSP are read.
    fd.set_sregs(values["sregs"])
    fd.set_regs(values["regs"])
    # XSAVE carries the FPU/SSE/AVX state; XCR0 says which parts of it are live.
    fd.set_xsave(values["xsave"])
    fd.set_xcrs(values["xcrs"])
    # LAPIC before MSRs: KVM drops a TSC_DEADLINE write unless the LAPIC is in that timer mode.
    fd.set_lapic(values["lapic"])
    _apply_msrs(fd, values["msrs"], section.name)
    # Events last among the registers: a pending exception or interrupt refers to all of the above.
    fd.set_vcpu_events(values["events"])
    fd.set_mp_state(values["mp_state"])
    fd.set_debugregs(values["debugregs"])


def _apply_msrs(fd, msrs: dict[int, int], section: str) -> None:
    # One at a time: KVM_SET_MSRS stops at the first MSR it refuses.
    refused = [f"{index:#x}" for index, value in msrs.items() if fd.set_msrs({index: value}) != 1]
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


VM_STRUCTS = {"pic.master": abi.Irqchip, "pic.slave": abi.Irqchip, "ioapic": abi.Irqchip,
              "pit": abi.PitState2, "clock": abi.ClockData}


def decode(section: Section, device_state=None):
    """Parse a section without a machine (``device_state``: the state type of a device
    section), so a snapshot or migration can refuse a malformed one before applying any."""
    if section.name.startswith("vcpu."):
        return decode_vcpu(section)
    if section.name in VM_STRUCTS:
        return _raw(VM_STRUCTS[section.name], section)
    if device_state is None:
        raise RestoreError(f"section {section.name}: unknown to this engine")
    return device_state.from_bytes(section.data, section.version, section.name)


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
