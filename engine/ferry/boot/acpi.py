"""ACPI tables for Linux guests: RSDP, XSDT, FADT, FACS, MADT and a DSDT.

They describe a legacy PC without PCI: PIC, PIT, RTC and i8042 on the
ISA ports, an I/O APIC and local APICs, and the fixed-feature PM1a blocks
of the ACPI PM device (``ferry.layout``: power button, S5 power-off). All of it goes
to ``layout.ACPI_TABLES`` (0xE0000), inside the BIOS area Linux scans for
the RSDP and that the e820 map marks reserved.

Layouts and field names follow the ACPI specification 6.3, chapter 5.2.
"""

from __future__ import annotations

import ctypes

from ..layout import (
    PM1_CNT_LEN,
    PM1_EVT_LEN,
    PM1A_CNT_BLK,
    PM1A_EVT_BLK,
    RESET_REG,
    RESET_VALUE,
    S5_SLP_TYP,
    SCI_IRQ,
)
from ..errors import FerryError
from ..memory import GuestMemory
from .. import layout

OEM_ID = b"FERRY "
OEM_TABLE_ID = b"FERRYVM "
OEM_REVISION = 1
CREATOR_ID = b"FRRY"
CREATOR_REVISION = 1

ADDRESS_SPACE_SYSTEM_IO = 1
ACCESS_BYTE = 1
ACCESS_WORD = 2

# FADT Flags
WBINVD = 1 << 0
PROC_C1 = 1 << 2
SLP_BUTTON = 1 << 5        # set: no fixed-feature sleep button
FIX_RTC = 1 << 6           # set: no RTC wake status in PM1
RESET_REG_SUP = 1 << 10
# FADT IA-PC boot architecture flags
LEGACY_DEVICES = 1 << 0
I8042 = 1 << 1
VGA_NOT_PRESENT = 1 << 2

P_LVL2_UNSUPPORTED = 101   # a latency over 100 us means "no C2"
P_LVL3_UNSUPPORTED = 1001  # over 1000 us: "no C3"

# MADT
PCAT_COMPAT = 1 << 0
MADT_LOCAL_APIC = 0
MADT_IO_APIC = 1
MADT_INTERRUPT_OVERRIDE = 2
MADT_LOCAL_APIC_NMI = 4
LOCAL_APIC_ENABLED = 1 << 0
ISA_BUS = 0
POLARITY_HIGH = 0b01
TRIGGER_LEVEL = 0b11 << 2
ALL_PROCESSORS = 0xFF
LINT1 = 1

PIT_IRQ = 0
PIT_GSI = 2                # the PIT reaches the I/O APIC on pin 2, as on every PC

FACS_VERSION = 2
MAX_CPUS = layout.MAX_VCPUS


class SdtHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("signature", ctypes.c_char * 4),
        ("length", ctypes.c_uint32),
        ("revision", ctypes.c_uint8),
        ("checksum", ctypes.c_uint8),
        ("oem_id", ctypes.c_char * 6),
        ("oem_table_id", ctypes.c_char * 8),
        ("oem_revision", ctypes.c_uint32),
        ("creator_id", ctypes.c_char * 4),
        ("creator_revision", ctypes.c_uint32),
    ]


class GenericAddress(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("space_id", ctypes.c_uint8),
        ("bit_width", ctypes.c_uint8),
        ("bit_offset", ctypes.c_uint8),
        ("access_size", ctypes.c_uint8),
        ("address", ctypes.c_uint64),
    ]


class Rsdp(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("signature", ctypes.c_char * 8),
        ("checksum", ctypes.c_uint8),
        ("oem_id", ctypes.c_char * 6),
        ("revision", ctypes.c_uint8),
        ("rsdt_address", ctypes.c_uint32),
        ("length", ctypes.c_uint32),
        ("xsdt_address", ctypes.c_uint64),
        ("extended_checksum", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 3),
    ]


class Fadt(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("header", SdtHeader),
        ("firmware_ctrl", ctypes.c_uint32),
        ("dsdt", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint8),
        ("preferred_pm_profile", ctypes.c_uint8),
        ("sci_int", ctypes.c_uint16),
        ("smi_cmd", ctypes.c_uint32),
        ("acpi_enable", ctypes.c_uint8),
        ("acpi_disable", ctypes.c_uint8),
        ("s4bios_req", ctypes.c_uint8),
        ("pstate_cnt", ctypes.c_uint8),
        ("pm1a_evt_blk", ctypes.c_uint32),
        ("pm1b_evt_blk", ctypes.c_uint32),
        ("pm1a_cnt_blk", ctypes.c_uint32),
        ("pm1b_cnt_blk", ctypes.c_uint32),
        ("pm2_cnt_blk", ctypes.c_uint32),
        ("pm_tmr_blk", ctypes.c_uint32),
        ("gpe0_blk", ctypes.c_uint32),
        ("gpe1_blk", ctypes.c_uint32),
        ("pm1_evt_len", ctypes.c_uint8),
        ("pm1_cnt_len", ctypes.c_uint8),
        ("pm2_cnt_len", ctypes.c_uint8),
        ("pm_tmr_len", ctypes.c_uint8),
        ("gpe0_blk_len", ctypes.c_uint8),
        ("gpe1_blk_len", ctypes.c_uint8),
        ("gpe1_base", ctypes.c_uint8),
        ("cst_cnt", ctypes.c_uint8),
        ("p_lvl2_lat", ctypes.c_uint16),
        ("p_lvl3_lat", ctypes.c_uint16),
        ("flush_size", ctypes.c_uint16),
        ("flush_stride", ctypes.c_uint16),
        ("duty_offset", ctypes.c_uint8),
        ("duty_width", ctypes.c_uint8),
        ("day_alrm", ctypes.c_uint8),
        ("mon_alrm", ctypes.c_uint8),
        ("century", ctypes.c_uint8),
        ("iapc_boot_arch", ctypes.c_uint16),
        ("reserved1", ctypes.c_uint8),
        ("flags", ctypes.c_uint32),
        ("reset_reg", GenericAddress),
        ("reset_value", ctypes.c_uint8),
        ("arm_boot_arch", ctypes.c_uint16),
        ("minor_version", ctypes.c_uint8),
        ("x_firmware_ctrl", ctypes.c_uint64),
        ("x_dsdt", ctypes.c_uint64),
        ("x_pm1a_evt_blk", GenericAddress),
        ("x_pm1b_evt_blk", GenericAddress),
        ("x_pm1a_cnt_blk", GenericAddress),
        ("x_pm1b_cnt_blk", GenericAddress),
        ("x_pm2_cnt_blk", GenericAddress),
        ("x_pm_tmr_blk", GenericAddress),
        ("x_gpe0_blk", GenericAddress),
        ("x_gpe1_blk", GenericAddress),
        ("sleep_control_reg", GenericAddress),
        ("sleep_status_reg", GenericAddress),
        ("hypervisor_vendor_id", ctypes.c_uint64),
    ]


class Facs(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("signature", ctypes.c_char * 4),
        ("length", ctypes.c_uint32),
        ("hardware_signature", ctypes.c_uint32),
        ("firmware_waking_vector", ctypes.c_uint32),
        ("global_lock", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("x_firmware_waking_vector", ctypes.c_uint64),
        ("version", ctypes.c_uint8),
        ("reserved0", ctypes.c_uint8 * 3),
        ("ospm_flags", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint8 * 24),
    ]


class MadtHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("header", SdtHeader),
        ("local_apic_address", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class MadtLocalApic(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("length", ctypes.c_uint8),
        ("processor_uid", ctypes.c_uint8),
        ("apic_id", ctypes.c_uint8),
        ("flags", ctypes.c_uint32),
    ]


class MadtIoApic(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("length", ctypes.c_uint8),
        ("io_apic_id", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8),
        ("address", ctypes.c_uint32),
        ("gsi_base", ctypes.c_uint32),
    ]


class MadtInterruptOverride(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("length", ctypes.c_uint8),
        ("bus", ctypes.c_uint8),
        ("source", ctypes.c_uint8),
        ("gsi", ctypes.c_uint32),
        ("flags", ctypes.c_uint16),
    ]


class MadtLocalApicNmi(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("length", ctypes.c_uint8),
        ("processor_uid", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("lint", ctypes.c_uint8),
    ]


# Sizes the specification gives; a wrong field would shift the rest.
_SPEC_SIZES = {SdtHeader: 36, GenericAddress: 12, Rsdp: 36, Fadt: 276, Facs: 64, MadtHeader: 44,
               MadtLocalApic: 8, MadtIoApic: 12, MadtInterruptOverride: 10, MadtLocalApicNmi: 6}
for _struct, _size in _SPEC_SIZES.items():
    if ctypes.sizeof(_struct) != _size:
        raise AssertionError(f"{_struct.__name__} is {ctypes.sizeof(_struct)} bytes, the spec says {_size}")
if Fadt.x_dsdt.offset != 140 or Fadt.iapc_boot_arch.offset != 109 or Fadt.hypervisor_vendor_id.offset != 268:
    raise AssertionError("FADT field offsets differ from ACPI 6.3 table 5-34")


# ---------------------------------------------------------------- entry point

def write_acpi_tables(mem: GuestMemory, cpu_count: int, reset_register: bool = False) -> int:
    """Write all tables at ``layout.ACPI_TABLES``; return the RSDP's address.

    ``reset_register``: offer ACPI reset through acpi_pm's RESET_REG. Off
    by default, because that register only resets the machine when the VMM
    wires its reset callback; a guest reboots through the i8042 either way
    (Linux falls back to it when the FADT has no reset register).
    """
    if not 1 <= cpu_count <= MAX_CPUS:
        raise FerryError(f"ACPI tables describe 1 to {MAX_CPUS} vCPUs, not {cpu_count}")
    place = _Allocator(layout.ACPI_TABLES, layout.ACPI_TABLES_END)
    rsdp_addr = place(ctypes.sizeof(Rsdp), 16)
    facs_addr = place(ctypes.sizeof(Facs), 64)    # the spec wants the FACS 64-byte aligned
    dsdt = dsdt_table()
    dsdt_addr = place(len(dsdt), 16)
    fadt = fadt_table(dsdt_addr, facs_addr, reset_register)
    fadt_addr = place(len(fadt), 16)
    madt = madt_table(cpu_count)
    madt_addr = place(len(madt), 16)
    xsdt = xsdt_table([fadt_addr, madt_addr])
    xsdt_addr = place(len(xsdt), 16)
    for addr, data in ((facs_addr, facs_table()), (dsdt_addr, dsdt), (fadt_addr, fadt),
                       (madt_addr, madt), (xsdt_addr, xsdt), (rsdp_addr, rsdp_table(xsdt_addr))):
        mem.write(addr, data)
    return rsdp_addr


class _Allocator:
    def __init__(self, start: int, end: int):
        self.next = start
        self.end = end

    def __call__(self, size: int, align: int) -> int:
        addr = -(-self.next // align) * align
        if addr + size > self.end:
            raise FerryError(f"ACPI tables do not fit below {self.end:#x}")
        self.next = addr + size
        return addr


# ---------------------------------------------------------------- tables

def rsdp_table(xsdt_addr: int) -> bytes:
    rsdp = Rsdp(signature=b"RSD PTR ", oem_id=OEM_ID, revision=2, length=ctypes.sizeof(Rsdp),
                xsdt_address=xsdt_addr)
    # Two checksums: the ACPI 1.0 one over the first 20 bytes, then the whole structure.
    rsdp.checksum = checksum(bytes(rsdp)[:20])
    rsdp.extended_checksum = checksum(bytes(rsdp))
    return bytes(rsdp)


def xsdt_table(table_addrs: list[int]) -> bytes:
    body = b"".join(addr.to_bytes(8, "little") for addr in table_addrs)
    return _with_header(b"XSDT", 1, body)


def fadt_table(dsdt_addr: int, facs_addr: int, reset_register: bool = False) -> bytes:
    fadt = Fadt()
    # SMI_CMD, ACPI_ENABLE and ACPI_DISABLE stay zero: no SMM, so the
    # machine is always in ACPI mode (SCI_EN reads as set).
    # The FACS only through X_FIRMWARE_CTRL: ACPICA installs a FACS given
    # in both fields twice. The DSDT may be in both (same value).
    fadt.x_firmware_ctrl = facs_addr
    fadt.dsdt = fadt.x_dsdt = dsdt_addr
    fadt.sci_int = SCI_IRQ
    fadt.pm1a_evt_blk = PM1A_EVT_BLK
    fadt.pm1a_cnt_blk = PM1A_CNT_BLK
    fadt.pm1_evt_len = PM1_EVT_LEN
    fadt.pm1_cnt_len = PM1_CNT_LEN
    fadt.x_pm1a_evt_blk = _io_register(PM1A_EVT_BLK, PM1_EVT_LEN, ACCESS_WORD)
    fadt.x_pm1a_cnt_blk = _io_register(PM1A_CNT_BLK, PM1_CNT_LEN, ACCESS_WORD)
    # No PM timer and no GPE blocks: their addresses and lengths stay zero.
    fadt.p_lvl2_lat = P_LVL2_UNSUPPORTED
    fadt.p_lvl3_lat = P_LVL3_UNSUPPORTED
    # Legacy devices that ACPI does not enumerate (COM1, PIC, PIT, RTC), and
    # the i8042 so Linux probes it directly without a PNP0303 device; no VGA.
    fadt.iapc_boot_arch = LEGACY_DEVICES | I8042 | VGA_NOT_PRESENT
    # PWR_BUTTON clear: the power button is the fixed-feature one in PM1.
    fadt.flags = WBINVD | PROC_C1 | SLP_BUTTON | FIX_RTC
    if reset_register:
        fadt.flags |= RESET_REG_SUP
        fadt.reset_reg = _io_register(RESET_REG, 1, ACCESS_BYTE)
        fadt.reset_value = RESET_VALUE
    fadt.minor_version = 3
    return _finish(fadt, b"FACP", 6)


def facs_table() -> bytes:
    # Only for the global lock and waking vector, neither used here; ACPICA
    # expects one on any machine that is not hardware-reduced.
    return bytes(Facs(signature=b"FACS", length=ctypes.sizeof(Facs), version=FACS_VERSION))


def madt_table(cpu_count: int) -> bytes:
    head = MadtHeader(local_apic_address=layout.LAPIC_BASE, flags=PCAT_COMPAT)
    entries = [
        *(MadtLocalApic(type=MADT_LOCAL_APIC, length=8, processor_uid=cpu, apic_id=cpu, flags=LOCAL_APIC_ENABLED)
          for cpu in range(cpu_count)),
        MadtIoApic(type=MADT_IO_APIC, length=12, io_apic_id=cpu_count, address=layout.IOAPIC_BASE, gsi_base=0),
        # ISA IRQs are edge/active-high and map 1:1 to GSIs except the PIT's.
        MadtInterruptOverride(type=MADT_INTERRUPT_OVERRIDE, length=10, bus=ISA_BUS, source=PIT_IRQ,
                              gsi=PIT_GSI, flags=0),
        # The SCI is level-triggered and, being shareable, defaults to active
        # low; acpi_pm drives it active high.
        MadtInterruptOverride(type=MADT_INTERRUPT_OVERRIDE, length=10, bus=ISA_BUS, source=SCI_IRQ,
                              gsi=SCI_IRQ, flags=POLARITY_HIGH | TRIGGER_LEVEL),
        MadtLocalApicNmi(type=MADT_LOCAL_APIC_NMI, length=6, processor_uid=ALL_PROCESSORS, flags=0, lint=LINT1),
    ]
    body = bytes(head)[ctypes.sizeof(SdtHeader):] + b"".join(bytes(entry) for entry in entries)
    return _with_header(b"APIC", 5, body)


def dsdt_table() -> bytes:
    """DefinitionBlock ("", "DSDT", 2, "FERRY ", "FERRYVM ", 1) { Name (\\_S5, ...) }

    Fixed-feature hardware needs no AML, so the only object is the S5
    sleep type Linux writes to PM1_CNT to power off.
    """
    return _with_header(b"DSDT", 2, s5_package())


def s5_package() -> bytes:
    """AML for  Name (\\_S5, Package (0x04) { S5_SLP_TYP, S5_SLP_TYP, Zero, Zero })"""
    elements = bytes([
        0x04,                    # NumElements
        0x0A, S5_SLP_TYP,        # BytePrefix: SLP_TYPa
        0x0A, S5_SLP_TYP,        # BytePrefix: SLP_TYPb (no PM1b block, same value)
        0x00,                    # ZeroOp: reserved
        0x00,                    # ZeroOp: reserved
    ])
    package_length = 1 + len(elements)      # a one-byte PkgLength counts itself
    return bytes([
        0x08,                    # NameOp
        0x5C, *b"_S5_",          # RootChar, NameSeg
        0x12,                    # PackageOp
        package_length,          # PkgLength (< 64: one byte)
    ]) + elements


# ---------------------------------------------------------------- helpers

def checksum(data: bytes) -> int:
    """The byte that makes ``data`` sum to zero modulo 256."""
    return -sum(data) & 0xFF


def _io_register(port: int, length: int, access: int) -> GenericAddress:
    return GenericAddress(space_id=ADDRESS_SPACE_SYSTEM_IO, bit_width=8 * length, bit_offset=0,
                          access_size=access, address=port)


def _header(signature: bytes, revision: int, length: int) -> SdtHeader:
    return SdtHeader(signature=signature, length=length, revision=revision, oem_id=OEM_ID,
                     oem_table_id=OEM_TABLE_ID, oem_revision=OEM_REVISION, creator_id=CREATOR_ID,
                     creator_revision=CREATOR_REVISION)


def _with_header(signature: bytes, revision: int, body: bytes) -> bytes:
    header = _header(signature, revision, ctypes.sizeof(SdtHeader) + len(body))
    header.checksum = checksum(bytes(header) + body)
    return bytes(header) + body


def _finish(table, signature: bytes, revision: int) -> bytes:
    """Header and checksum for a table that is one ctypes structure."""
    table.header = _header(signature, revision, ctypes.sizeof(table))
    table.header.checksum = checksum(bytes(table))
    return bytes(table)
