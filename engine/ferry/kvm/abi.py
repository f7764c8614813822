"""The KVM userspace ABI: ioctl numbers and structures from ``linux/kvm.h``.

Data only. Struct layouts are x86-64; ``tests/unit/test_kvm_abi.py`` compiles
the kernel header and checks every number and size here against it.
"""

from __future__ import annotations

import ctypes
from ctypes import c_uint8, c_uint16, c_uint32, c_uint64, c_int64, c_char

KVMIO = 0xAE
API_VERSION = 12

_NONE, _WRITE, _READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_NONE, nr, 0)


def _ior(nr: int, size: int) -> int:
    return _ioc(_READ, nr, size)


def _iow(nr: int, size: int) -> int:
    return _ioc(_WRITE, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(_READ | _WRITE, nr, size)


class Struct(ctypes.Structure):
    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={getattr(self, name)!r}" for name, *_ in self._fields_)
        return f"{type(self).__name__}({parts})"


class Regs(Struct):
    _fields_ = [(name, c_uint64) for name in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class Segment(Struct):
    _fields_ = [("base", c_uint64), ("limit", c_uint32), ("selector", c_uint16),
                ("type", c_uint8), ("present", c_uint8), ("dpl", c_uint8), ("db", c_uint8),
                ("s", c_uint8), ("l", c_uint8), ("g", c_uint8), ("avl", c_uint8),
                ("unusable", c_uint8), ("padding", c_uint8)]


class DTable(Struct):
    _fields_ = [("base", c_uint64), ("limit", c_uint16), ("padding", c_uint16 * 3)]


class Sregs(Struct):
    _fields_ = [("cs", Segment), ("ds", Segment), ("es", Segment), ("fs", Segment),
                ("gs", Segment), ("ss", Segment), ("tr", Segment), ("ldt", Segment),
                ("gdt", DTable), ("idt", DTable),
                ("cr0", c_uint64), ("cr2", c_uint64), ("cr3", c_uint64), ("cr4", c_uint64),
                ("cr8", c_uint64), ("efer", c_uint64), ("apic_base", c_uint64),
                ("interrupt_bitmap", c_uint64 * 4)]


class Fpu(Struct):
    _fields_ = [("fpr", (c_uint8 * 16) * 8), ("fcw", c_uint16), ("fsw", c_uint16),
                ("ftwx", c_uint8), ("pad1", c_uint8), ("last_opcode", c_uint16),
                ("last_ip", c_uint64), ("last_dp", c_uint64), ("xmm", (c_uint8 * 16) * 16),
                ("mxcsr", c_uint32), ("pad2", c_uint32)]


class MsrEntry(Struct):
    _fields_ = [("index", c_uint32), ("reserved", c_uint32), ("data", c_uint64)]


class MsrsHeader(Struct):
    _fields_ = [("nmsrs", c_uint32), ("pad", c_uint32)]


def msrs(count: int) -> type:
    """``struct kvm_msrs`` with room for ``count`` entries."""
    return type(f"Msrs{count}", (Struct,), {"_fields_": [
        ("nmsrs", c_uint32), ("pad", c_uint32), ("entries", MsrEntry * count)]})


def msr_list(count: int) -> type:
    """``struct kvm_msr_list`` with room for ``count`` indices."""
    return type(f"MsrList{count}", (Struct,), {"_fields_": [
        ("nmsrs", c_uint32), ("indices", c_uint32 * count)]})


class CpuidEntry(Struct):
    _fields_ = [("function", c_uint32), ("index", c_uint32), ("flags", c_uint32),
                ("eax", c_uint32), ("ebx", c_uint32), ("ecx", c_uint32), ("edx", c_uint32),
                ("padding", c_uint32 * 3)]


def cpuid(count: int) -> type:
    """``struct kvm_cpuid2`` with room for ``count`` entries."""
    return type(f"Cpuid{count}", (Struct,), {"_fields_": [
        ("nent", c_uint32), ("padding", c_uint32), ("entries", CpuidEntry * count)]})


class LapicState(Struct):
    _fields_ = [("regs", c_uint8 * 1024)]


class Irqchip(Struct):
    _fields_ = [("chip_id", c_uint32), ("pad", c_uint32), ("chip", c_uint8 * 512)]


IRQCHIP_PIC_MASTER = 0
IRQCHIP_PIC_SLAVE = 1
IRQCHIP_IOAPIC = 2


class PitChannelState(Struct):
    _fields_ = [("count", c_uint32), ("latched_count", c_uint16), ("count_latched", c_uint8),
                ("status_latched", c_uint8), ("status", c_uint8), ("read_state", c_uint8),
                ("write_state", c_uint8), ("write_latch", c_uint8), ("rw_mode", c_uint8),
                ("mode", c_uint8), ("bcd", c_uint8), ("gate", c_uint8),
                ("count_load_time", c_int64)]


class PitState2(Struct):
    _fields_ = [("channels", PitChannelState * 3), ("flags", c_uint32),
                ("reserved", c_uint32 * 9)]


class PitConfig(Struct):
    _fields_ = [("flags", c_uint32), ("pad", c_uint32 * 15)]


PIT_SPEAKER_DUMMY = 1


class ClockData(Struct):
    _fields_ = [("clock", c_uint64), ("flags", c_uint32), ("pad0", c_uint32),
                ("realtime", c_uint64), ("host_tsc", c_uint64), ("pad", c_uint32 * 4)]


class VcpuEvents(Struct):
    _fields_ = [("exception_injected", c_uint8), ("exception_nr", c_uint8),
                ("exception_has_error_code", c_uint8), ("exception_pending", c_uint8),
                ("exception_error_code", c_uint32),
                ("interrupt_injected", c_uint8), ("interrupt_nr", c_uint8),
                ("interrupt_soft", c_uint8), ("interrupt_shadow", c_uint8),
                ("nmi_injected", c_uint8), ("nmi_pending", c_uint8), ("nmi_masked", c_uint8),
                ("nmi_pad", c_uint8),
                ("sipi_vector", c_uint32), ("flags", c_uint32),
                ("smi", c_uint8 * 4), ("triple_fault_pending", c_uint8),
                ("reserved", c_uint8 * 26), ("exception_has_payload", c_uint8),
                ("exception_payload", c_uint64)]


class DebugRegs(Struct):
    _fields_ = [("db", c_uint64 * 4), ("dr6", c_uint64), ("dr7", c_uint64),
                ("flags", c_uint64), ("reserved", c_uint64 * 9)]


class Xsave(Struct):
    _fields_ = [("region", c_uint32 * 1024)]


class Xcr(Struct):
    _fields_ = [("xcr", c_uint32), ("reserved", c_uint32), ("value", c_uint64)]


class Xcrs(Struct):
    _fields_ = [("nr_xcrs", c_uint32), ("flags", c_uint32), ("xcrs", Xcr * 16),
                ("padding", c_uint64 * 16)]


class MpState(Struct):
    _fields_ = [("mp_state", c_uint32)]


MP_STATE_RUNNABLE = 0
MP_STATE_UNINITIALIZED = 1
MP_STATE_INIT_RECEIVED = 2
MP_STATE_HALTED = 3
MP_STATE_SIPI_RECEIVED = 4


class UserspaceMemoryRegion(Struct):
    _fields_ = [("slot", c_uint32), ("flags", c_uint32), ("guest_phys_addr", c_uint64),
                ("memory_size", c_uint64), ("userspace_addr", c_uint64)]


MEM_LOG_DIRTY_PAGES = 1


class DirtyLog(Struct):
    _fields_ = [("slot", c_uint32), ("padding1", c_uint32), ("dirty_bitmap", c_uint64)]


class IrqLevel(Struct):
    _fields_ = [("irq", c_uint32), ("level", c_uint32)]


class EnableCap(Struct):
    _fields_ = [("cap", c_uint32), ("flags", c_uint32), ("args", c_uint64 * 4),
                ("pad", c_uint8 * 64)]


# --- struct kvm_run: the fixed head and the exit-reason union at offset 32 ---

class RunIo(Struct):
    _fields_ = [("direction", c_uint8), ("size", c_uint8), ("port", c_uint16),
                ("count", c_uint32), ("data_offset", c_uint64)]


class RunMmio(Struct):
    _fields_ = [("phys_addr", c_uint64), ("data", c_uint8 * 8), ("len", c_uint32),
                ("is_write", c_uint8)]


class RunFailEntry(Struct):
    _fields_ = [("hardware_entry_failure_reason", c_uint64), ("cpu", c_uint32)]


class RunInternal(Struct):
    _fields_ = [("suberror", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class RunSystemEvent(Struct):
    _fields_ = [("type", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class RunExitUnion(ctypes.Union):
    _fields_ = [("io", RunIo), ("mmio", RunMmio), ("fail_entry", RunFailEntry),
                ("internal", RunInternal), ("system_event", RunSystemEvent),
                ("hardware_exit_reason", c_uint64), ("padding", c_char * 256)]


class Run(Struct):
    _fields_ = [("request_interrupt_window", c_uint8), ("immediate_exit", c_uint8),
                ("padding1", c_uint8 * 6), ("exit_reason", c_uint32),
                ("ready_for_interrupt_injection", c_uint8), ("if_flag", c_uint8),
                ("flags", c_uint16), ("cr8", c_uint64), ("apic_base", c_uint64),
                ("exit", RunExitUnion)]


EXIT_UNKNOWN = 0
EXIT_EXCEPTION = 1
EXIT_IO = 2
EXIT_HYPERCALL = 3
EXIT_DEBUG = 4
EXIT_HLT = 5
EXIT_MMIO = 6
EXIT_IRQ_WINDOW_OPEN = 7
EXIT_SHUTDOWN = 8
EXIT_FAIL_ENTRY = 9
EXIT_INTR = 10
EXIT_INTERNAL_ERROR = 17
EXIT_SYSTEM_EVENT = 24

EXIT_IO_IN = 0
EXIT_IO_OUT = 1

SYSTEM_EVENT_SHUTDOWN = 1
SYSTEM_EVENT_RESET = 2
SYSTEM_EVENT_CRASH = 3

INTERNAL_ERROR_EMULATION = 1
INTERNAL_ERROR_SIMUL_EX = 2
INTERNAL_ERROR_DELIVERY_EV = 3

# Capabilities (KVM_CHECK_EXTENSION)
CAP_IRQCHIP = 0
CAP_USER_MEMORY = 3
CAP_SET_TSS_ADDR = 4
CAP_EXT_CPUID = 7
CAP_NR_VCPUS = 9
CAP_PIT2 = 33
CAP_ADJUST_CLOCK = 39
CAP_VCPU_EVENTS = 41
CAP_DEBUGREGS = 50
CAP_XSAVE = 55
CAP_XCRS = 56
CAP_MAX_VCPUS = 66
CAP_IMMEDIATE_EXIT = 136
CAP_XSAVE2 = 208


# The ioctl table: name -> (request number, argument type or None for a plain int).
# KVM_GET_PIT2 and KVM_GET_VCPU_EVENTS share nr 0x9f (so do their SETs at 0xa0):
# only the size field tells them apart, which is why sizes come from the types.
IOCTLS: dict[str, int] = {
    # /dev/kvm
    "KVM_GET_API_VERSION": _io(0x00),
    "KVM_CREATE_VM": _io(0x01),
    "KVM_GET_MSR_INDEX_LIST": _iowr(0x02, 4),
    "KVM_CHECK_EXTENSION": _io(0x03),
    "KVM_GET_VCPU_MMAP_SIZE": _io(0x04),
    "KVM_GET_SUPPORTED_CPUID": _iowr(0x05, 8),
    # VM fd
    "KVM_CREATE_VCPU": _io(0x41),
    "KVM_GET_DIRTY_LOG": _iow(0x42, ctypes.sizeof(DirtyLog)),
    "KVM_SET_USER_MEMORY_REGION": _iow(0x46, ctypes.sizeof(UserspaceMemoryRegion)),
    "KVM_SET_TSS_ADDR": _io(0x47),
    "KVM_SET_IDENTITY_MAP_ADDR": _iow(0x48, 8),
    "KVM_CREATE_IRQCHIP": _io(0x60),
    "KVM_IRQ_LINE": _iow(0x61, ctypes.sizeof(IrqLevel)),
    "KVM_GET_IRQCHIP": _iowr(0x62, ctypes.sizeof(Irqchip)),
    # Declared _IOR in the kernel header although it passes data in.
    "KVM_SET_IRQCHIP": _ior(0x63, ctypes.sizeof(Irqchip)),
    "KVM_CREATE_PIT2": _iow(0x77, ctypes.sizeof(PitConfig)),
    "KVM_SET_BOOT_CPU_ID": _io(0x78),
    "KVM_SET_CLOCK": _iow(0x7b, ctypes.sizeof(ClockData)),
    "KVM_GET_CLOCK": _ior(0x7c, ctypes.sizeof(ClockData)),
    "KVM_GET_PIT2": _ior(0x9f, ctypes.sizeof(PitState2)),
    "KVM_SET_PIT2": _iow(0xa0, ctypes.sizeof(PitState2)),
    "KVM_ENABLE_CAP": _iow(0xa3, ctypes.sizeof(EnableCap)),
    # vCPU fd
    "KVM_RUN": _io(0x80),
    "KVM_GET_REGS": _ior(0x81, ctypes.sizeof(Regs)),
    "KVM_SET_REGS": _iow(0x82, ctypes.sizeof(Regs)),
    "KVM_GET_SREGS": _ior(0x83, ctypes.sizeof(Sregs)),
    "KVM_SET_SREGS": _iow(0x84, ctypes.sizeof(Sregs)),
    "KVM_GET_MSRS": _iowr(0x88, ctypes.sizeof(MsrsHeader)),
    "KVM_SET_MSRS": _iow(0x89, ctypes.sizeof(MsrsHeader)),
    "KVM_GET_FPU": _ior(0x8c, ctypes.sizeof(Fpu)),
    "KVM_SET_FPU": _iow(0x8d, ctypes.sizeof(Fpu)),
    "KVM_GET_LAPIC": _ior(0x8e, ctypes.sizeof(LapicState)),
    "KVM_SET_LAPIC": _iow(0x8f, ctypes.sizeof(LapicState)),
    "KVM_SET_CPUID2": _iow(0x90, 8),
    "KVM_GET_CPUID2": _iowr(0x91, 8),
    "KVM_GET_MP_STATE": _ior(0x98, ctypes.sizeof(MpState)),
    "KVM_SET_MP_STATE": _iow(0x99, ctypes.sizeof(MpState)),
    "KVM_GET_VCPU_EVENTS": _ior(0x9f, ctypes.sizeof(VcpuEvents)),
    "KVM_SET_VCPU_EVENTS": _iow(0xa0, ctypes.sizeof(VcpuEvents)),
    "KVM_GET_DEBUGREGS": _ior(0xa1, ctypes.sizeof(DebugRegs)),
    "KVM_SET_DEBUGREGS": _iow(0xa2, ctypes.sizeof(DebugRegs)),
    "KVM_SET_TSC_KHZ": _io(0xa2),
    "KVM_GET_TSC_KHZ": _io(0xa3),
    "KVM_GET_XSAVE": _ior(0xa4, ctypes.sizeof(Xsave)),
    "KVM_SET_XSAVE": _iow(0xa5, ctypes.sizeof(Xsave)),
    "KVM_GET_XCRS": _ior(0xa6, ctypes.sizeof(Xcrs)),
    "KVM_SET_XCRS": _iow(0xa7, ctypes.sizeof(Xcrs)),
    "KVM_KVMCLOCK_CTRL": _io(0xad),
}

# x86 MSRs the boot path sets explicitly.
MSR_IA32_TSC = 0x10
MSR_IA32_APICBASE = 0x1B
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_TSC_DEADLINE = 0x6E0
MSR_EFER = 0xC0000080
MISC_ENABLE_FAST_STRING = 1

EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
