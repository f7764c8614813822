"""One type per KVM file descriptor: the system (/dev/kvm), a VM, a vCPU.

Each is created by its parent (``Kvm.create_vm``, ``VmFd.create_vcpu``) and
every call goes through ``ioctl.call``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from pathlib import Path

from . import abi, exits
from .ioctl import KvmError, KvmIoctlError, call

DEFAULT_DEVICE = "/dev/kvm"


class KvmUnavailable(KvmError):
    pass


def _flavour() -> str:
    modules = Path("/sys/module")
    for name in ("kvm_intel", "kvm_amd", "kvm_pvm"):
        if (modules / name).exists():
            return name.removeprefix("kvm_")
    return "unknown"


class Kvm:
    def __init__(self, path: str = DEFAULT_DEVICE):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise KvmUnavailable(err.errno, f"KVM is not usable: cannot open {path}: {err.strerror}") from None
        version = call(self.fd, "KVM_GET_API_VERSION")
        if version != abi.API_VERSION:
            os.close(self.fd)
            raise KvmUnavailable(0, f"KVM API version {version} at {path}, expected {abi.API_VERSION}")
        self.flavour = _flavour()

    def check_extension(self, cap: int) -> int:
        return call(self.fd, "KVM_CHECK_EXTENSION", cap)

    def vcpu_mmap_size(self) -> int:
        return call(self.fd, "KVM_GET_VCPU_MMAP_SIZE")

    def supported_cpuid(self):
        count = 128
        while True:
            table = abi.cpuid(count)()
            table.nent = count
            try:
                call(self.fd, "KVM_GET_SUPPORTED_CPUID", table)
                return table
            except KvmIoctlError as err:
                if err.errno != errno.E2BIG:
                    raise
                count *= 2

    def msr_index_list(self) -> list[int]:
        count = 256
        while True:
            table = abi.msr_list(count)()
            table.nmsrs = count
            try:
                call(self.fd, "KVM_GET_MSR_INDEX_LIST", table)
                return list(table.indices[:table.nmsrs])
            except KvmIoctlError as err:
                if err.errno != errno.E2BIG:
                    raise
                count = table.nmsrs if table.nmsrs > count else count * 2

    def create_vm(self) -> "VmFd":
        return VmFd(call(self.fd, "KVM_CREATE_VM", 0), self)

    def close(self) -> None:
        os.close(self.fd)


class VmFd:
    def __init__(self, fd: int, kvm: Kvm):
        self.fd = fd
        self.kvm = kvm

    def set_user_memory_region(self, slot: int, gpa: int, size: int, host_address: int,
                               flags: int = 0) -> None:
        region = abi.UserspaceMemoryRegion(slot, flags, gpa, size, host_address)
        call(self.fd, "KVM_SET_USER_MEMORY_REGION", region)

    def get_dirty_log(self, slot: int, bitmap_address: int) -> None:
        """Fill the bitmap at ``bitmap_address``; KVM clears the slot's log as it reads."""
        call(self.fd, "KVM_GET_DIRTY_LOG", abi.DirtyLog(slot, 0, bitmap_address))

    def set_tss_addr(self, address: int) -> None:
        call(self.fd, "KVM_SET_TSS_ADDR", address)

    def create_irqchip(self) -> None:
        call(self.fd, "KVM_CREATE_IRQCHIP")

    def create_pit2(self) -> None:
        call(self.fd, "KVM_CREATE_PIT2", abi.PitConfig(abi.PIT_SPEAKER_DUMMY))

    def irq_line(self, irq: int, level: bool) -> None:
        call(self.fd, "KVM_IRQ_LINE", abi.IrqLevel(irq, int(level)))

    def get_irqchip(self, chip_id: int) -> abi.Irqchip:
        chip = abi.Irqchip(chip_id)
        call(self.fd, "KVM_GET_IRQCHIP", chip)
        return chip

    def set_irqchip(self, chip: abi.Irqchip) -> None:
        call(self.fd, "KVM_SET_IRQCHIP", chip)

    def get_pit2(self) -> abi.PitState2:
        return _get(self.fd, "KVM_GET_PIT2", abi.PitState2)

    def set_pit2(self, state: abi.PitState2) -> None:
        call(self.fd, "KVM_SET_PIT2", state)

    def get_clock(self) -> abi.ClockData:
        return _get(self.fd, "KVM_GET_CLOCK", abi.ClockData)

    def set_clock(self, clock: abi.ClockData) -> None:
        call(self.fd, "KVM_SET_CLOCK", clock)

    def create_vcpu(self, index: int) -> "VcpuFd":
        return VcpuFd(call(self.fd, "KVM_CREATE_VCPU", index), index, self.kvm.vcpu_mmap_size())

    def close(self) -> None:
        os.close(self.fd)


def _get(fd: int, name: str, cls):
    value = cls()
    call(fd, name, value)
    return value


class VcpuFd:
    def __init__(self, fd: int, index: int, mmap_size: int):
        self.fd = fd
        self.index = index
        self._map = mmap.mmap(fd, mmap_size, flags=mmap.MAP_SHARED,
                              prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_state = abi.Run.from_buffer(self._map)
        self.run_address = ctypes.addressof(self.run_state)

    def run(self) -> exits.Exit:
        """Enter the guest once and return why it came back."""
        try:
            call(self.fd, "KVM_RUN")
        except KvmIoctlError as err:
            if err.errno in (errno.EINTR, errno.EAGAIN):
                return exits.Interrupted()
            raise
        return exits.decode(self.run_state, self.run_address)

    def set_immediate_exit(self, value: bool) -> None:
        self.run_state.immediate_exit = int(value)

    def complete_io_in(self, offset: int, data: bytes) -> None:
        ctypes.memmove(self.run_address + offset, data, len(data))

    def complete_mmio_read(self, data: bytes) -> None:
        ctypes.memmove(ctypes.addressof(self.run_state.exit.mmio.data), data, len(data))

    def get_regs(self) -> abi.Regs:
        return _get(self.fd, "KVM_GET_REGS", abi.Regs)

    def set_regs(self, regs: abi.Regs) -> None:
        call(self.fd, "KVM_SET_REGS", regs)

    def get_sregs(self) -> abi.Sregs:
        return _get(self.fd, "KVM_GET_SREGS", abi.Sregs)

    def set_sregs(self, sregs: abi.Sregs) -> None:
        call(self.fd, "KVM_SET_SREGS", sregs)

    def set_fpu(self, fpu: abi.Fpu) -> None:
        call(self.fd, "KVM_SET_FPU", fpu)

    def set_cpuid(self, table) -> None:
        call(self.fd, "KVM_SET_CPUID2", table)

    def get_msr(self, index: int) -> int | None:
        """One MSR, or None when KVM cannot read it (KVM_GET_MSRS stops at the first failure)."""
        table = abi.msrs(1)()
        table.nmsrs = 1
        table.entries[0].index = index
        return table.entries[0].data if call(self.fd, "KVM_GET_MSRS", table) == 1 else None

    def set_msrs(self, values: dict[int, int]) -> int:
        table = abi.msrs(len(values))()
        table.nmsrs = len(values)
        for entry, (index, data) in zip(table.entries, values.items()):
            entry.index, entry.data = index, data
        return call(self.fd, "KVM_SET_MSRS", table)

    def get_lapic(self) -> abi.LapicState:
        return _get(self.fd, "KVM_GET_LAPIC", abi.LapicState)

    def set_lapic(self, lapic: abi.LapicState) -> None:
        call(self.fd, "KVM_SET_LAPIC", lapic)

    def get_mp_state(self) -> int:
        return _get(self.fd, "KVM_GET_MP_STATE", abi.MpState).mp_state

    def set_mp_state(self, state: int) -> None:
        call(self.fd, "KVM_SET_MP_STATE", abi.MpState(state))

    def get_vcpu_events(self) -> abi.VcpuEvents:
        return _get(self.fd, "KVM_GET_VCPU_EVENTS", abi.VcpuEvents)

    def set_vcpu_events(self, events: abi.VcpuEvents) -> None:
        call(self.fd, "KVM_SET_VCPU_EVENTS", events)

    def get_debugregs(self) -> abi.DebugRegs:
        return _get(self.fd, "KVM_GET_DEBUGREGS", abi.DebugRegs)

    def set_debugregs(self, regs: abi.DebugRegs) -> None:
        call(self.fd, "KVM_SET_DEBUGREGS", regs)

    def get_xsave(self) -> abi.Xsave:
        return _get(self.fd, "KVM_GET_XSAVE", abi.Xsave)

    def set_xsave(self, xsave: abi.Xsave) -> None:
        call(self.fd, "KVM_SET_XSAVE", xsave)

    def get_xcrs(self) -> abi.Xcrs:
        return _get(self.fd, "KVM_GET_XCRS", abi.Xcrs)

    def set_xcrs(self, xcrs: abi.Xcrs) -> None:
        call(self.fd, "KVM_SET_XCRS", xcrs)

    def kvmclock_ctrl(self) -> None:
        call(self.fd, "KVM_KVMCLOCK_CTRL")

    def close(self) -> None:
        del self.run_state
        try:
            self._map.close()
        except BufferError:
            pass  # someone still holds the kvm_run view; the mapping goes with it
        os.close(self.fd)
