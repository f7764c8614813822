"""The snapshot format (documented in docs/snapshot-format.md).

A snapshot is a directory:

    manifest.json   what is here: format version, engine version, the VM
                    definition, origin, tags, one entry per state section
                    (name, schema version, offset, length, xxh3) and one
                    xxh3 per 2 MiB memory chunk; itself checksummed
    state.bin       the sections, back to back
    memory.raw      guest RAM, raw and page-aligned; all-zero ranges are
                    holes, so the file costs what the guest uses

Older section versions are upgraded by their owners; newer ones, unknown
sections and a newer format are refused with the name of what is wrong.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import xxhash

from ..errors import FerryError
from ..machine.state import Section

MAGIC = "ferry-snapshot"
FORMAT_VERSION = 1
CHECKSUM = "xxh3-64"
CHUNK_SIZE = 2 * 1024 * 1024
MANIFEST, STATE, MEMORY = "manifest.json", "state.bin", "memory.raw"
ZERO_CHUNK_DIGEST = xxhash.xxh3_64_hexdigest(bytes(CHUNK_SIZE))


class SnapshotError(FerryError):
    pass


def digest(data) -> str:
    return xxhash.xxh3_64_hexdigest(data)


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_checksum"}
    return digest(json.dumps(body, sort_keys=True).encode())


def write_state(folder: Path, sections: list[Section]) -> list[dict]:
    entries, offset = [], 0
    with open(folder / STATE, "wb") as handle:
        for section in sections:
            handle.write(section.data)
            entries.append({"name": section.name, "version": section.version, "offset": offset,
                            "length": len(section.data), "checksum": digest(section.data)})
            offset += len(section.data)
        handle.flush()
        os.fsync(handle.fileno())
    return entries


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest = {**manifest, "magic": MAGIC, "format_version": FORMAT_VERSION, "checksum": CHECKSUM}
    manifest["manifest_checksum"] = _manifest_digest(manifest)
    with open(folder / MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise SnapshotError(f"{folder.name}: no {MANIFEST}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise SnapshotError(f"{MANIFEST}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("magic") != MAGIC:
        raise SnapshotError(f"{MANIFEST}: not a Ferry snapshot (magic {manifest.get('magic')!r})"
                            if isinstance(manifest, dict) else f"{MANIFEST}: not a Ferry snapshot")
    if manifest.get("manifest_checksum") != _manifest_digest(manifest):
        raise SnapshotError(f"{MANIFEST}: checksum mismatch, the manifest was altered or damaged")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SnapshotError(f"{MANIFEST}: format version {version} is newer than this engine's {FORMAT_VERSION}")
    return manifest


def read_sections(folder: Path, manifest: dict) -> dict[str, Section]:
    data = (folder / STATE).read_bytes()
    sections = {}
    for entry in manifest["sections"]:
        name = entry["name"]
        raw = data[entry["offset"]:entry["offset"] + entry["length"]]
        if len(raw) != entry["length"] or digest(raw) != entry["checksum"]:
            raise SnapshotError(f"section {name}: checksum mismatch in {STATE}")
        sections[name] = Section(name, entry["version"], raw)
    return sections


def data_ranges(fd: int, size: int):
    """(start, end) of the ranges of ``fd`` that hold data; holes read as zero."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        position = end


def chunks_with_data(fd: int, size: int) -> set[int]:
    indices = set()
    for start, end in data_ranges(fd, size):
        indices.update(range(start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1))
    return indices


def chunk_digests(size: int, read, with_data=None) -> list[str]:
    """One xxh3 per chunk; ``read(offset, length)`` gives bytes; chunks outside
    ``with_data`` (when given) are holes and known to be zero."""
    count = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
    indices = range(count) if with_data is None else sorted(with_data)
    digests = [ZERO_CHUNK_DIGEST] * count
    for index in indices:
        start = index * CHUNK_SIZE
        digests[index] = digest(read(start, min(CHUNK_SIZE, size - start)))
    return digests


def memory_digests(path: Path, size: int) -> list[str]:
    """Chunk digests of a memory file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with_data = chunks_with_data(fd, size)
        if not with_data:
            return chunk_digests(size, None, with_data)
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as view:
            return chunk_digests(size, lambda start, length: view[start:start + length], with_data)
    finally:
        os.close(fd)


def verify(folder: Path) -> dict:
    """Check every checksum; raise naming the first bad part. Returns the manifest."""
    manifest = read_manifest(folder)
    read_sections(folder, manifest)
    memory = manifest["memory"]
    path = folder / memory["file"]
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise SnapshotError(f"{memory['file']}: missing") from None
    if memory.get("compression") == "zstd":
        from .compress import digests
        found = digests(path, memory["size"])
    elif actual != memory["size"]:
        raise SnapshotError(f"{memory['file']}: {actual} bytes, expected {memory['size']} (truncated?)")
    else:
        found = memory_digests(path, memory["size"])
    for index, (want, got) in enumerate(zip(memory["chunks"], found)):
        if want != got:
            start = index * CHUNK_SIZE
            raise SnapshotError(f"{memory['file']}: chunk {index} (guest bytes {start:#x}-{start + CHUNK_SIZE - 1:#x}) "
                                "checksum mismatch")
    return manifest
