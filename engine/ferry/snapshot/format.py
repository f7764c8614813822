"""The snapshot format (documented in docs/snapshot-format.md).

A snapshot is a directory:

    manifest.json   what is here: format version, engine version, the VM
                    definition, origin, tags, one entry per state section
                    (name, schema version, offset, length, xxh3) and one
                    xxh3 per 2 MiB memory chunk; itself checksummed
    state.bin       the sections, back to back
    chunks/N        guest RAM, one file per 2 MiB chunk N, holes kept, all-zero
                    chunks absent (format version 2); a chunk unchanged since
                    the parent snapshot is a hard link to the parent's file, so
                    a snapshot costs on disk what changed, yet stands alone
    memory.raw      (version 1) guest RAM as one raw, page-aligned file

Older section versions are upgraded by their owners; newer ones, unknown
sections and a newer format are refused with the name of what is wrong.
This module writes the format; ``reader`` is where a snapshot is read and checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import FerryError
from ..files import open_private
from ..machine.state import Section
from ..memory.chunks import digest
from ..memory.image import ZSTD_SUFFIX

MAGIC = "ferry-snapshot"
FORMAT_VERSION = 2
CHUNKED_SINCE = 2  # the first format version whose memory is in chunk files
CHECKSUM = "xxh3-64"
MANIFEST, STATE, MEMORY, CHUNKS = "manifest.json", "state.bin", "memory.raw", "chunks"
MEMORY_ZSTD = MEMORY + ZSTD_SUFFIX


class SnapshotError(FerryError):
    pass


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_checksum"}
    return digest(json.dumps(body, sort_keys=True).encode())


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
