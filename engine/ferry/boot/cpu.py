"""Initial vCPU state: CPUID, 64-bit long mode, boot GDT, identity page tables, LAPIC.

Both boot paths (Linux and the ELF contract) enter the kernel in long mode,
so this one module builds the machine state they share.
"""

from __future__ import annotations

import struct

from ..kvm import abi
from .. import layout

# GDT entries: flat 64-bit code, flat data, and a TSS descriptor, because
# VMX refuses to enter a guest whose TR is unusable.
GDT_ENTRIES = (0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x008F8B000000FFFF)
CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR = 0x08, 0x10, 0x18

CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 2, 0x10, 0x20, 1 << 16, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 0x20, 0x200, 0x400

PTE_PRESENT, PTE_WRITE, PTE_USER, PTE_PWT, PTE_PCD, PTE_HUGE = 1, 2, 4, 8, 0x10, 0x80

LAPIC_LVT0, LAPIC_LVT1 = 0x350, 0x360
APIC_MODE_NMI, APIC_MODE_EXTINT, APIC_LVT_MASKED = 0x400, 0x700, 1 << 16

CPUID_HYPERVISOR = 1 << 31


def write_boot_gdt(mem) -> None:
    mem.write(layout.BOOT_GDT, struct.pack("<4Q", *GDT_ENTRIES))


def write_identity_tables(mem) -> None:
    """Map guest-physical 0-4 GiB 1:1 with 2 MiB pages; the MMIO window uncached."""
    flags = PTE_PRESENT | PTE_WRITE | PTE_USER
    mem.write(layout.PML4, struct.pack("<Q", layout.PDPT | flags))
    mem.write(layout.PDPT, struct.pack("<4Q", *(layout.PD_BASE + i * 4096 | flags for i in range(4))))
    entries = []
    for index in range(4 * 512):
        address = index << 21
        entry = address | flags | PTE_HUGE
        if address >= layout.PCI_HOLE_START:
            entry |= PTE_PCD | PTE_PWT
        entries.append(entry)
    mem.write(layout.PD_BASE, struct.pack(f"<{len(entries)}Q", *entries))


def _segment(selector: int, code: bool) -> abi.Segment:
    return abi.Segment(base=0, limit=0xFFFFFFFF, selector=selector, type=0xB if code else 0x3,
                       present=1, dpl=0, db=0 if code else 1, s=1, l=1 if code else 0, g=1)


def long_mode_sregs(sregs: abi.Sregs) -> abi.Sregs:
    sregs.cs = _segment(CODE_SELECTOR, code=True)
    data = _segment(DATA_SELECTOR, code=False)
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    sregs.tr = abi.Segment(base=0, limit=0xFFFFF, selector=TSS_SELECTOR, type=0xB, present=1, s=0, g=0)
    sregs.gdt.base, sregs.gdt.limit = layout.BOOT_GDT, len(GDT_ENTRIES) * 8 - 1
    sregs.idt.base, sregs.idt.limit = layout.BOOT_IDT, 0
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    sregs.cr3 = layout.PML4
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
    sregs.efer = abi.EFER_LME | abi.EFER_LMA
    return sregs


def vcpu_cpuid(supported, index: int, count: int):
    """The host's supported CPUID, with this vCPU's APIC ID and topology filled in."""
    table = type(supported)()
    table.nent = supported.nent
    for slot in range(supported.nent):
        entry = abi.CpuidEntry.from_buffer_copy(supported.entries[slot])
        if entry.function == 1:
            entry.ebx = (entry.ebx & 0x0000FFFF) | (count << 16) | (index << 24)
            entry.ecx |= CPUID_HYPERVISOR
        elif entry.function in (0xB, 0x1F):
            entry.edx = index
        table.entries[slot] = entry
    return table


def set_lapic_lints(lapic: abi.LapicState, bootstrap: bool) -> abi.LapicState:
    """Virtual-wire mode: the PIC reaches the bootstrap CPU through LINT0; NMIs through LINT1."""
    lint0 = APIC_MODE_EXTINT if bootstrap else APIC_MODE_EXTINT | APIC_LVT_MASKED
    struct.pack_into("<I", lapic, LAPIC_LVT0, lint0)
    struct.pack_into("<I", lapic, LAPIC_LVT1, APIC_MODE_NMI)
    return lapic


def initial_fpu() -> abi.Fpu:
    fpu = abi.Fpu()
    fpu.fcw = 0x37F
    fpu.mxcsr = 0x1F80
    return fpu
