"""Reading a snapshot: the one place its files and every manifest field are checked.

Anyone can rewrite a manifest and recompute its checksum (xxh3 is not a MAC),
so nothing here trusts it: each file is opened without following links or
blocking and checked with fstat before it is read, reads are bounded, and
every field is checked for type, range and agreement with the others
before any other code sees the manifest. A refusal is one line naming the
file or field and what is allowed.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import FerryError
from ..machine import state
from ..machine.sections import REGISTRY
from ..memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST, digest
from ..memory.image import ChunkFiles, MemoryImage, MemoryImageError
from . import format as fmt
from .format import CHUNKS, MANIFEST, MEMORY, MEMORY_ZSTD, STATE, SnapshotError

MAX_MANIFEST = 16 * 2**20  # a 1 TiB guest's chunk list is about 12 MiB
MAX_STATE = 64 * 2**20
MAX_MEMORY = 2**40
MAX_DEPTH = 4  # manifest > memory > chunks > digest: the deepest the format goes
MAX_TEXT = 256
MAX_LIST = 1024
MEMORY_FILES = {None: MEMORY, "zstd": MEMORY_ZSTD}  # format version 1
CHUNKED_FILES = {None: CHUNKS, "zstd": MEMORY_ZSTD}  # from version 2 (a compressed image stays one file)
HEX_DIGEST = re.compile(r"^[0-9a-f]{16}$")
TOP_KEYS = ("magic", "format_version", "checksum", "manifest_checksum", "engine_version", "id", "created",
            "origin", "tags", "definition", "sections", "memory")
SECTION_KEYS = ("name", "version", "offset", "length", "checksum")
MEMORY_KEYS = ("file", "size", "chunk_size", "chunks", "compression")
ZSTD_KEYS = ("compressed_bytes", "compress_ms")
SAVE_KEYS = ("mode", "pause_ms", "total_ms", "rounds", "bytes_written", "disk_bytes", "shared_bytes")
SAVE_MODES = ("live", "stop-the-world")

# Checks a definition (a dict) and returns it as an object with ``vcpus`` and
# ``memory`` (MiB); the runtime passes its own validator, the layer above this one.
DefinitionCheck = Callable[[dict], object]


@dataclass(frozen=True)
class Snapshot:
    folder: Path
    manifest: dict
    definition: object
    sections: dict[str, state.Section]

    @property
    def memory_file(self) -> str:
        return self.manifest["memory"]["file"]

    @property
    def memory_size(self) -> int:
        return self.manifest["memory"]["size"]

    @property
    def compressed(self) -> bool:
        return self.manifest["memory"]["compression"] == "zstd"

    @property
    def chunked(self) -> bool:
        return self.memory_file == CHUNKS

    @property
    def digests(self) -> list[str]:
        return self.manifest["memory"]["chunks"]


# --- files ---

def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_folder(folder: Path) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SnapshotError(f"{folder.name}: no such snapshot folder") from None
    except OSError as err:
        raise SnapshotError(f"{folder.name}: cannot open the snapshot folder ({err.strerror}); "
                            "a plain directory is required") from None


def open_part(folder_fd: int, name: str, shown: str | None = None) -> tuple[int, int]:
    """(fd, size) of a regular file of the folder; messages call it ``shown`` (its path
    in the snapshot) if given. The lstat refuses a FIFO or device before it is opened;
    the fstat checks what was opened (it may have been swapped)."""
    shown = shown or name
    try:
        found = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise SnapshotError(f"{shown}: missing") from None
    if not stat.S_ISREG(found.st_mode):
        raise SnapshotError(f"{shown}: {_kind(found.st_mode)}, a regular file is required")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError as err:
        raise SnapshotError(f"{shown}: cannot open ({err.strerror}), a regular file is required") from None
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise SnapshotError(f"{shown}: {_kind(opened.st_mode)}, a regular file is required")
    return fd, opened.st_size


def open_subfolder(folder_fd: int, name: str) -> int:
    """A plain directory inside the snapshot folder (not a symlink)."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    except FileNotFoundError:
        raise SnapshotError(f"{name}: missing") from None
    except OSError as err:
        raise SnapshotError(f"{name}: cannot open ({err.strerror}), a plain directory is required") from None


def read_part(folder_fd: int, name: str, limit: int) -> bytes:
    fd, size = open_part(folder_fd, name)
    try:
        if size > limit:
            raise SnapshotError(f"{name}: {size} bytes, at most {limit} allowed")
        parts, got = [], 0
        while got <= limit:
            part = os.read(fd, limit + 1 - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        if got > limit:
            raise SnapshotError(f"{name}: more than {limit} bytes, at most {limit} allowed")
        return b"".join(parts)
    finally:
        os.close(fd)


# --- the manifest ---

def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(where: str, problem: str) -> SnapshotError:
    return SnapshotError(f"{MANIFEST}: {where}: {problem}")


def _depth(value) -> int:
    """Nesting depth, without recursion (so no input can raise RecursionError)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(data: bytes, name: str, max_depth: int = MAX_DEPTH):
    try:
        value = json.loads(data)
    except RecursionError:
        raise SnapshotError(f"{name}: JSON nested deeper than {max_depth} levels") from None
    except ValueError as err:
        raise SnapshotError(f"{name}: not valid JSON ({str(err).splitlines()[0]})") from None
    if _depth(value) > max_depth:
        raise SnapshotError(f"{name}: JSON nested deeper than {max_depth} levels")
    return value


def _int(value, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(where, f"{_show(value)} is not a whole number from {low} to {high}")
    return value


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _bad(where, f"{_show(value)} is not a number of at least 0")
    return value


def _text(value, where: str, limit: int = MAX_TEXT) -> str:
    # Printable only: names are quoted in one-line messages, where a newline would split them.
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise _bad(where, f"{_show(value)} is not printable text of 1 to {limit} characters")
    return value


def _one_line(text: str) -> str:
    """A message from elsewhere (the definition rules, a decoder) may quote control characters."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:300])


def _list(value, where: str, limit: int = MAX_LIST) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise _bad(where, f"expected a list of at most {limit} entries, got {_show(value)}")
    return value


def _keys(value, where: str, required: tuple, optional: tuple = ()) -> dict:
    if not isinstance(value, dict):
        raise _bad(where, f"expected a mapping, got {_show(value)}")
    missing = [key for key in required if key not in value]
    if missing:
        raise _bad(where, f"missing key {missing[0]!r}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise _bad(where, f"unknown key {_show(unknown[0])}, allowed: {', '.join(required + optional)}")
    return value


def _digest(value, where: str) -> str:
    if not isinstance(value, str) or not HEX_DIGEST.match(value):
        raise _bad(where, f"{_show(value)} is not an xxh3-64 digest (16 lowercase hex digits)")
    return value


def _check_header(manifest) -> None:
    """What says this is a Ferry manifest of a version this engine reads, unaltered."""
    if not isinstance(manifest, dict) or manifest.get("magic") != fmt.MAGIC:
        magic = manifest.get("magic") if isinstance(manifest, dict) else None
        raise SnapshotError(f"{MANIFEST}: not a Ferry snapshot (magic {_show(magic)})")
    if manifest.get("manifest_checksum") != fmt._manifest_digest(manifest):
        raise SnapshotError(f"{MANIFEST}: checksum mismatch, the manifest was altered or damaged")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > fmt.FORMAT_VERSION:
        raise SnapshotError(f"{MANIFEST}: format version {version} is newer than this engine's "
                            f"{fmt.FORMAT_VERSION}")
    _int(version, "format_version", 1, fmt.FORMAT_VERSION)
    if manifest.get("checksum") != fmt.CHECKSUM:
        raise _bad("checksum", f"{_show(manifest.get('checksum'))}, only {fmt.CHECKSUM!r} is allowed")


def _check_origin(origin) -> None:
    _keys(origin, "origin", ("kind",), ("policy", "periods", "time"))
    for key, value in origin.items():
        _text(value, f"origin.{key}")


def _check_save(save) -> None:
    _keys(save, "save", (), SAVE_KEYS)
    if "mode" in save and save["mode"] not in SAVE_MODES:
        raise _bad("save.mode", f"{_show(save['mode'])}, allowed: {', '.join(SAVE_MODES)}")
    for key in ("pause_ms", "total_ms"):
        if key in save:
            _number(save[key], f"save.{key}")
    for key in ("bytes_written", "disk_bytes"):
        if key in save:
            _int(save[key], f"save.{key}", 0, 2**63)
    for index, written in enumerate(_list(save.get("rounds", []), "save.rounds")):
        _int(written, f"save.rounds[{index}]", 0, 2**63)


def _check_memory(memory, version: int) -> None:
    compression = memory.get("compression") if isinstance(memory, dict) else None
    _keys(memory, "memory", MEMORY_KEYS, ZSTD_KEYS if compression == "zstd" else ())
    if not isinstance(compression, (str, type(None))) or compression not in MEMORY_FILES:
        raise _bad("memory.compression", f"{_show(compression)}, allowed: null or 'zstd'")
    files = CHUNKED_FILES if version >= fmt.CHUNKED_SINCE else MEMORY_FILES
    if memory["file"] != files[compression]:
        raise _bad("memory.file", f"{_show(memory['file'])}, must be {files[compression]!r} "
                   "(a plain name inside the snapshot folder)")
    size = _int(memory["size"], "memory.size", CHUNK_SIZE, MAX_MEMORY)
    if size % CHUNK_SIZE:
        raise _bad("memory.size", f"{size} is not a multiple of {CHUNK_SIZE} bytes")
    if type(memory["chunk_size"]) is not int or memory["chunk_size"] != CHUNK_SIZE:
        raise _bad("memory.chunk_size", f"{_show(memory['chunk_size'])}, this engine uses {CHUNK_SIZE}")
    count = math.ceil(size / CHUNK_SIZE)
    chunks = memory["chunks"]
    if not isinstance(chunks, list) or len(chunks) != count:
        length = len(chunks) if isinstance(chunks, list) else _show(chunks)
        raise _bad("memory.chunks", f"{length} entries, a memory of {size} bytes has {count}")
    for index, chunk in enumerate(chunks):
        _digest(chunk, f"memory.chunks[{index}]")
    if compression == "zstd":
        _int(memory["compressed_bytes"], "memory.compressed_bytes", 0, 2**63)
        _number(memory["compress_ms"], "memory.compress_ms")


def _check_sections(sections, state_size: int) -> list[dict]:
    """Entries well formed, named once each, back to back from offset 0 to the end of state.bin."""
    end, seen = 0, set()
    for index, entry in enumerate(_list(sections, "sections")):
        where = f"sections[{index}]"
        _keys(entry, where, SECTION_KEYS)
        name = _text(entry["name"], f"{where}.name", 64)
        if name in seen:
            raise _bad(f"{where}.name", f"section {name} appears twice")
        seen.add(name)
        _int(entry["version"], f"{where}.version", 1, 2**31)
        offset = _int(entry["offset"], f"{where}.offset", 0, MAX_STATE)
        length = _int(entry["length"], f"{where}.length", 0, MAX_STATE)
        if offset != end:
            raise _bad(f"{where}.offset", f"{offset}, section {name} must start at {end} (sections lie back to back)")
        end += length
        if end > state_size:
            raise _bad(f"{where}.length", f"section {name} ends at byte {end}, {STATE} has {state_size}")
        _digest(entry["checksum"], f"{where}.checksum")
    if end != state_size:
        raise _bad("sections", f"cover {end} bytes, {STATE} has {state_size}")
    return sections


def _check_section_set(vcpus: int, entries) -> None:
    """Exactly the sections of a machine of ``vcpus``, in versions this engine reads."""
    try:
        REGISTRY.check([(entry["name"], entry["version"]) for entry in entries], vcpus)
    except FerryError as err:
        raise SnapshotError(str(err)) from None


def _check_definition(values, check: DefinitionCheck, size: int):
    if not isinstance(values, dict):
        raise _bad("definition", f"expected a mapping, got {_show(values)}")
    try:
        definition = check(values)
    except FerryError as err:
        raise _bad("definition", _one_line(str(err))) from None
    if definition.memory * 2**20 != size:
        raise _bad("memory.size", f"{size} bytes, the definition says {definition.memory} MiB")
    return definition


def check_manifest(manifest, state_size: int, check: DefinitionCheck):
    """Every field of a parsed manifest; returns the checked definition."""
    _check_header(manifest)
    _keys(manifest, "manifest", TOP_KEYS, ("save", "parent"))
    _text(manifest["id"], "id", 128)
    if manifest.get("parent") is not None:
        _text(manifest["parent"], "parent", 128)  # for information: nothing reads the parent
    _text(manifest["engine_version"], "engine_version", 64)
    _text(manifest["created"], "created", 64)
    _check_origin(manifest["origin"])
    for index, tag in enumerate(_list(manifest["tags"], "tags")):
        _text(tag, f"tags[{index}]")
    if "save" in manifest:
        _check_save(manifest["save"])
    _check_memory(manifest["memory"], manifest["format_version"])
    _check_sections(manifest["sections"], state_size)
    definition = _check_definition(manifest["definition"], check, manifest["memory"]["size"])
    _check_section_set(definition.vcpus, manifest["sections"])
    return definition


# --- sections ---

def _first_line(err: Exception) -> str:
    lines = str(err).splitlines()
    return _one_line(lines[0][:120]) if lines else type(err).__name__


def read_sections(data: bytes, entries: list[dict], vcpus: int) -> dict[str, state.Section]:
    """The sections of ``state.bin``, each checked against its digest and decoded once,
    so damage inside a section is refused here, not in the middle of a restore."""
    sections = {}
    for entry in entries:
        name, raw = entry["name"], data[entry["offset"]:entry["offset"] + entry["length"]]
        if digest(raw) != entry["checksum"]:
            raise SnapshotError(f"section {name}: checksum mismatch in {STATE}")
        section = state.Section(name, entry["version"], raw)
        try:
            REGISTRY.decode(section, vcpus)
        except RecursionError:
            raise SnapshotError(f"section {name}: JSON nested too deeply") from None
        except FerryError as err:
            raise SnapshotError(_one_line(str(err))) from None
        except (ValueError, TypeError, KeyError) as err:
            raise SnapshotError(f"section {name}: cannot be decoded ({_first_line(err)})") from None
        sections[name] = section
    return sections


# --- the whole snapshot ---

@contextmanager
def _memory_checks():
    """The memory image's refusals are this reader's: one kind of error for a bad snapshot."""
    try:
        yield
    except MemoryImageError as err:
        raise SnapshotError(str(err)) from None


def open_memory(folder_fd: int, name: str, size: int, compressed: bool) -> MemoryImage:
    """The memory image, open and checked (a raw one must be exactly the guest's size)."""
    fd, _ = open_part(folder_fd, name)
    with _memory_checks():
        return MemoryImage(fd, name, size, compressed)


def open_chunk(chunks_fd: int, index: int) -> int:
    """One chunk file: a regular file of exactly one chunk (a shorter one would fault
    the guest, also with ``--no-verify``)."""
    shown = f"{CHUNKS}/{index}"
    fd, size = open_part(chunks_fd, str(index), shown)
    if size != CHUNK_SIZE:
        os.close(fd)
        raise SnapshotError(f"{shown}: {size} bytes, a chunk file has exactly {CHUNK_SIZE}")
    return fd


def _check_chunk_names(chunks_fd: int, digests: list[str]) -> None:
    """Exactly one file per chunk that is not all zero, named by its index: a name
    the manifest does not account for (another index, '..x', a chunk past the end
    of memory) is refused, as a copy mixed with another snapshot would be."""
    stored = {str(index) for index, value in enumerate(digests) if value != ZERO_CHUNK_DIGEST}
    names = set(os.listdir(chunks_fd))
    for name in sorted(names - stored):
        if name in {str(index) for index in range(len(digests))}:
            raise SnapshotError(f"{CHUNKS}/{name}: chunk {name} is all zero in the manifest, so it has no file")
        raise SnapshotError(f"{CHUNKS}/{_one_line(name[:60])}: not a chunk of this snapshot "
                            f"(its {len(digests)} chunks are named 0 to {len(digests) - 1})")
    for name in sorted(stored - names, key=int):
        raise SnapshotError(f"{CHUNKS}/{name}: missing")


def open_chunks(folder_fd: int, digests: list[str], size: int) -> ChunkFiles:
    """The chunk files, their names and each file's type and size checked."""
    image = ChunkFiles(open_subfolder(folder_fd, CHUNKS), CHUNKS, size, digests, open_chunk)
    try:
        _check_chunk_names(image.folder_fd, digests)
        image.check()
    except BaseException:
        image.close()
        raise
    return image


def _open_image(folder_fd: int, snapshot: Snapshot):
    if snapshot.chunked:
        return open_chunks(folder_fd, snapshot.digests, snapshot.memory_size)
    return open_memory(folder_fd, snapshot.memory_file, snapshot.memory_size, snapshot.compressed)


def chunk_usage(folder: Path) -> tuple[int, int]:
    """(bytes this snapshot's chunk files alone hold, bytes they share with other
    snapshots through hard links). Measured now, as deleting a snapshot gives the
    others its share."""
    own = shared = 0
    with os.scandir(folder / CHUNKS) as entries:
        for entry in entries:
            found = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(found.st_mode):
                if found.st_nlink > 1:
                    shared += found.st_blocks * 512
                else:
                    own += found.st_blocks * 512
    return own, shared


def load(folder: Path, check: DefinitionCheck, verify_memory: bool = True, progress=None) -> Snapshot:
    """The checked snapshot. ``verify_memory=False`` skips only the memory digests:
    files, structure and sizes are always checked. ``progress("verify", done, total)``
    hears how far the digests have got."""
    folder_fd = open_folder(folder)
    try:
        manifest = parse_json(read_part(folder_fd, MANIFEST, MAX_MANIFEST), MANIFEST)
        state_data = read_part(folder_fd, STATE, MAX_STATE)
        definition = check_manifest(manifest, len(state_data), check)
        snapshot = Snapshot(folder, manifest, definition,
                            read_sections(state_data, manifest["sections"], definition.vcpus))
        with _open_image(folder_fd, snapshot) as image:
            if verify_memory:
                with _memory_checks():
                    image.verify(manifest["memory"]["chunks"], progress)
        return snapshot
    finally:
        os.close(folder_fd)


def reopen_memory(snapshot: Snapshot):
    """The memory image again, for a restore: checked once more, as it may have changed
    (each chunk file is checked again as it is mapped or loaded)."""
    folder_fd = open_folder(snapshot.folder)
    try:
        with _memory_checks():
            return _open_image(folder_fd, snapshot)
    finally:
        os.close(folder_fd)
