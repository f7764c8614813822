"""Saving a running machine into a snapshot directory.

Live by default (as a pre-copy migration, into a file): dirty logging on,
all used memory written while the guest runs, then rounds of what it
dirtied, then a pause only for the last small delta and the device state.
The directory appears under its final name only once complete and synced;
any failure removes it and leaves the VM running.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import Conflict
from ..files import sync_directory
from ..machine.sections import REGISTRY
from ..machine.state import Section
from ..memory import chunks
from ..memory.digests import ChunkDigests
from ..memory.dirty import dirty_ranges, set_dirty_logging
from ..memory.image import compress_file
from ..memory.transfer import used_ranges, write_range
from . import format as fmt

MAX_ROUNDS = 8
SMALL_DELTA = 4 * 1024 * 1024  # pause once what is left is this small


def _no_progress(step: str, done: int, total: int) -> None:
    pass


@dataclass
class SaveReport:
    mode: str
    pause_ms: float = 0.0
    total_ms: float = 0.0
    rounds: list[int] = field(default_factory=list)
    bytes_written: int = 0
    disk_bytes: int = 0
    # progress(step, done, total) as the save goes; not part of the manifest's record.
    progress: Callable[[str, int, int], None] = field(default=_no_progress, repr=False)

    def record(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "progress"}


def _copy(machine, out: int, ranges, report: SaveReport, digests: ChunkDigests, step: str = "memory") -> int:
    """Write ranges chunk by chunk; whole chunks are hashed on the way, as the manifest needs."""
    memory, written = machine.memory, 0
    total = sum(end - start for start, end in ranges)
    for start, end in ranges:
        for piece, length in chunks.pieces(start, end):
            if length == chunks.CHUNK_SIZE:
                digests.known(piece, chunks.digest(memory.read_backing(piece, length)))
            else:
                digests.moved(piece, piece + length)
            write_range(memory, out, piece, piece + length)
            written += length
            report.progress(step, written, total)
    report.bytes_written += written
    return written


def _precopy(machine, out: int, report: SaveReport, digests: ChunkDigests) -> None:
    set_dirty_logging(machine, True)
    _copy(machine, out, used_ranges(machine.memory), report, digests)
    for _ in range(MAX_ROUNDS):
        written = _copy(machine, out, dirty_ranges(machine), report, digests, "delta")
        digests.refresh()
        report.rounds.append(written)
        if written <= SMALL_DELTA:
            break


def write_memory(machine, out: int, live: bool, report: SaveReport,
                 digests: ChunkDigests) -> list[Section]:
    """Write RAM into ``out``; return the sections, captured while paused. Leaves the VM paused."""
    try:
        if live:
            _precopy(machine, out, report, digests)
        started = time.perf_counter()
        machine.pause()
        try:
            ranges = dirty_ranges(machine) if live else used_ranges(machine.memory)
            _copy(machine, out, ranges, report, digests)
            digests.refresh()
            sections = REGISTRY.capture(machine)
        finally:
            report.pause_ms = (time.perf_counter() - started) * 1000
        return sections
    finally:
        if live:
            set_dirty_logging(machine, False)


def partial_of(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.partial")


def reserve(folder: Path) -> Path:
    """Claim the snapshot id before any memory is written. ``mkdir`` is atomic, so of two
    saves of one id exactly one gets ``.ID.partial``; the other is refused at once. The
    check for a finished snapshot comes after the claim, as the rename that finishes a
    save removes the claim."""
    folder.parent.mkdir(mode=0o700, exist_ok=True)
    partial = partial_of(folder)
    try:
        partial.mkdir(mode=0o700)
    except FileExistsError:
        raise Conflict(f"snapshot: a save of {folder.name} is under way") from None
    if os.path.lexists(folder):
        partial.rmdir()
        raise Conflict(f"snapshot: the VM already has a snapshot {folder.name!r}")
    return partial


def create(machine, folder: Path, definition: dict, origin: dict, tags: list[str],
           live: bool = True, leave_paused: bool = False, compress: bool = False,
           progress: Callable[[str, int, int], None] = _no_progress) -> dict:
    """Save ``machine`` as snapshot ``folder``; resume it unless ``leave_paused``;
    ``progress(step, done, total)`` hears how far it got (steps memory, delta, compress).
    The id is normally reserved (``reserve``) by the caller, outside the VM's lock,
    so that a second save of it is refused before it waits; else it is reserved here."""
    began = time.perf_counter()
    partial = partial_of(folder)
    if not partial.is_dir():
        reserve(folder)
    report = SaveReport("live" if live else "stop-the-world", progress=progress)
    resume_needed = False
    try:
        out = os.open(partial / fmt.MEMORY, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(out, machine.memory.size)
            resume_needed = True
            digests = ChunkDigests(machine.memory.size, machine.memory.read_backing)
            sections = write_memory(machine, out, live, report, digests)
            if not leave_paused:
                machine.resume()
                resume_needed = False
            os.fsync(out)
        finally:
            os.close(out)
        manifest = _manifest(folder.name, machine, definition, origin, tags, partial, sections, report,
                             digests.values)
        if compress:
            manifest["memory"].update(compress_file(partial / fmt.MEMORY, progress))
        manifest["save"] = {**report.record(), "total_ms": (time.perf_counter() - began) * 1000}
        manifest = fmt.write_manifest(partial, manifest)
        sync_directory(partial)
        os.rename(partial, folder)
        sync_directory(folder.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if resume_needed:
            machine.resume()
        raise
    return summary(folder, manifest)


def _manifest(snapshot_id: str, machine, definition: dict, origin: dict, tags: list[str],
              partial: Path, sections, report: SaveReport, digests: list[str]) -> dict:
    entries = fmt.write_state(partial, sections)
    report.disk_bytes = os.stat(partial / fmt.MEMORY).st_blocks * 512
    return {
        "id": snapshot_id,
        "engine_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "origin": origin,
        "tags": sorted(set(tags)),
        "definition": definition,
        "sections": entries,
        "memory": {"file": fmt.MEMORY, "size": machine.memory.size, "chunk_size": chunks.CHUNK_SIZE,
                   "chunks": digests, "compression": None},
    }


def summary(folder: Path, manifest: dict) -> dict:
    save = manifest.get("save", {})
    memory = manifest["memory"]
    # The folder's name is the id commands take (a copied snapshot may have been renamed).
    return {"id": folder.name, "created": manifest["created"], "origin": manifest["origin"],
            "tags": manifest["tags"], "vm": manifest["definition"]["name"],
            "memory_bytes": memory["size"], "disk_bytes": memory.get("compressed_bytes", save.get("disk_bytes")),
            "compression": memory.get("compression"), "compress_ms": memory.get("compress_ms"),
            "mode": save.get("mode"), "pause_ms": save.get("pause_ms"), "total_ms": save.get("total_ms"),
            "path": str(folder)}
