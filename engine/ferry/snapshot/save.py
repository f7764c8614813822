"""Saving a running machine into a snapshot directory.

Live by default (as a pre-copy migration, into files): dirty logging on,
all used memory written while the guest runs, then rounds of what it
dirtied, then a pause only for the last small delta and the device state.
Memory goes into one file per 2 MiB chunk, each hashed as it is read: a chunk
with the digest the parent snapshot's manifest gives it is a hard link to the
parent's file instead of a write (an incremental save), an all-zero one is no
file at all. The directory appears under its final name only once complete
and synced; any failure removes it and leaves the VM running.
"""

from __future__ import annotations

import os
import shutil
import stat
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
from ..memory.dirty import dirty_ranges, set_dirty_logging
from ..memory.image import ChunkFiles, compress_blocks
from ..memory.transfer import used_ranges
from . import format as fmt
from . import reader

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
    shared_bytes: int = 0
    # progress(step, done, total) as the save goes; not part of the manifest's record.
    progress: Callable[[str, int, int], None] = field(default=_no_progress, repr=False)

    def record(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "progress"}


class ChunkStore:
    """The chunk files of the snapshot being written, in ``folder``/chunks. A file once
    linked from the parent is never written to (it is the parent's too): a chunk that
    changes again gets a new file in its place."""

    def __init__(self, folder: Path, memory, parent: reader.Snapshot | None):
        os.mkdir(folder / fmt.CHUNKS, 0o700)
        self.fd = os.open(folder / fmt.CHUNKS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.memory = memory
        self.digests = [chunks.ZERO_CHUNK_DIGEST] * chunks.count(memory.size)
        self.written: set[int] = set()
        self.parent_digests = parent.digests if parent else None
        self.parent_fd = self._open_parent(parent)

    def _open_parent(self, parent: reader.Snapshot | None) -> int | None:
        if parent is None:
            return None
        try:
            folder_fd = reader.open_folder(parent.folder)
            try:
                return reader.open_subfolder(folder_fd, fmt.CHUNKS)
            finally:
                os.close(folder_fd)
        except fmt.SnapshotError:
            self.parent_digests = None  # gone since it was chosen: this save is a full one
            return None

    def close(self) -> None:
        for fd in (self.fd, self.parent_fd):
            if fd is not None:
                os.close(fd)

    def save(self, index: int) -> int:
        """Bring chunk ``index`` up to date with guest RAM; return the bytes written."""
        start, length = chunks.span(index, self.memory.size)
        data = self.memory.read_backing(start, length)
        value = chunks.digest(data)
        if value == self.digests[index]:
            return 0
        if self.digests[index] != chunks.ZERO_CHUNK_DIGEST:
            os.unlink(str(index), dir_fd=self.fd)
            self.written.discard(index)
        self.digests[index] = chunks.ZERO_CHUNK_DIGEST
        if value == chunks.ZERO_CHUNK_DIGEST:
            return 0
        written = 0 if self._link_parent(index, value) else self._write(index, start, data)
        self.digests[index] = value
        return written

    def _link_parent(self, index: int, value: str) -> bool:
        """Share the parent's file if its manifest gives the chunk this digest. Its bytes
        are trusted to match (a verify of this snapshot reads them); its type and size
        are checked here, on the link itself (an inode's type cannot change)."""
        if self.parent_fd is None or self.parent_digests[index] != value:
            return False
        return link_chunk(self.parent_fd, self.fd, index)

    def _write(self, index: int, start: int, data) -> int:
        fd = os.open(str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        written = 0
        try:
            os.ftruncate(fd, chunks.CHUNK_SIZE)
            for begin, end in self._data_in(start, len(data)):
                while begin < end:
                    sent = os.pwrite(fd, data[begin:end], begin)
                    begin += sent
                    written += sent
        finally:
            os.close(fd)
        self.written.add(index)
        return written

    def _data_in(self, start: int, length: int):
        """Ranges of the chunk at ``start`` that hold data, relative to it: pages the guest
        never touched are holes in the memfd and stay holes in the chunk file."""
        if self.memory.private:
            return [(0, length)]
        return [(begin - start, end - start)
                for begin, end in chunks.data_ranges(self.memory.fd, start + length, start)]

    def sync(self) -> None:
        """Only written files need their data synced; links point at synced ones."""
        for index in sorted(self.written):
            fd = os.open(str(index), os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        os.fsync(self.fd)


def link_chunk(from_fd: int, to_fd: int, index: int) -> bool:
    """Hard-link chunk file ``index`` of one chunks folder into another; False (nothing
    linked) when it is gone, has too many links, or is not a regular file of one chunk."""
    name = str(index)
    try:
        os.link(name, name, src_dir_fd=from_fd, dst_dir_fd=to_fd, follow_symlinks=False)
    except OSError:
        return False  # deleted since, or too many links (EMLINK): written instead
    found = os.stat(name, dir_fd=to_fd, follow_symlinks=False)
    if stat.S_ISREG(found.st_mode) and found.st_size == chunks.CHUNK_SIZE:
        return True
    os.unlink(name, dir_fd=to_fd)
    return False


def _copy(store: ChunkStore, ranges, report: SaveReport, step: str = "memory") -> int:
    """Save every chunk the ranges touch; return the bytes of those chunks."""
    indices = sorted({index for start, end in ranges for index in chunks.touched(start, end)})
    total = len(indices) * chunks.CHUNK_SIZE
    for done, index in enumerate(indices, 1):
        report.bytes_written += store.save(index)
        report.progress(step, done * chunks.CHUNK_SIZE, total)
    return total


def _precopy(machine, store: ChunkStore, report: SaveReport) -> None:
    set_dirty_logging(machine, True)
    _copy(store, used_ranges(machine.memory), report)
    for _ in range(MAX_ROUNDS):
        examined = _copy(store, dirty_ranges(machine), report, "delta")
        report.rounds.append(examined)
        if examined <= SMALL_DELTA:
            break


def write_memory(machine, store: ChunkStore, live: bool, report: SaveReport) -> list[Section]:
    """Write RAM into ``store``; return the sections, captured while paused. Leaves the VM paused."""
    try:
        if live:
            _precopy(machine, store, report)
        started = time.perf_counter()
        machine.pause()
        try:
            _copy(store, dirty_ranges(machine) if live else used_ranges(machine.memory), report)
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
           progress: Callable[[str, int, int], None] = _no_progress, parent: reader.Snapshot | None = None) -> dict:
    """Save ``machine`` as snapshot ``folder``; resume it unless ``leave_paused``;
    ``progress(step, done, total)`` hears how far it got (steps memory, delta, compress).
    Chunks unchanged since ``parent`` (a checked snapshot of this memory size) are
    shared with it; a compressed snapshot is always a full one.
    The id is normally reserved (``reserve``) by the caller, outside the VM's lock,
    so that a second save of it is refused before it waits; else it is reserved here."""
    began = time.perf_counter()
    partial = partial_of(folder)
    if not partial.is_dir():
        reserve(folder)
    report = SaveReport("live" if live else "stop-the-world", progress=progress)
    resume_needed = False
    try:
        store = ChunkStore(partial, machine.memory, None if compress else parent)
        try:
            resume_needed = True
            sections = write_memory(machine, store, live, report)
            if not leave_paused:
                machine.resume()
                resume_needed = False
            store.sync()
        finally:
            store.close()
        parent_id = parent.folder.name if store.parent_digests else None
        manifest = _manifest(folder.name, machine, definition, origin, tags, partial, sections, report,
                             store.digests, parent_id)
        if compress:
            manifest["memory"].update(_compress(partial, store.digests, machine.memory.size, progress))
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


def _compress(partial: Path, digests: list[str], size: int, progress) -> dict:
    """The chunk files as one zstd image, which replaces them."""
    with ChunkFiles(os.open(partial / fmt.CHUNKS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), fmt.CHUNKS,
                    size, digests, reader.open_chunk) as image:
        result = compress_blocks(image.blocks(), size, partial / fmt.MEMORY_ZSTD, progress)
    shutil.rmtree(partial / fmt.CHUNKS)
    return result


def _manifest(snapshot_id: str, machine, definition: dict, origin: dict, tags: list[str],
              partial: Path, sections, report: SaveReport, digests: list[str], parent_id: str | None) -> dict:
    entries = fmt.write_state(partial, sections)
    report.disk_bytes, report.shared_bytes = reader.chunk_usage(partial)
    return {
        "id": snapshot_id,
        "parent": parent_id,
        "engine_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "origin": origin,
        "tags": sorted(set(tags)),
        "definition": definition,
        "sections": entries,
        "memory": {"file": fmt.CHUNKS, "size": machine.memory.size, "chunk_size": chunks.CHUNK_SIZE,
                   "chunks": digests, "compression": None},
    }


def _disk_usage(folder: Path, manifest: dict) -> tuple[int | None, int]:
    """(bytes this snapshot alone holds, bytes shared with others), as they are now."""
    memory = manifest["memory"]
    if memory["file"] == fmt.CHUNKS:
        return reader.chunk_usage(folder)
    return memory.get("compressed_bytes", manifest.get("save", {}).get("disk_bytes")), 0


def summary(folder: Path, manifest: dict) -> dict:
    save = manifest.get("save", {})
    memory = manifest["memory"]
    own, shared = _disk_usage(folder, manifest)
    # The folder's name is the id commands take (a copied snapshot may have been renamed).
    return {"id": folder.name, "created": manifest["created"], "origin": manifest["origin"],
            "tags": manifest["tags"], "vm": manifest["definition"]["name"], "parent": manifest.get("parent"),
            "memory_bytes": memory["size"], "disk_bytes": own, "shared_bytes": shared,
            "compression": memory.get("compression"), "compress_ms": memory.get("compress_ms"),
            "mode": save.get("mode"), "pause_ms": save.get("pause_ms"), "total_ms": save.get("total_ms"),
            "path": str(folder)}
