"""Loading a Linux kernel by the x86 boot protocol, entered in 64-bit mode.

Two kinds of image are accepted:

* a ``bzImage``: the real-mode setup sectors are skipped (the VMM enters
  in long mode, so nothing of the 16-bit path runs), the protected-mode
  part is copied to 1 MiB and entered at ``startup_64``, 0x200 past its
  start. Its decompressor then moves the kernel to where it will run.
* an uncompressed ELF ``vmlinux``: its ``PT_LOAD`` segments go to their
  physical addresses and it is entered at ``e_entry``. Without a
  decompressor to run this is by far the faster path when ring 0 is
  emulated. A vmlinux is recognised by an ELF note owned by ``Linux``
  (every kernel since 4.20 carries the build-salt note) or ``Xen`` (older
  kernels built with Xen/PVH support): a plain ELF with neither is left to
  the ELF boot contract, and the Linux notes are something such a guest
  would never carry by accident.

The boot protocol and field names are the kernel's
(Documentation/arch/x86/boot.rst and zero-page.rst).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from dataclasses import dataclass

from ..errors import FerryError
from ..memory import GuestMemory
from .. import layout
from . import elf

SETUP_HEADER_OFFSET = 0x1F1
STARTUP_64_OFFSET = 0x200          # startup_64 in a bzImage's protected-mode part
LOADER_TYPE_UNDEFINED = 0xFF       # a boot loader without an assigned id
BOOT_FLAG = 0xAA55
HDRS = int.from_bytes(b"HdrS", "little")

LOADED_HIGH = 1 << 0
CAN_USE_HEAP = 1 << 7
XLF_KERNEL_64 = 1 << 0

# The real-mode heap ends at 0xE000 in the setup segment; the field is
# "offset of the end of the heap, minus 0x200".
HEAP_END_PTR = 0xE000 - 0x200
VID_MODE_NORMAL = 0xFFFF

MIN_PROTOCOL = 0x0206              # first with cmdline_size
XLOADFLAGS_PROTOCOL = 0x020C       # first with xloadflags (64-bit entry)
PREF_ADDRESS_PROTOCOL = 0x020A     # first with pref_address and init_size

E820_MAX_ENTRIES = 128             # the table inside boot_params
LINUX_COMMAND_LINE_SIZE = 2048     # x86 COMMAND_LINE_SIZE, for a vmlinux (no header to ask)
VMLINUX_INITRD_ADDR_MAX = 0x7FFFFFFF
VMLINUX_KERNEL_ALIGNMENT = 0x200000

NOTE_OWNERS = (b"Linux", b"Xen")


class SetupHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("setup_sects", ctypes.c_uint8),
        ("root_flags", ctypes.c_uint16),
        ("syssize", ctypes.c_uint32),
        ("ram_size", ctypes.c_uint16),
        ("vid_mode", ctypes.c_uint16),
        ("root_dev", ctypes.c_uint16),
        ("boot_flag", ctypes.c_uint16),
        ("jump", ctypes.c_uint16),
        ("header", ctypes.c_uint32),
        ("version", ctypes.c_uint16),
        ("realmode_swtch", ctypes.c_uint32),
        ("start_sys_seg", ctypes.c_uint16),
        ("kernel_version", ctypes.c_uint16),
        ("type_of_loader", ctypes.c_uint8),
        ("loadflags", ctypes.c_uint8),
        ("setup_move_size", ctypes.c_uint16),
        ("code32_start", ctypes.c_uint32),
        ("ramdisk_image", ctypes.c_uint32),
        ("ramdisk_size", ctypes.c_uint32),
        ("bootsect_kludge", ctypes.c_uint32),
        ("heap_end_ptr", ctypes.c_uint16),
        ("ext_loader_ver", ctypes.c_uint8),
        ("ext_loader_type", ctypes.c_uint8),
        ("cmd_line_ptr", ctypes.c_uint32),
        ("initrd_addr_max", ctypes.c_uint32),
        ("kernel_alignment", ctypes.c_uint32),
        ("relocatable_kernel", ctypes.c_uint8),
        ("min_alignment", ctypes.c_uint8),
        ("xloadflags", ctypes.c_uint16),
        ("cmdline_size", ctypes.c_uint32),
        ("hardware_subarch", ctypes.c_uint32),
        ("hardware_subarch_data", ctypes.c_uint64),
        ("payload_offset", ctypes.c_uint32),
        ("payload_length", ctypes.c_uint32),
        ("setup_data", ctypes.c_uint64),
        ("pref_address", ctypes.c_uint64),
        ("init_size", ctypes.c_uint32),
        ("handover_offset", ctypes.c_uint32),
        ("kernel_info_offset", ctypes.c_uint32),
    ]


class E820Entry(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("addr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("type", ctypes.c_uint32),
    ]


class BootParams(ctypes.LittleEndianStructure):
    """The zero page. Unused areas are padding; the kernel wants them zero."""

    _pack_ = 1
    _fields_ = [
        ("screen_info", ctypes.c_uint8 * 0x40),
        ("apm_bios_info", ctypes.c_uint8 * 0x14),
        ("_pad2", ctypes.c_uint8 * 4),
        ("tboot_addr", ctypes.c_uint64),
        ("ist_info", ctypes.c_uint8 * 0x10),
        ("acpi_rsdp_addr", ctypes.c_uint64),
        ("_pad3", ctypes.c_uint8 * 8),
        ("hd0_info", ctypes.c_uint8 * 0x10),
        ("hd1_info", ctypes.c_uint8 * 0x10),
        ("sys_desc_table", ctypes.c_uint8 * 0x10),
        ("olpc_ofw_header", ctypes.c_uint8 * 0x10),
        ("ext_ramdisk_image", ctypes.c_uint32),
        ("ext_ramdisk_size", ctypes.c_uint32),
        ("ext_cmd_line_ptr", ctypes.c_uint32),
        ("_pad4", ctypes.c_uint8 * 112),
        ("cc_blob_address", ctypes.c_uint32),
        ("edid_info", ctypes.c_uint8 * 0x80),
        ("efi_info", ctypes.c_uint8 * 0x20),
        ("alt_mem_k", ctypes.c_uint32),
        ("scratch", ctypes.c_uint32),
        ("e820_entries", ctypes.c_uint8),
        ("eddbuf_entries", ctypes.c_uint8),
        ("edd_mbr_sig_buf_entries", ctypes.c_uint8),
        ("kbd_status", ctypes.c_uint8),
        ("secure_boot", ctypes.c_uint8),
        ("_pad5", ctypes.c_uint8 * 2),
        ("sentinel", ctypes.c_uint8),
        ("_pad6", ctypes.c_uint8 * 1),
        ("hdr", SetupHeader),
        ("_pad7", ctypes.c_uint8 * 0x24),
        ("edd_mbr_sig_buffer", ctypes.c_uint32 * 16),
        ("e820_table", E820Entry * E820_MAX_ENTRIES),
        ("_pad8", ctypes.c_uint8 * 48),
        ("eddbuf", ctypes.c_uint8 * (6 * 82)),
        ("_pad9", ctypes.c_uint8 * 276),
    ]


# Offsets within boot_params as zero-page.rst and boot.rst document them.
DOCUMENTED_OFFSETS = {
    "acpi_rsdp_addr": 0x070,
    "ext_ramdisk_image": 0x0C0,
    "ext_ramdisk_size": 0x0C4,
    "ext_cmd_line_ptr": 0x0C8,
    "cc_blob_address": 0x13C,
    "alt_mem_k": 0x1E0,
    "e820_entries": 0x1E8,
    "sentinel": 0x1EF,
    "hdr": 0x1F1,
    "edd_mbr_sig_buffer": 0x290,
    "e820_table": 0x2D0,
    "eddbuf": 0xD00,
    "hdr.setup_sects": 0x1F1,
    "hdr.syssize": 0x1F4,
    "hdr.vid_mode": 0x1FA,
    "hdr.boot_flag": 0x1FE,
    "hdr.jump": 0x200,
    "hdr.header": 0x202,
    "hdr.version": 0x206,
    "hdr.type_of_loader": 0x210,
    "hdr.loadflags": 0x211,
    "hdr.code32_start": 0x214,
    "hdr.ramdisk_image": 0x218,
    "hdr.ramdisk_size": 0x21C,
    "hdr.heap_end_ptr": 0x224,
    "hdr.cmd_line_ptr": 0x228,
    "hdr.initrd_addr_max": 0x22C,
    "hdr.kernel_alignment": 0x230,
    "hdr.relocatable_kernel": 0x234,
    "hdr.xloadflags": 0x236,
    "hdr.cmdline_size": 0x238,
    "hdr.payload_offset": 0x248,
    "hdr.payload_length": 0x24C,
    "hdr.setup_data": 0x250,
    "hdr.pref_address": 0x258,
    "hdr.init_size": 0x260,
    "hdr.kernel_info_offset": 0x268,
}


def field_offset(name: str) -> int:
    """Offset of ``name`` (``field`` or ``hdr.field``) inside boot_params."""
    if name.startswith("hdr."):
        return BootParams.hdr.offset + getattr(SetupHeader, name[4:]).offset
    return getattr(BootParams, name).offset


def _check_struct_layout() -> None:
    # A wrong ctypes field shifts every field after it; the kernel would read garbage.
    for name, documented in DOCUMENTED_OFFSETS.items():
        if field_offset(name) != documented:
            raise AssertionError(f"boot_params.{name} at {field_offset(name):#x}, documented {documented:#x}")
    if ctypes.sizeof(SetupHeader) != 0x26C - SETUP_HEADER_OFFSET:
        raise AssertionError("setup_header is not 0x7b bytes")
    if ctypes.sizeof(BootParams) != layout.PAGE_SIZE:
        raise AssertionError("boot_params is not one page")


_check_struct_layout()


@dataclass(frozen=True)
class LinuxEntry:
    """Where the VMM starts the BSP: ``rip`` in long mode, ``boot_params_addr`` in RSI."""

    rip: int
    boot_params_addr: int


@dataclass
class _Kernel:
    """A kernel ready to copy: what goes where, and the RAM it will use."""

    hdr: SetupHeader
    segments: list[tuple[int, int, int, int]]   # (gpa, file offset, file size, memory size)
    entry: int
    start: int
    end: int


# ---------------------------------------------------------------- detection

def is_linux(path: str | os.PathLike) -> bool:
    """True for a bzImage or an x86-64 ELF vmlinux; False for anything else."""
    try:
        with _mapped(path) as image:
            return _is_bzimage(image) or _is_vmlinux(image)
    except (OSError, ValueError):
        return False


def _is_bzimage(image) -> bool:
    return len(image) >= 0x206 + 2 and _u32(image, 0x202) == HDRS


def _is_vmlinux(image) -> bool:
    try:
        return elf.is_elf64_x86(image) and any(owner in NOTE_OWNERS for owner in _note_owners(image))
    except struct.error:
        return False


# ---------------------------------------------------------------- loading

def load_linux(mem: GuestMemory, kernel_path: str | os.PathLike, initrd_path: str | os.PathLike | None,
               cmdline: str, e820: list[tuple[int, int, int]], rsdp_addr: int = 0) -> LinuxEntry:
    """Copy kernel, initrd, command line and boot_params into ``mem``.

    Everything is checked before the first byte is written, so a refusal
    leaves guest memory untouched. ``rsdp_addr`` (optional) tells the
    kernel where the ACPI RSDP is; it also finds it by scanning the BIOS
    area, where ``write_acpi_tables`` puts it.
    """
    ram = [(addr, addr + size) for addr, size, kind in e820 if kind == layout.E820_RAM]
    initrd = _read_initrd(initrd_path)
    try:
        with _mapped(kernel_path) as image:
            kernel = _parse_kernel(image, kernel_path)
            _check_fits(kernel, ram, kernel_path)
            command_line = _command_line(cmdline, kernel.hdr)
            initrd_addr = _place_initrd(len(initrd), kernel, ram, initrd_path) if initrd else 0
            params = _boot_params(kernel.hdr, e820, initrd_addr, len(initrd), rsdp_addr)
            _write_segments(mem, image, kernel.segments)
    except OSError as error:
        raise FerryError(f"cannot read kernel {kernel_path}: {error.strerror or error}") from None
    mem.write(layout.CMDLINE, command_line)
    if initrd:
        mem.write(initrd_addr, initrd)
    mem.write(layout.ZERO_PAGE, bytes(params))
    return LinuxEntry(rip=kernel.entry, boot_params_addr=layout.ZERO_PAGE)


def _parse_kernel(image, path) -> _Kernel:
    if _is_bzimage(image):
        return _bzimage(image, path)
    if _is_vmlinux(image):
        return _vmlinux(image, path)
    raise FerryError(f"{path} is not a Linux kernel (neither a bzImage nor an ELF vmlinux with a Linux note)")


def _write_segments(mem: GuestMemory, image, segments) -> None:
    for gpa, offset, filesz, memsz in segments:
        mem.write(gpa, image[offset:offset + filesz])
        if memsz > filesz:
            mem.write(gpa + filesz, bytes(memsz - filesz))


# ---------------------------------------------------------------- bzImage

def _bzimage(image, path) -> _Kernel:
    hdr = _setup_header(image)
    version = f"{hdr.version >> 8}.{hdr.version & 0xFF:02d}"
    if hdr.version < MIN_PROTOCOL:
        raise FerryError(f"{path}: boot protocol {version} is too old (Ferry needs 2.06 or later)")
    if not hdr.loadflags & LOADED_HIGH:
        raise FerryError(f"{path} is a zImage, which loads below 1 MiB; build a bzImage")
    if hdr.version < XLOADFLAGS_PROTOCOL or not hdr.xloadflags & XLF_KERNEL_64:
        raise FerryError(f"{path} has no 64-bit entry point (boot protocol {version}, XLF_KERNEL_64 not set)")
    setup_sects = hdr.setup_sects or 4    # 0 means 4 on every protocol version
    offset = (setup_sects + 1) * 512
    size = len(image) - offset
    if size < max(hdr.syssize * 16, STARTUP_64_OFFSET + 1):
        raise FerryError(f"{path} is truncated: the header promises {hdr.syssize * 16} bytes "
                         f"of kernel after the setup code, the file has {max(size, 0)}")
    load = layout.HIGH_MEMORY
    runtime = _bzimage_runtime_start(hdr, load)
    end = max(load + size, runtime + hdr.init_size)
    hdr.code32_start = load
    return _Kernel(hdr, [(load, offset, size, size)], load + STARTUP_64_OFFSET, load, end)


def _setup_header(image) -> SetupHeader:
    # The header runs from 0x1F1 to 0x202 plus the byte at 0x201 (the jump's
    # displacement); copy that much, never more, so fields a newer kernel
    # adds past our struct stay as the kernel wrote them and fields an older
    # kernel lacks stay zero.
    length = min(0x202 + image[0x201] - SETUP_HEADER_OFFSET, ctypes.sizeof(SetupHeader))
    hdr = SetupHeader()
    ctypes.memmove(ctypes.addressof(hdr), bytes(image[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + length]), length)
    return hdr


def _bzimage_runtime_start(hdr: SetupHeader, load: int) -> int:
    """Where the decompressor puts the kernel, which needs init_size bytes from there.

    A relocatable kernel runs at its load address rounded up to
    kernel_alignment, but never below the address it was linked for
    (pref_address); a fixed one always moves to pref_address.
    """
    if hdr.relocatable_kernel:
        align = hdr.kernel_alignment or 1
        return max(_align_up(load, align), hdr.pref_address)
    return hdr.pref_address or load


# ---------------------------------------------------------------- vmlinux

def _vmlinux(image, path) -> _Kernel:
    entry, segments = _elf_load_segments(image, path)
    if not segments:
        raise FerryError(f"{path}: the ELF kernel has no loadable segments")
    start = min(gpa for gpa, _, _, _ in segments)
    end = max(gpa + memsz for gpa, _, _, memsz in segments)
    if start < layout.HIGH_MEMORY:
        raise FerryError(f"{path}: the ELF kernel loads at {start:#x}, below 1 MiB")
    # No setup header in the file: describe the image the way its bzImage would.
    hdr = SetupHeader(boot_flag=BOOT_FLAG, header=HDRS, version=XLOADFLAGS_PROTOCOL,
                      loadflags=LOADED_HIGH, code32_start=start,
                      initrd_addr_max=VMLINUX_INITRD_ADDR_MAX, kernel_alignment=VMLINUX_KERNEL_ALIGNMENT,
                      xloadflags=XLF_KERNEL_64, cmdline_size=LINUX_COMMAND_LINE_SIZE - 1,
                      pref_address=start, init_size=end - start)
    return _Kernel(hdr, segments, entry, start, end)


def _elf_load_segments(image, path):
    entry, headers = elf.program_headers(image)
    segments = [(h.paddr, h.offset, h.filesz, h.memsz, h.vaddr) for h in elf.loadable(headers, image, path)]
    return _physical_entry(entry, segments, path), [segment[:4] for segment in segments]


def _physical_entry(entry: int, segments, path) -> int:
    # x86-64 vmlinux links e_entry as a physical address (phys_startup_64);
    # accept a virtual one too by translating it through its segment.
    for paddr, _offset, _filesz, memsz, _vaddr in segments:
        if paddr <= entry < paddr + memsz:
            return entry
    for paddr, _offset, _filesz, memsz, vaddr in segments:
        if vaddr <= entry < vaddr + memsz:
            return paddr + entry - vaddr
    raise FerryError(f"{path}: ELF entry point {entry:#x} is in no loadable segment")


# ---------------------------------------------------------------- ELF parsing

def _note_owners(image):
    _entry, headers = elf.program_headers(image)
    for header in headers:
        if header.kind == elf.PT_NOTE:
            yield from _owners_in(image, header.offset, min(header.offset + header.filesz, len(image)))


def _owners_in(image, position: int, end: int):
    while position + 12 <= end:
        namesz, descsz, _type = struct.unpack_from("<III", image, position)
        name = bytes(image[position + 12:position + 12 + namesz]).rstrip(b"\0")
        yield name
        position += 12 + _align_up(namesz, 4) + _align_up(descsz, 4)


# ---------------------------------------------------------------- placement

def _check_fits(kernel: _Kernel, ram, path) -> None:
    if not _inside_ram(kernel.start, kernel.end, ram):
        raise FerryError(
            f"kernel {os.path.basename(path)} needs guest RAM {kernel.start:#x}-{kernel.end:#x} "
            f"({_mib(kernel.end)} MiB), which the VM does not have: give it more memory")


def _inside_ram(start: int, end: int, ram) -> bool:
    return any(low <= start and end <= high for low, high in ram)


def _place_initrd(size: int, kernel: _Kernel, ram, path) -> int:
    """The highest page-aligned address for the initrd, above the kernel and below its limits.

    High, because the kernel decompresses and sets itself up upwards from
    its load address, and below initrd_addr_max and 4 GiB, because
    ramdisk_image is 32 bits wide for kernels that do not read ext_ramdisk_image.
    """
    limit = min(kernel.hdr.initrd_addr_max + 1, 1 << 32)
    floor = _align_up(kernel.end, layout.PAGE_SIZE)
    best = None
    for low, high in ram:
        top = min(high, limit)
        addr = _align_down(top - size, layout.PAGE_SIZE)
        if addr >= max(low, floor) and (best is None or addr > best):
            best = addr
    if best is None:
        raise FerryError(
            f"initrd {os.path.basename(path)} ({_mib(size)} MiB) does not fit in guest RAM between the kernel's "
            f"end at {kernel.end:#x} and {min(limit, max(high for _, high in ram)):#x}: give the VM more memory")
    return best


def _read_initrd(path) -> bytes:
    if path is None:
        return b""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise FerryError(f"cannot read initrd {path}: {error.strerror or error}") from None


def _command_line(cmdline: str, hdr: SetupHeader) -> bytes:
    data = cmdline.encode()
    if b"\0" in data:
        raise FerryError("kernel command line contains a NUL byte")
    limit = min(hdr.cmdline_size, layout.CMDLINE_MAX)
    if len(data) > limit:
        raise FerryError(f"kernel command line is {len(data)} bytes, this kernel takes at most {limit}")
    return data + b"\0"


# ---------------------------------------------------------------- boot_params

def _boot_params(hdr: SetupHeader, e820, initrd_addr: int, initrd_size: int, rsdp_addr: int) -> BootParams:
    params = BootParams()
    params.hdr = hdr
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED
    params.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP
    params.hdr.heap_end_ptr = HEAP_END_PTR
    params.hdr.vid_mode = VID_MODE_NORMAL
    params.hdr.cmd_line_ptr = layout.CMDLINE
    params.hdr.ramdisk_image = initrd_addr
    params.hdr.ramdisk_size = initrd_size
    params.acpi_rsdp_addr = rsdp_addr
    _fill_e820(params, e820)
    return params


def _fill_e820(params: BootParams, e820) -> None:
    if len(e820) > E820_MAX_ENTRIES:
        raise FerryError(f"memory map has {len(e820)} entries, boot_params holds {E820_MAX_ENTRIES}")
    for index, (addr, size, kind) in enumerate(e820):
        params.e820_table[index] = E820Entry(addr, size, kind)
    params.e820_entries = len(e820)


# ---------------------------------------------------------------- helpers

class _mapped:
    """A read-only mapping of a whole file, usable as a bytes-like object."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        with open(self.path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                self.map = None
                return b""
            self.map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        return self.map

    def __exit__(self, *exc):
        if self.map is not None:
            self.map.close()
        return False


def _u32(image, offset: int) -> int:
    return struct.unpack_from("<I", image, offset)[0]


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _align_down(value: int, align: int) -> int:
    return value // align * align


def _mib(value: int) -> int:
    return -(-value // layout.MIB)
