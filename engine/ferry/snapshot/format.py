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
This module writes the format; ``reader`` is where a snapshot is read and checked.
"""

from __future__ import annotations

import json
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


def open_private(path: Path, mode: str = "wb"):
    """A new file only its owner can read: a snapshot holds all of the guest's memory and state."""
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), mode)


def write_state(folder: Path, sections: list[Section]) -> list[dict]:
    entries, offset = [], 0
    with open_private(folder / STATE) as handle:
        for section in sections:
            handle.write(section.data)
            entries.append({"name": section.name, "version": section.version, "offset": offset,
                            "length": len(section.data), "checksum": digest(section.data)})
            offset += len(section.data)
        handle.flush()
        os.fsync(handle.fileno())
    return entries


def write_manifest(folder: Path, manifest: dict) -> dict:
    manifest = {**manifest, "magic": MAGIC, "format_version": FORMAT_VERSION, "checksum": CHECKSUM}
    manifest["manifest_checksum"] = _manifest_digest(manifest)
    with open_private(folder / MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    return manifest


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
