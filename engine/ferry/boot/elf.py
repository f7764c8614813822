"""ELF64 loading, and the Ferry ELF boot contract (docs/boot-contract.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import FerryError
from .. import layout
from .e820 import elf_e820_map

ELF_MAGIC = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB, EM_X86_64, PT_LOAD = 2, 1, 62, 1

BOOT_INFO_MAGIC = 0x59525246
BOOT_INFO_VERSION = 1
BOOT_INFO_HEADER = struct.Struct("<IIQIIQIIQ")
E820_ENTRY = struct.Struct("<QQII")
MAX_E820 = 32


@dataclass(frozen=True)
class Segment:
    paddr: int
    offset: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ElfImage:
    entry: int
    segments: tuple[Segment, ...]


def is_elf64(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(5)
    return head[:4] == ELF_MAGIC and len(head) == 5 and head[4] == ELFCLASS64


def parse_elf(data: bytes, name: str) -> ElfImage:
    if data[:4] != ELF_MAGIC or data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        raise FerryError(f"kernel {name}: not a little-endian ELF64 file")
    machine, = struct.unpack_from("<H", data, 18)
    if machine != EM_X86_64:
        raise FerryError(f"kernel {name}: ELF machine {machine} is not x86-64")
    entry, phoff = struct.unpack_from("<QQ", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    segments = []
    for index in range(phnum):
        kind, _flags, offset, _vaddr, paddr, filesz, memsz = struct.unpack_from(
            "<IIQQQQQ", data, phoff + index * phentsize)
        if kind == PT_LOAD and memsz:
            segments.append(Segment(paddr, offset, filesz, memsz))
    if not segments:
        raise FerryError(f"kernel {name}: no loadable segments")
    return ElfImage(entry, tuple(segments))


def load_elf(mem, path: Path, lowest: int = layout.HIGH_MEMORY) -> ElfImage:
    """Copy every PT_LOAD to its physical address; RAM is zero, so .bss needs nothing."""
    data = Path(path).read_bytes()
    image = parse_elf(data, str(path))
    for seg in image.segments:
        if seg.paddr < lowest or seg.paddr + seg.memsz > _ram_top(mem):
            raise FerryError(f"kernel {path}: segment at {seg.paddr:#x}+{seg.memsz:#x} "
                             f"is outside guest RAM from {lowest:#x}")
        mem.write(seg.paddr, data[seg.offset:seg.offset + seg.filesz])
    return image


def _ram_top(mem) -> int:
    return mem.regions[0].end


def write_boot_info(mem, cpu_count: int, cmdline: str, rsdp: int) -> int:
    """Write the boot-info block and command line; return the block's address."""
    encoded = cmdline.encode()
    if len(encoded) > layout.CMDLINE_MAX:
        raise FerryError(f"cmdline: {len(encoded)} bytes, at most {layout.CMDLINE_MAX} allowed")
    mem.write(layout.CMDLINE, encoded + b"\0")
    e820 = elf_e820_map(mem)
    header = BOOT_INFO_HEADER.pack(BOOT_INFO_MAGIC, BOOT_INFO_VERSION, mem.size, cpu_count,
                                   len(e820), layout.CMDLINE, len(encoded), 0, rsdp)
    body = b"".join(E820_ENTRY.pack(addr, size, kind, 0) for addr, size, kind in e820)
    mem.write(layout.BOOT_INFO, header + body)
    return layout.BOOT_INFO
