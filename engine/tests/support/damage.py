"""Damaged and crafted snapshots: every way a snapshot folder can be wrong, as a corpus.

Each variant changes a copy of a good snapshot folder. Plain variants damage
files as a disk or a careless copy would; crafted ones rewrite a manifest
field and recompute the manifest checksum, as anyone can (xxh3 is not a MAC).
``words`` is what the refusal must name. ``digest_only`` marks damage that only
reading the whole memory can see (its digests, or decompressing it), which
``--no-verify`` skips by design. ``layout`` is the memory layout a variant
applies to (``raw``: format 1's memory.raw, ``chunks``: chunk files), none for
both; most chunk variants damage the last chunk file, and their refusal must
name it (``last_chunk``, taken before the damage).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ferry.memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST, digest
from ferry.snapshot import format as fmt
from ferry.snapshot.reader import MAX_MANIFEST, MAX_STATE

ZST = fmt.MEMORY_ZSTD


@dataclass(frozen=True)
class Damage:
    name: str
    harm: Callable[[Path], None]
    words: str
    digest_only: bool = False
    layout: str | None = None
    names_last_chunk: bool = False  # the refusal names the chunk file the variant damaged


def corpus(layout: str) -> dict[str, Damage]:
    return {name: damage for name, damage in CORPUS.items() if damage.layout in (None, layout)}


def last_chunk(folder: Path) -> str:
    """The path, inside the snapshot, of its chunk file of the highest index."""
    return f"{fmt.CHUNKS}/{max(int(name) for name in os.listdir(folder / fmt.CHUNKS))}"


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / fmt.MANIFEST).read_text())


def write_resigned(folder: Path, manifest) -> None:
    """Write ``manifest`` with its checksum recomputed, as a forger would."""
    if isinstance(manifest, dict):
        manifest.pop("manifest_checksum", None)
        manifest["manifest_checksum"] = fmt._manifest_digest(manifest)
    (folder / fmt.MANIFEST).write_text(json.dumps(manifest))


def resign(change: Callable[[dict, Path], None]) -> Callable[[Path], None]:
    def harm(folder: Path) -> None:
        manifest = manifest_of(folder)
        change(manifest, folder)
        write_resigned(folder, manifest)
    return harm


def flip_bit(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x10]))


def first_data(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA)
    finally:
        os.close(fd)


def _replace(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def harm(folder: Path) -> None:
        path = folder / name
        path.unlink()
        make(path)
    return harm


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _zero_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _directory(path: Path) -> None:
    path.mkdir()


def _link_inside(name: str) -> Callable[[Path], None]:
    """The file moved aside and a symlink to it in its place: even a link inside the folder is refused."""
    def harm(folder: Path) -> None:
        os.rename(folder / name, folder / "elsewhere")
        (folder / name).symlink_to("elsewhere")
    return harm


def _truncate(name: str, size: int | Callable[[int], int]) -> Callable[[Path], None]:
    def harm(folder: Path) -> None:
        path = folder / name
        os.truncate(path, size(path.stat().st_size) if callable(size) else size)
    return harm


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _entry(manifest: dict, name: str) -> dict:
    return next(e for e in manifest["sections"] if e["name"] == name)


def replace_section(manifest: dict, folder: Path, name: str, data: bytes) -> None:
    """Section ``name`` holds ``data`` now; offsets and checksums in ``manifest`` follow."""
    state = (folder / fmt.STATE).read_bytes()
    parts, offset = [], 0
    for entry in manifest["sections"]:
        raw = data if entry["name"] == name else state[entry["offset"]:entry["offset"] + entry["length"]]
        entry.update(offset=offset, length=len(raw), checksum=digest(raw))
        parts.append(raw)
        offset += len(raw)
    (folder / fmt.STATE).write_bytes(b"".join(parts))


def _set_section(name: str, data: bytes):
    """Replace section ``name``'s bytes and fix every checksum: only decoding can refuse it."""
    return resign(lambda manifest, folder: replace_section(manifest, folder, name, data))


def _vcpu_with(**values):
    """vcpu.0 with some of its values replaced, every checksum fixed."""
    def harm(folder: Path) -> None:
        entry = _entry(manifest_of(folder), "vcpu.0")
        state = (folder / fmt.STATE).read_bytes()
        section = json.loads(state[entry["offset"]:entry["offset"] + entry["length"]])
        section.update(values)
        _set_section("vcpu.0", json.dumps(section).encode())(folder)
    return harm


def _memory(**values):
    return resign(lambda m, _: m["memory"].update(values))


def _definition(**values):
    return resign(lambda m, _: m["definition"].update(values))


def _field(key: str, value):
    return resign(lambda m, _: m.update({key: value}))


def _section_field(section: str, **values):
    return resign(lambda m, _: _entry(m, section).update(values))


def _drop_section(name: str):
    return resign(lambda m, _: m["sections"].remove(_entry(m, name)))


def _deep(depth: int):
    return "[" * depth + "]" * depth


def _shift_chunks(manifest: dict, _) -> None:
    manifest["memory"]["chunks"] = manifest["memory"]["chunks"][1:] + manifest["memory"]["chunks"][:1]


def _overlap(manifest: dict, _) -> None:
    manifest["sections"][1]["offset"] = 0


def _append_state_garbage(manifest: dict, folder: Path) -> None:
    with open(folder / fmt.STATE, "ab") as handle:
        handle.write(b"extra")


def _chunk(make: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda folder: make(folder / last_chunk(folder))


def _chunk_replaced(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def harm(folder: Path) -> None:
        path = folder / last_chunk(folder)
        path.unlink()
        make(path)
    return harm


def _chunk_linked_inside(folder: Path) -> None:
    path = folder / last_chunk(folder)
    os.rename(path, folder / "elsewhere")
    path.symlink_to("../elsewhere")


def _chunk_extra(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / fmt.CHUNKS / name).write_bytes(bytes(CHUNK_SIZE))


def _zero_chunk_file(folder: Path) -> None:
    index = manifest_of(folder)["memory"]["chunks"].index(ZERO_CHUNK_DIGEST)
    (folder / fmt.CHUNKS / str(index)).write_bytes(bytes(CHUNK_SIZE))


def _chunks_replaced(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def harm(folder: Path) -> None:
        os.rename(folder / fmt.CHUNKS, folder / "elsewhere")
        make(folder / fmt.CHUNKS)
    return harm


def _chunks_to_elsewhere(path: Path) -> None:
    path.symlink_to("elsewhere")


def _chunk_claimed_zero(manifest: dict, folder: Path) -> None:
    manifest["memory"]["chunks"][int(last_chunk(folder).split("/")[1])] = ZERO_CHUNK_DIGEST


def _zstd_claim(manifest: dict, folder: Path) -> None:
    manifest["memory"].update(compression="zstd", file=ZST, compressed_bytes=1, compress_ms=1.0)
    os.rename(folder / fmt.MEMORY, folder / ZST)


def _size_half(manifest: dict, _) -> None:
    memory = manifest["memory"]
    memory["size"] //= 2
    memory["chunks"] = memory["chunks"][:len(memory["chunks"]) // 2]


def _size_and_definition_half(manifest: dict, folder: Path) -> None:
    _size_half(manifest, folder)
    manifest["definition"]["memory"] //= 2


def _vcpus_two(manifest: dict, _) -> None:
    manifest["definition"]["vcpus"] = 2


def _swap_vcpu_name(manifest: dict, _) -> None:
    _entry(manifest, "vcpu.0")["name"] = "vcpu.1"


PLAIN = [
    *(Damage(f"manifest bit {offset}", lambda f, o=offset: flip_bit(f / fmt.MANIFEST, o), "manifest.json")
      for offset in (1, 60, 200, 400)),
    Damage("manifest truncated", _truncate(fmt.MANIFEST, lambda n: n // 2), "manifest.json"),
    Damage("manifest empty", _truncate(fmt.MANIFEST, 0), "manifest.json: not valid JSON"),
    Damage("manifest missing", lambda f: (f / fmt.MANIFEST).unlink(), "manifest.json: missing"),
    Damage("manifest a directory", _replace(fmt.MANIFEST, _directory), "manifest.json: a directory"),
    Damage("manifest a FIFO", _replace(fmt.MANIFEST, _fifo), "manifest.json: a FIFO"),
    Damage("manifest links to /dev/zero", _replace(fmt.MANIFEST, _zero_link), "manifest.json: a symlink"),
    Damage("manifest huge", _truncate(fmt.MANIFEST, MAX_MANIFEST + 1), "manifest.json: 16777217 bytes"),
    Damage("manifest deeply nested", _write(fmt.MANIFEST, _deep(100000).encode()), "manifest.json"),
    Damage("manifest not utf-8", _write(fmt.MANIFEST, b"\xff\xfe{\x00"), "manifest.json: not valid JSON"),
    Damage("manifest a list", _write(fmt.MANIFEST, b"[1, 2]"), "manifest.json: not a Ferry snapshot"),
    *(Damage(f"state bit {offset}", lambda f, o=offset: flip_bit(f / fmt.STATE, o), "checksum mismatch in state.bin")
      for offset in (0, 40, 5000)),
    Damage("state truncated", _truncate(fmt.STATE, lambda n: n - 100), "state.bin"),
    Damage("state empty", _truncate(fmt.STATE, 0), "state.bin"),
    Damage("state extended", _truncate(fmt.STATE, lambda n: n + 4096), "state.bin"),
    Damage("state missing", lambda f: (f / fmt.STATE).unlink(), "state.bin: missing"),
    Damage("state a directory", _replace(fmt.STATE, _directory), "state.bin: a directory"),
    Damage("state a FIFO", _replace(fmt.STATE, _fifo), "state.bin: a FIFO"),
    Damage("state links to /dev/zero", _replace(fmt.STATE, _zero_link), "state.bin: a symlink"),
    Damage("state links inside the folder", _link_inside(fmt.STATE), "state.bin: a symlink"),
    Damage("state huge", _truncate(fmt.STATE, MAX_STATE + 1), "state.bin: 67108865 bytes"),
    Damage("memory bit", lambda f: flip_bit(f / fmt.MEMORY, first_data(f / fmt.MEMORY) + 12345),
           "memory.raw: chunk", digest_only=True, layout="raw"),
    Damage("memory truncated", _truncate(fmt.MEMORY, 2**20), "memory.raw: 1048576 bytes", layout="raw"),
    Damage("memory one page short", _truncate(fmt.MEMORY, lambda n: n - 4096), "truncated", layout="raw"),
    Damage("memory extended", _truncate(fmt.MEMORY, lambda n: n + 4096), "memory.raw", layout="raw"),
    Damage("memory empty", _truncate(fmt.MEMORY, 0), "memory.raw: 0 bytes", layout="raw"),
    Damage("memory missing", lambda f: (f / fmt.MEMORY).unlink(), "memory.raw: missing", layout="raw"),
    Damage("memory a directory", _replace(fmt.MEMORY, _directory), "memory.raw: a directory", layout="raw"),
    Damage("memory a FIFO", _replace(fmt.MEMORY, _fifo), "memory.raw: a FIFO", layout="raw"),
    Damage("memory links to /dev/zero", _replace(fmt.MEMORY, _zero_link), "memory.raw: a symlink", layout="raw"),
    Damage("memory links inside the folder", _link_inside(fmt.MEMORY), "memory.raw: a symlink", layout="raw"),
    Damage("chunk bit", _chunk(lambda p: flip_bit(p, first_data(p) + 12345)), "checksum mismatch",
           digest_only=True, layout="chunks", names_last_chunk=True),
    Damage("chunk truncated", _chunk(lambda p: os.truncate(p, 2**20)), "1048576 bytes, a chunk file has exactly",
           layout="chunks", names_last_chunk=True),
    Damage("chunk one page short", _chunk(lambda p: os.truncate(p, CHUNK_SIZE - 4096)), "a chunk file has exactly",
           layout="chunks", names_last_chunk=True),
    Damage("chunk extended", _chunk(lambda p: os.truncate(p, CHUNK_SIZE + 4096)), "a chunk file has exactly",
           layout="chunks", names_last_chunk=True),
    Damage("chunk empty", _chunk(lambda p: os.truncate(p, 0)), "0 bytes", layout="chunks", names_last_chunk=True),
    Damage("chunk missing", _chunk(lambda p: p.unlink()), "missing", layout="chunks", names_last_chunk=True),
    Damage("chunk a directory", _chunk_replaced(_directory), "a directory", layout="chunks", names_last_chunk=True),
    Damage("chunk a FIFO", _chunk_replaced(_fifo), "a FIFO", layout="chunks", names_last_chunk=True),
    Damage("chunk links to /dev/zero", _chunk_replaced(_zero_link), "a symlink", layout="chunks", names_last_chunk=True),
    Damage("chunk links inside the folder", _chunk_linked_inside, "a symlink", layout="chunks", names_last_chunk=True),
    Damage("chunk past the end of memory", _chunk_extra("99999"), "chunks/99999: not a chunk of this snapshot",
           layout="chunks"),
    Damage("chunk named with dots", _chunk_extra("..x"), "chunks/..x: not a chunk", layout="chunks"),
    Damage("chunk named with a leading zero", _chunk_extra("01"), "chunks/01: not a chunk", layout="chunks"),
    Damage("chunk file of a zero chunk", _zero_chunk_file, "is all zero in the manifest", layout="chunks"),
    Damage("chunks missing", lambda f: shutil.rmtree(f / fmt.CHUNKS), "chunks: missing",
           layout="chunks"),
    Damage("chunks a symlink", _chunks_replaced(_chunks_to_elsewhere), "chunks: cannot open", layout="chunks"),
    Damage("chunks a file", _chunks_replaced(lambda p: p.write_bytes(b"x")), "chunks: cannot open",
           layout="chunks"),
]

CRAFTED = [
    # the chunk list and the memory size
    Damage("chunks one short", resign(lambda m, _: m["memory"]["chunks"].pop()), "memory.chunks"),
    Damage("chunks one more", resign(lambda m, _: m["memory"]["chunks"].append(ZERO_CHUNK_DIGEST)),
           "memory.chunks"),
    Damage("chunks empty", _memory(chunks=[]), "memory.chunks"),
    Damage("chunks not a list", _memory(chunks="0" * 16), "memory.chunks"),
    Damage("chunk not hex", resign(lambda m, _: m["memory"]["chunks"].__setitem__(0, "z" * 16)),
           "memory.chunks[0]"),
    Damage("chunk a number", resign(lambda m, _: m["memory"]["chunks"].__setitem__(1, 7)), "memory.chunks[1]"),
    Damage("chunks shifted", resign(_shift_chunks), "chunk", digest_only=True),
    Damage("chunk claimed all zero", resign(_chunk_claimed_zero), "is all zero in the manifest", layout="chunks", names_last_chunk=True),
    Damage("size half with chunks", resign(_size_half), "memory.size"),
    Damage("size and definition half", resign(_size_and_definition_half), "memory.raw", layout="raw"),
    Damage("size smaller", resign(lambda m, _: m["memory"].update(size=m["memory"]["size"] - CHUNK_SIZE)),
           "memory.chunks"),
    Damage("size larger", resign(lambda m, _: m["memory"].update(size=m["memory"]["size"] + CHUNK_SIZE)),
           "memory.chunks"),
    Damage("size zero", _memory(size=0), "memory.size"),
    Damage("size negative", _memory(size=-CHUNK_SIZE), "memory.size"),
    Damage("size text", _memory(size="33554432"), "memory.size"),
    Damage("size float", _memory(size=33554432.0), "memory.size"),
    Damage("size true", _memory(size=True), "memory.size"),
    Damage("size not chunk aligned", resign(lambda m, _: m["memory"].update(size=m["memory"]["size"] + 4096)),
           "memory.size"),
    Damage("size of a petabyte", _memory(size=2**50), "memory.size"),
    Damage("chunk size smaller", _memory(chunk_size=4096), "memory.chunk_size"),
    Damage("chunk size text", _memory(chunk_size="2097152"), "memory.chunk_size"),
    # memory.file: only the names the format defines
    Damage("memory file absolute", _memory(file="/etc/passwd"), "memory.file"),
    Damage("memory file dev zero", _memory(file="/dev/zero"), "memory.file"),
    Damage("memory file parent", _memory(file="../good/memory.raw"), "memory.file"),
    Damage("memory file in a subfolder", _memory(file="sub/memory.raw"), "memory.file"),
    Damage("memory file state.bin", _memory(file="state.bin"), "memory.file"),
    Damage("memory file empty", _memory(file=""), "memory.file"),
    Damage("memory file a number", _memory(file=3), "memory.file"),
    Damage("memory file zst uncompressed", _memory(file=ZST), "memory.file"),
    Damage("compression gzip", _memory(compression="gzip"), "memory.compression"),
    Damage("compression zstd on raw data", resign(_zstd_claim), "memory.raw.zst",
           digest_only=True, layout="raw"),
    Damage("memory unknown key", _memory(extra=1), "memory: unknown key"),
    Damage("memory missing size", resign(lambda m, _: m["memory"].pop("size")), "memory: missing key 'size'"),
    Damage("memory not a mapping", _field("memory", [1]), "memory: expected a mapping"),
    # sections
    Damage("section vcpu.0 dropped", _drop_section("vcpu.0"), "section"),
    Damage("section rtc dropped", _drop_section("rtc"), "section"),
    Damage("sections empty", _field("sections", []), "sections"),
    Damage("sections not a list", _field("sections", {"vcpu.0": 1}), "sections"),
    Damage("section twice", resign(lambda m, _: m["sections"].append(dict(m["sections"][0]))), "sections"),
    Damage("section overlaps", resign(_overlap), "offset"),
    Damage("section offset past the end", _section_field("clock", offset=10**9), "offset"),
    Damage("section offset negative", _section_field("vcpu.0", offset=-1), "offset"),
    Damage("section longer than state", _section_field("acpi.pm", length=10**6), "length"),
    Damage("section length text", _section_field("pit", length="112"), "length"),
    Damage("section version text", _section_field("pit", version="1"), "version"),
    Damage("section version zero", _section_field("pit", version=0), "version"),
    Damage("section version true", _section_field("pit", version=True), "version"),
    Damage("section newer", _section_field("serial.com1", version=99), "section serial.com1"),
    Damage("section unknown name", _section_field("i8042", name="gpu.0"), "section gpu.0"),
    Damage("section name a number", _section_field("i8042", name=5), "name"),
    Damage("section renamed to a missing vCPU", resign(_swap_vcpu_name), "section vcpu.1"),
    Damage("section checksum not hex", _section_field("pit", checksum="nothex"), "checksum"),
    Damage("section extra key", _section_field("pit", extra=1), "unknown key"),
    Damage("state with trailing bytes", resign(_append_state_garbage), "sections"),
    # what is inside the sections (checksums made to match)
    Damage("vcpu section not json", _set_section("vcpu.0", b"\x00garbage"), "section vcpu.0"),
    Damage("vcpu section a list", _set_section("vcpu.0", b"[]"), "section vcpu.0"),
    Damage("vcpu section deeply nested", _set_section("vcpu.0", _deep(100000).encode()), "section vcpu.0"),
    Damage("vcpu regs short", _vcpu_with(regs="00" * 8), "section vcpu.0"),
    Damage("vcpu regs not hex", _vcpu_with(regs="zz" * 144), "section vcpu.0"),
    Damage("vcpu regs a number", _vcpu_with(regs=1), "section vcpu.0"),
    Damage("vcpu msrs a list", _vcpu_with(msrs=[1]), "section vcpu.0"),
    Damage("vcpu msr index not hex", _vcpu_with(msrs={"zz": 1}), "section vcpu.0"),
    Damage("vcpu msr value too big", _vcpu_with(msrs={"0x10": 2**64}), "section vcpu.0"),
    Damage("vcpu mp_state text", _vcpu_with(mp_state="0"), "section vcpu.0"),
    Damage("vcpu extra key", _vcpu_with(extra=1), "section vcpu.0"),
    Damage("pit section short", _set_section("pit", bytes(100)), "section pit"),
    Damage("clock section empty", _set_section("clock", b""), "section clock"),
    Damage("serial section unknown field", _set_section("serial.com1", b'{"nothing": 1}'), "section serial.com1"),
    Damage("serial section a list", _set_section("serial.com1", b"[1]"), "section serial.com1"),
    Damage("rtc section not json", _set_section("rtc", b"{"), "section rtc"),
    Damage("serial register text", _set_section("serial.com1", b'{"ier": "x"}'), "section serial.com1"),
    Damage("rtc alarms of text", _set_section("rtc", b'{"alarms": ["a"]}'), "section rtc"),
    Damage("i8042 flag a number", _set_section("i8042", b'{"output_full": 1}'), "section i8042"),
    # the embedded definition
    Damage("definition two vCPUs", resign(_vcpus_two), "section vcpu.1"),
    Damage("definition no vCPUs", _definition(vcpus=0), "definition: vcpus"),
    Damage("definition vcpus text", _definition(vcpus="1"), "definition: vcpus"),
    Damage("definition 999 vCPUs", _definition(vcpus=999), "definition: vcpus"),
    Damage("definition memory doubled", resign(lambda m, _: m["definition"].update(
        memory=m["definition"]["memory"] * 2)), "memory.size"),
    Damage("definition memory odd", _definition(memory=3), "definition: memory"),
    Damage("definition bad name", _definition(name="../x"), "definition: name"),
    Damage("definition unknown key", _definition(disks=[]), "definition: 'disks': unknown key"),
    Damage("definition kernel relative", _definition(kernel="kernel.elf"), "definition: kernel"),
    Damage("definition kernel missing", _definition(kernel="/nonexistent/kernel.elf"), "definition: kernel"),
    Damage("definition not a mapping", _field("definition", "vm1"), "definition"),
    Damage("definition missing", resign(lambda m, _: m.pop("definition")), "missing key 'definition'"),
    # the other fields
    Damage("unknown top-level key", _field("disks", []), "unknown key"),
    Damage("tags missing", resign(lambda m, _: m.pop("tags")), "missing key 'tags'"),
    Damage("tags not a list", _field("tags", "a"), "tags"),
    Damage("tag a number", _field("tags", [1]), "tags[0]"),
    Damage("tags deeply nested", _field("tags", json.loads(_deep(50))), "manifest.json"),
    Damage("id a number", _field("id", 7), "id"),
    Damage("id empty", _field("id", ""), "id"),
    Damage("origin not a mapping", _field("origin", "manual"), "origin"),
    Damage("origin kind a number", _field("origin", {"kind": 1}), "origin.kind"),
    Damage("created a number", _field("created", 5), "created"),
    Damage("engine version huge", _field("engine_version", "9" * 100000), "engine_version"),
    Damage("format version zero", _field("format_version", 0), "format_version"),
    Damage("format version newer", _field("format_version", fmt.FORMAT_VERSION + 1),
           f"format version {fmt.FORMAT_VERSION + 1}"),
    Damage("format version 1 with chunks", _field("format_version", 1), "memory.file", layout="chunks"),
    Damage("format version text", _field("format_version", "1"), "format_version"),
    Damage("checksum md5", _field("checksum", "md5"), "checksum"),
    Damage("magic wrong", _field("magic", "other"), "not a Ferry snapshot"),
    Damage("save pause text", resign(lambda m, _: m["save"].update(pause_ms="fast")), "save.pause_ms"),
    Damage("save pause infinite", resign(lambda m, _: m["save"].update(pause_ms=float("inf"))), "save.pause_ms"),
    Damage("save mode unknown", resign(lambda m, _: m["save"].update(mode="magic")), "save.mode"),
    Damage("save rounds not a list", resign(lambda m, _: m["save"].update(rounds=5)), "save.rounds"),
    Damage("manifest a resigned list", lambda f: write_resigned(f, [manifest_of(f)]), "manifest.json"),
]

CORPUS = {damage.name: damage for damage in PLAIN + CRAFTED}
assert len(CORPUS) == len(PLAIN) + len(CRAFTED), "two variants share a name"
