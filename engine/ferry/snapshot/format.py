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

from ..errors import FerryError
from ..files import open_private
from ..machine.state import Section
from ..memory.chunks import digest
from ..memory.image import ZSTD_SUFFIX

MAGIC = "ferry-snapshot"
FORMAT_VERSION = 1
CHECKSUM = "xxh3-64"
MANIFEST, STATE, MEMORY = "manifest.json", "state.bin", "memory.raw"
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
