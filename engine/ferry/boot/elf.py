"""ELF64 loading, and the Ferry ELF boot contract (docs/boot-contract.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import FerryError
from .. import layout
from .e820 import elf_e820_map

ELF_MAGIC = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB, EM_X86_64, PT_LOAD, PT_NOTE = 2, 1, 62, 1, 4

BOOT_INFO_MAGIC = 0x59525246
BOOT_INFO_VERSION = 1
BOOT_INFO_HEADER = struct.Struct("<IIQIIQIIQ")
E820_ENTRY = struct.Struct("<QQII")


@dataclass(frozen=True)
class Segment:
    paddr: int
    offset: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ProgramHeader:
    kind: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ElfImage:
    entry: int
    segments: tuple[Segment, ...]


def is_elf64_x86(data) -> bool:
    return (len(data) >= 64 and bytes(data[:4]) == ELF_MAGIC and data[4] == ELFCLASS64
            and data[5] == ELFDATA2LSB and struct.unpack_from("<H", data, 18)[0] == EM_X86_64)


def program_headers(data) -> tuple[int, list[ProgramHeader]]:
    """The entry point and every program header; ``struct.error`` when they lie outside ``data``."""
    entry, phoff = struct.unpack_from("<QQ", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    if phentsize < 56 or phoff + phentsize * phnum > len(data):
        raise struct.error("program headers outside the file")
    headers = []
    for index in range(phnum):
        kind, _flags, offset, vaddr, paddr, filesz, memsz = struct.unpack_from(
            "<IIQQQQQ", data, phoff + index * phentsize)
        headers.append(ProgramHeader(kind, offset, vaddr, paddr, filesz, memsz))
    return entry, headers


def loadable(headers: list[ProgramHeader], data, name) -> list[ProgramHeader]:
    """The PT_LOAD headers with memory, each checked to lie inside the file."""
    found = [h for h in headers if h.kind == PT_LOAD and h.memsz]
    for header in found:
        if header.offset + header.filesz > len(data) or header.filesz > header.memsz:
            raise FerryError(f"kernel {name}: an ELF segment lies outside the file")
    return found


def parse_elf(data: bytes, name: str) -> ElfImage:
    if not is_elf64_x86(data):
        raise FerryError(f"kernel {name}: not a little-endian x86-64 ELF64 file")
    try:
        entry, headers = program_headers(data)
    except struct.error:
        raise FerryError(f"kernel {name}: its ELF program headers lie outside the file") from None
    segments = [Segment(h.paddr, h.offset, h.filesz, h.memsz) for h in loadable(headers, data, name)]
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
