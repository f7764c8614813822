"""ACPI tables, read back from guest memory the way an OS finds them."""

import shutil
import struct
import subprocess

import pytest

from ferry import layout
from ferry.boot.acpi import write_acpi_tables
from ferry.errors import FerryError
from ferry.memory import GuestMemory
from support.binary import u8, u16, u32, u64  # noqa: F401

SDT_HEADER = 36


@pytest.fixture
def mem():
    memory = GuestMemory(4 * layout.MIB)
    yield memory
    memory.close()


def find_rsdp(mem):
    """Linux's scan: a 16-byte aligned "RSD PTR " in 0xE0000-0xFFFFF."""
    area = mem.read(0xE0000, 0x20000)
    for offset in range(0, len(area), 16):
        if area[offset:offset + 8] == b"RSD PTR ":
            return 0xE0000 + offset
    raise AssertionError("no RSDP in the BIOS area")


def read_table(mem, addr):
    length = u32(mem.read(addr, 8), 4)
    table = mem.read(addr, length)
    assert sum(table) % 256 == 0, f"{table[:4]!r} checksum"
    return table


def tables(mem):
    """{signature: (address, bytes)} for the XSDT, what it lists, the DSDT and the FACS."""
    rsdp = mem.read(find_rsdp(mem), 36)
    xsdt_addr = u64(rsdp, 24)
    xsdt = read_table(mem, xsdt_addr)
    found = {b"XSDT": (xsdt_addr, xsdt)}
    for offset in range(SDT_HEADER, len(xsdt), 8):
        addr = u64(xsdt, offset)
        table = read_table(mem, addr)
        found[table[:4]] = (addr, table)
    fadt = found[b"FACP"][1]
    found[b"DSDT"] = (u64(fadt, 140), read_table(mem, u64(fadt, 140)))
    facs_addr = u64(fadt, 132)
    found[b"FACS"] = (facs_addr, mem.read(facs_addr, u32(mem.read(facs_addr, 8), 4)))
    return found


def madt_entries(madt):
    entries, offset = [], 44
    while offset < len(madt):
        kind, length = madt[offset], madt[offset + 1]
        assert length >= 2
        entries.append((kind, madt[offset:offset + length]))
        offset += length
    assert offset == len(madt)
    return entries


def test_rsdp_is_where_linux_scans_with_both_checksums(mem):
    addr = write_acpi_tables(mem, 2)
    assert addr == layout.ACPI_TABLES == find_rsdp(mem)
    rsdp = mem.read(addr, 36)
    assert sum(rsdp[:20]) % 256 == 0
    assert sum(rsdp) % 256 == 0
    assert rsdp[15] == 2                 # revision: ACPI 2.0+, has an XSDT
    assert u32(rsdp, 20) == 36
    assert u64(rsdp, 24) != 0


def test_every_table_has_signature_length_and_checksum(mem):
    write_acpi_tables(mem, 2)
    found = tables(mem)
    assert set(found) == {b"XSDT", b"FACP", b"APIC", b"DSDT", b"FACS"}
    for signature, (addr, table) in found.items():
        assert table[:4] == signature
        assert u32(table, 4) == len(table)
        assert layout.ACPI_TABLES <= addr and addr + len(table) <= layout.ACPI_TABLES_END


def test_tables_do_not_overlap(mem):
    write_acpi_tables(mem, 32)
    spans = sorted((addr, addr + len(table)) for addr, table in tables(mem).values())
    spans.append((find_rsdp(mem), find_rsdp(mem) + 36))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start


def test_fadt_points_at_dsdt_facs_and_pm_blocks(mem):
    write_acpi_tables(mem, 1)
    found = tables(mem)
    fadt = found[b"FACP"][1]
    assert len(fadt) == 276 and fadt[8] == 6
    assert u32(fadt, 40) == u64(fadt, 140) == found[b"DSDT"][0]
    assert u64(fadt, 132) == found[b"FACS"][0]
    assert u32(fadt, 36) == 0           # FIRMWARE_CTRL: only the 64-bit field names the FACS
    assert found[b"FACS"][0] % 64 == 0
    assert u16(fadt, 46) == layout.SCI_IRQ
    assert u32(fadt, 48) == 0           # no SMI_CMD: always in ACPI mode
    assert u32(fadt, 56) == layout.PM1A_EVT_BLK
    assert u32(fadt, 64) == layout.PM1A_CNT_BLK
    assert u8(fadt, 88) == layout.PM1_EVT_LEN
    assert u8(fadt, 89) == layout.PM1_CNT_LEN
    # X_PM1a_EVT_BLK, X_PM1a_CNT_BLK: SystemIO, width matching the legacy length.
    assert struct.unpack_from("<BBBBQ", fadt, 148) == (1, 8 * layout.PM1_EVT_LEN, 0, 2, layout.PM1A_EVT_BLK)
    assert struct.unpack_from("<BBBBQ", fadt, 172) == (1, 8 * layout.PM1_CNT_LEN, 0, 2, layout.PM1A_CNT_BLK)


def test_fadt_describes_a_legacy_pc_with_fixed_power_button(mem):
    write_acpi_tables(mem, 1)
    fadt = tables(mem)[b"FACP"][1]
    flags = u32(fadt, 112)
    assert not flags & (1 << 4)         # PWR_BUTTON clear: fixed-feature power button
    assert not flags & (1 << 20)        # not hardware-reduced
    assert not flags & (1 << 10)        # no reset register: Linux resets through the i8042
    boot_arch = u16(fadt, 109)
    assert boot_arch & 0b11 == 0b11     # legacy devices, 8042
    assert not boot_arch & (1 << 5)     # the CMOS RTC is present


def test_reset_register_is_offered_on_request(mem):
    write_acpi_tables(mem, 1, reset_register=True)
    fadt = tables(mem)[b"FACP"][1]
    assert u32(fadt, 112) & (1 << 10)
    assert struct.unpack_from("<BBBBQ", fadt, 116) == (1, 8, 0, 1, layout.RESET_REG)
    assert fadt[128] == layout.RESET_VALUE


@pytest.mark.parametrize("cpu_count", [1, 2, 7, 32])
def test_madt_has_one_enabled_local_apic_per_vcpu(mem, cpu_count):
    write_acpi_tables(mem, cpu_count)
    madt = tables(mem)[b"APIC"][1]
    assert u32(madt, 36) == layout.LAPIC_BASE
    assert u32(madt, 40) & 1            # PCAT_COMPAT: the 8259s are there
    local_apics = [entry for kind, entry in madt_entries(madt) if kind == 0]
    assert len(local_apics) == cpu_count
    assert [(entry[2], entry[3]) for entry in local_apics] == [(cpu, cpu) for cpu in range(cpu_count)]
    assert all(u32(entry, 4) & 1 for entry in local_apics)


def test_madt_io_apic_and_overrides(mem):
    write_acpi_tables(mem, 4)
    entries = madt_entries(tables(mem)[b"APIC"][1])
    io_apics = [entry for kind, entry in entries if kind == 1]
    assert len(io_apics) == 1
    io_apic = io_apics[0]
    assert io_apic[2] == 4              # id after the local APICs'
    assert u32(io_apic, 4) == layout.IOAPIC_BASE
    assert u32(io_apic, 8) == 0
    overrides = {entry[3]: (entry[2], u32(entry, 4), u16(entry, 8)) for kind, entry in entries if kind == 2}
    assert overrides[0] == (0, 2, 0)    # PIT: IRQ0 -> GSI2, ISA defaults
    assert overrides[layout.SCI_IRQ] == (0, layout.SCI_IRQ, 0b1101)   # level, active high


def test_dsdt_has_s5_package(mem):
    write_acpi_tables(mem, 1)
    dsdt = tables(mem)[b"DSDT"][1]
    aml = dsdt[SDT_HEADER:]
    at = aml.index(b"_S5_")
    assert aml[at - 2:at] == b"\x08\x5c"                       # NameOp, root
    package = aml[at + 4:]
    assert package[0] == 0x12                                  # PackageOp
    assert package[1] == len(package) - 1                      # PkgLength covers the rest
    assert package[2] == 4                                     # elements
    assert package[3:5] == bytes([0x0A, layout.S5_SLP_TYP])   # SLP_TYPa


def test_refuses_impossible_cpu_counts(mem):
    for count in (0, layout.MAX_VCPUS + 1):
        with pytest.raises(FerryError, match="vCPUs"):
            write_acpi_tables(mem, count)


IASL = shutil.which("iasl")
DATA_TABLES = [b"XSDT", b"FACP", b"APIC", b"FACS"]


def iasl(*args, cwd):
    result = subprocess.run([IASL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Error" not in output.replace("0 Errors", ""), output
    assert "Warning" not in output.replace("0 Warnings", ""), output
    return output


@pytest.mark.skipif(IASL is None, reason="iasl not installed (Debian package acpica-tools)")
def test_iasl_disassembles_and_recompiles_the_tables(mem, tmp_path):
    # The RSDP is left out: iasl reads only tables with a standard header
    # from files, and "RSD PTR " has none; the tests above check it.
    write_acpi_tables(mem, 4)
    found = tables(mem)
    for signature, (_, table) in found.items():
        name = signature.decode().lower()
        (tmp_path / f"{name}.dat").write_bytes(table)
        iasl("-d", f"{name}.dat", cwd=tmp_path)
        iasl("-p", f"re_{name}", f"{name}.dsl", cwd=tmp_path)
        if signature in DATA_TABLES:
            rebuilt = (tmp_path / f"re_{name}.aml").read_bytes()
            assert len(rebuilt) == len(table)
            # iasl stamps its own compiler id and revision (and so checksum).
            assert mask_compiler(rebuilt, signature) == mask_compiler(table, signature)
    dsl = (tmp_path / "dsdt.dsl").read_text()
    assert "Name (\\_S5, Package (0x04)" in dsl
    assert dsl.count(f"0x{layout.S5_SLP_TYP:02X},") == 2


def mask_compiler(table, signature):
    if signature == b"FACS":    # no standard header, nothing stamped
        return table
    return table[:9] + b"\0" + table[10:28] + bytes(8) + table[36:]
