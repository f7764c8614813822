"""Loading Linux by the x86 boot protocol.

Synthetic images are built here byte by byte at the offsets boot.rst
documents (not through ferry's own structures), then boot_params is read
back from guest memory the way the kernel reads it.
"""

import os
import struct
from pathlib import Path

import pytest

from ferry import layout
from ferry.boot.e820 import e820_map
from ferry.boot.linux import BootParams, LinuxEntry, field_offset, is_linux, load_linux
from ferry.errors import FerryError
from ferry.memory import GuestMemory
from support.binary import u16, u32, u64

MIB = layout.MIB
PAGE = layout.PAGE_SIZE
ZP = layout.ZERO_PAGE
CMDLINE = "console=ttyS0 panic=-1"
LOADED_HIGH, CAN_USE_HEAP, XLF_KERNEL_64 = 0x01, 0x80, 0x01


# ---------------------------------------------------------------- image builders

def bzimage(version=0x020F, loadflags=LOADED_HIGH, xloadflags=0x7F, setup_sects=4, payload_size=8192,
            relocatable=1, kernel_alignment=0x200000, pref_address=0x1000000, init_size=4 * MIB,
            initrd_addr_max=0x7FFFFFFF, cmdline_size=2047):
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x1F4, payload_size // 16)        # syssize
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)                    # boot_flag
    setup[0x200:0x202] = bytes([0xEB, 0x26C - 0x202])               # jmp past the header
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x214, 0x100000)                  # code32_start
    struct.pack_into("<I", setup, 0x22C, initrd_addr_max)
    struct.pack_into("<I", setup, 0x230, kernel_alignment)
    setup[0x234] = relocatable
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    struct.pack_into("<Q", setup, 0x258, pref_address)
    struct.pack_into("<I", setup, 0x260, init_size)
    payload = bytes((i * 7 + 3) & 0xFF for i in range(payload_size))
    return bytes(setup) + payload, payload


def note(owner, kind, desc):
    name = owner + b"\0"
    pad = lambda data: data + b"\0" * (-len(data) % 4)
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def elf(segments, entry, notes=(note(b"GNU", 3, b"\x01" * 20), note(b"Linux", 0x100, b"\0"))):
    """An ELF64 x86-64 executable: segments are (paddr, vaddr, data, memsz)."""
    phnum = len(segments) + 1
    notes_blob = b"".join(notes)
    offset = 64 + 56 * phnum
    phdrs = [struct.pack("<IIQQQQQQ", 4, 4, offset, 0, 0, len(notes_blob), len(notes_blob), 4)]
    body = notes_blob
    for paddr, vaddr, data, memsz in segments:
        position = offset + len(body)
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 7, position, vaddr, paddr, len(data), memsz, 0x1000))
        body += data
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    return header + b"".join(phdrs) + body


TEXT = bytes(range(256)) * 64                      # 16 KiB
DATA = b"\xAB" * 4096
VIRT = 0xFFFFFFFF81000000


def vmlinux(entry=0x1000000, notes=None):
    segments = [(0x1000000, VIRT, TEXT, len(TEXT)), (0x1200000, VIRT + 0x200000, DATA, 3 * PAGE)]
    return elf(segments, entry) if notes is None else elf(segments, entry, notes)


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def memory():
    made = []

    def make(size=64 * MIB):
        made.append(GuestMemory(size))
        return made[-1]
    yield make
    for mem in made:
        mem.close()


@pytest.fixture
def write(tmp_path):
    def write_file(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return write_file


def params_of(mem):
    return mem.read(ZP, PAGE)


def e820_of(params):
    count = params[0x1E8]
    return [struct.unpack_from("<QQI", params, 0x2D0 + 20 * i) for i in range(count)]


def in_ram(e820, start, end):
    return any(addr <= start and end <= addr + size for addr, size, kind in e820 if kind == layout.E820_RAM)


def assert_common_fields(mem, params, cmdline=CMDLINE):
    assert u16(params, 0x1FE) == 0xAA55
    assert params[0x202:0x206] == b"HdrS"
    assert params[0x1EF] == 0                                       # sentinel: fields are trustworthy
    assert params[0x210] == 0xFF                                    # type_of_loader
    assert params[0x211] & (LOADED_HIGH | CAN_USE_HEAP) == LOADED_HIGH | CAN_USE_HEAP
    assert u16(params, 0x224) == 0xDE00                             # heap_end_ptr
    assert u16(params, 0x236) & XLF_KERNEL_64
    pointer = u32(params, 0x228)
    assert pointer == layout.CMDLINE
    assert mem.read(pointer, len(cmdline) + 1) == cmdline.encode() + b"\0"
    assert e820_of(params) == e820_map(mem)


def assert_initrd(mem, params, initrd, kernel_end):
    addr, size = u32(params, 0x218), u32(params, 0x21C)
    assert size == len(initrd)
    assert addr % PAGE == 0
    assert addr >= kernel_end
    assert addr + size - 1 <= u32(params, 0x22C)                    # initrd_addr_max
    assert in_ram(e820_of(params), addr, addr + size)
    assert mem.read(addr, size) == initrd
    return addr


# ---------------------------------------------------------------- layout

def test_boot_params_is_one_page_with_documented_offsets():
    assert len(bytes(BootParams())) == PAGE
    assert field_offset("hdr.cmd_line_ptr") == 0x228
    assert field_offset("hdr.xloadflags") == 0x236
    assert field_offset("e820_table") == 0x2D0
    assert field_offset("acpi_rsdp_addr") == 0x70


# ---------------------------------------------------------------- detection

def test_detects_bzimage_and_vmlinux(write):
    assert is_linux(write("bzImage", bzimage()[0]))
    assert is_linux(write("vmlinux", vmlinux()))
    assert is_linux(write("xen-vmlinux", vmlinux(notes=[note(b"Xen", 18, b"\0" * 4)])))


def test_plain_elf_and_other_files_are_not_linux(write, tmp_path):
    assert not is_linux(write("guest.elf", vmlinux(notes=[note(b"GNU", 3, b"\x01" * 20)])))
    assert not is_linux(write("text", b"hello world" * 100))
    assert not is_linux(write("empty", b""))
    assert not is_linux(tmp_path / "missing")


# ---------------------------------------------------------------- bzImage

def test_bzimage_loads_at_1_mib_and_enters_startup_64(memory, write):
    mem = memory()
    image, payload = bzimage()
    entry = load_linux(mem, write("bzImage", image), None, CMDLINE, e820_map(mem))
    assert entry == LinuxEntry(rip=0x100200, boot_params_addr=ZP)
    assert mem.read(0x100000, len(payload)) == payload
    params = params_of(mem)
    assert_common_fields(mem, params)
    assert u16(params, 0x206) == 0x020F                             # header copied from the image
    assert u32(params, 0x214) == 0x100000
    assert u32(params, 0x218) == u32(params, 0x21C) == 0            # no initrd


def test_bzimage_initrd_goes_high_above_the_decompressed_kernel(memory, write):
    mem = memory(128 * MIB)
    initrd = os.urandom(3 * MIB + 123)
    load_linux(mem, write("bzImage", bzimage()[0]), write("initrd", initrd), CMDLINE, e820_map(mem))
    params = params_of(mem)
    # The decompressor runs the kernel at pref_address (16 MiB) with init_size 4 MiB.
    addr = assert_initrd(mem, params, initrd, kernel_end=20 * MIB)
    assert addr == (128 * MIB - len(initrd)) // PAGE * PAGE


def test_initrd_stays_below_initrd_addr_max(memory, write):
    mem = memory(128 * MIB)
    image = bzimage(initrd_addr_max=48 * MIB - 1)[0]
    initrd = b"\x5A" * (MIB + 1)
    load_linux(mem, write("bzImage", image), write("initrd", initrd), CMDLINE, e820_map(mem))
    addr = assert_initrd(mem, params_of(mem), initrd, kernel_end=20 * MIB)
    assert addr + len(initrd) <= 48 * MIB
    assert addr == (48 * MIB - len(initrd)) // PAGE * PAGE


def test_initrd_in_a_guest_above_4_gib_stays_below_the_hole(memory, write):
    mem = memory(5 * layout.GIB)
    initrd = b"\x01" * PAGE
    load_linux(mem, write("bzImage", bzimage(initrd_addr_max=0xFFFFFFFF)[0]), write("initrd", initrd),
               CMDLINE, e820_map(mem))
    addr = assert_initrd(mem, params_of(mem), initrd, kernel_end=20 * MIB)
    assert addr + len(initrd) == layout.PCI_HOLE_START


def test_rsdp_address_is_passed(memory, write):
    mem = memory()
    load_linux(mem, write("bzImage", bzimage()[0]), None, CMDLINE, e820_map(mem), rsdp_addr=0xE0000)
    assert u64(params_of(mem), 0x70) == 0xE0000


# ---------------------------------------------------------------- vmlinux

def test_vmlinux_segments_go_to_their_physical_addresses(memory, write):
    mem = memory()
    mem.write(0x1200000, b"\xEE" * 3 * PAGE)                         # the zero fill must overwrite this
    initrd = b"initrd" * 1000
    entry = load_linux(mem, write("vmlinux", vmlinux()), write("initrd", initrd), CMDLINE, e820_map(mem))
    assert entry == LinuxEntry(rip=0x1000000, boot_params_addr=ZP)
    assert mem.read(0x1000000, len(TEXT)) == TEXT
    assert mem.read(0x1200000, len(DATA)) == DATA
    assert mem.read(0x1200000 + len(DATA), 2 * PAGE) == bytes(2 * PAGE)
    params = params_of(mem)
    assert_common_fields(mem, params)
    assert_initrd(mem, params, initrd, kernel_end=0x1200000 + 3 * PAGE)


def test_vmlinux_virtual_entry_is_translated(memory, write):
    mem = memory()
    entry = load_linux(mem, write("vmlinux", vmlinux(entry=VIRT + 0x40)), None, CMDLINE, e820_map(mem))
    assert entry.rip == 0x1000040


# ---------------------------------------------------------------- refusals

def refused(mem, match, kernel, initrd=None, cmdline=CMDLINE):
    with pytest.raises(FerryError, match=match) as error:
        load_linux(mem, kernel, initrd, cmdline, e820_map(mem))
    message = str(error.value)
    assert "\n" not in message
    assert params_of(mem) == bytes(PAGE)                             # nothing written
    return message


def test_refuses_what_is_not_a_kernel(memory, write):
    refused(memory(), "not a Linux kernel", write("junk", b"\0" * 4096))
    refused(memory(), "not a Linux kernel", write("guest.elf", vmlinux(notes=[])))


def test_refuses_old_protocols(memory, write):
    refused(memory(), r"boot protocol 2\.05 is too old", write("old", bzimage(version=0x0205)[0]))
    refused(memory(), "64-bit entry", write("nox64", bzimage(xloadflags=0)[0]))
    refused(memory(), "64-bit entry", write("v211", bzimage(version=0x020B)[0]))
    refused(memory(), "zImage", write("zimage", bzimage(loadflags=0)[0]))


def test_refuses_a_kernel_that_does_not_fit(memory, write):
    # Runs at 16 MiB and needs init_size (4 MiB) from there.
    message = refused(memory(16 * MIB), "more memory", write("bzImage", bzimage()[0]))
    assert "0x1400000" in message
    refused(memory(16 * MIB), "more memory", write("vmlinux", vmlinux()))


def test_refuses_an_initrd_that_does_not_fit(memory, write):
    mem = memory(32 * MIB)
    refused(mem, "initrd", write("bzImage", bzimage()[0]), write("initrd", b"\0" * (12 * MIB + 1)))


def test_refuses_a_missing_initrd(memory, write, tmp_path):
    refused(memory(), "cannot read initrd", write("bzImage", bzimage()[0]), tmp_path / "missing")


def test_refuses_a_command_line_longer_than_the_kernel_takes(memory, write):
    kernel = write("bzImage", bzimage(cmdline_size=255)[0])
    refused(memory(), "command line is 256 bytes.*at most 255", kernel, cmdline="x" * 256)
    mem = memory()
    load_linux(mem, kernel, None, "x" * 255, e820_map(mem))


def test_refuses_a_truncated_bzimage(memory, write):
    image = bzimage()[0]
    refused(memory(), "truncated", write("short", image[:-100]))


# ---------------------------------------------------------------- the real guest

GUEST = Path(os.environ.get("FERRY_LINUX_GUEST", Path(__file__).resolve().parents[2] / "guests/linux/out"))
needs_guest = pytest.mark.skipif(not (GUEST / "vmlinux").exists(),
                                 reason=f"no built Linux guest in {GUEST} (run engine/guests/linux/build.sh)")


@needs_guest
def test_real_kernels_are_detected():
    assert is_linux(GUEST / "vmlinuz")
    assert is_linux(GUEST / "vmlinux")
    assert not is_linux(GUEST / "initrd.img")


@needs_guest
@pytest.mark.parametrize("name, rip", [("vmlinuz", 0x100200), ("vmlinux", 0x1000000)])
def test_real_kernel_loads_with_initrd(memory, name, rip):
    mem = memory(256 * MIB)
    cmdline = (GUEST / "cmdline").read_text().strip()
    initrd = (GUEST / "initrd.img").read_bytes()
    entry = load_linux(mem, GUEST / name, GUEST / "initrd.img", cmdline, e820_map(mem))
    assert entry.rip == rip
    params = params_of(mem)
    assert_common_fields(mem, params, cmdline)
    # Both forms run at pref_address (16 MiB) and need init_size bytes there
    # (for a vmlinux the loader derives both from its segments).
    assert u64(params, 0x258) == 0x1000000
    assert_initrd(mem, params, initrd, kernel_end=0x1000000 + u32(params, 0x260))
    image = (GUEST / name).read_bytes()
    if name == "vmlinuz":
        setup = ((image[0x1F1] or 4) + 1) * 512
        assert mem.read(0x100000, 4096) == image[setup:setup + 4096]
        assert u16(params, 0x206) >= 0x020C
    else:
        phoff = u64(image, 32)
        p_type, _, offset = struct.unpack_from("<IIQ", image, phoff)
        assert p_type == 1
        assert mem.read(0x1000000, 4096) == image[offset:offset + 4096]
