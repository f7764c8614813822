"""Optional zstd compression of a snapshot's memory, for archives.

The compressed file holds the whole RAM image (holes compress to almost
nothing); chunk checksums stay those of the raw bytes, so ``verify`` checks
the same thing either way. A compressed snapshot restores eagerly: there is
nothing to map.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import zstandard

from .format import CHUNK_SIZE, MEMORY, ZERO_CHUNK_DIGEST, SnapshotError, digest, open_private

SUFFIX = ".zst"
NAME = MEMORY + SUFFIX
LEVEL = 3


def compress_file(raw: Path, progress=None) -> dict:
    """Replace ``raw`` by ``raw.zst``; return what it cost. ``progress("compress", done, total)``
    hears the raw bytes read so far."""
    started = time.perf_counter()
    target = raw.with_name(raw.name + SUFFIX)
    compressor = zstandard.ZstdCompressor(level=LEVEL, threads=-1)
    with open(raw, "rb") as source, open_private(target) as sink:
        total, done = os.fstat(source.fileno()).st_size, 0
        with compressor.stream_writer(sink, closefd=False) as writer:
            while block := source.read(CHUNK_SIZE):
                writer.write(block)
                done += len(block)
                if progress:
                    progress("compress", done, total)
        sink.flush()
        os.fsync(sink.fileno())
    os.unlink(raw)
    return {"file": target.name, "compression": "zstd", "compressed_bytes": target.stat().st_size,
            "compress_ms": (time.perf_counter() - started) * 1000}


def chunks(fd: int, size: int):
    """The raw chunks of a compressed memory file (an open, checked ``fd``, left open), in order.
    Only ``size`` bytes are ever decompressed, whatever the file claims."""
    with open(fd, "rb", closefd=False) as source:
        source.seek(0)
        reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=CHUNK_SIZE)
        for start in range(0, size, CHUNK_SIZE):
            want = min(CHUNK_SIZE, size - start)
            data = _read_exactly(reader, want)
            if len(data) != want:
                raise SnapshotError(f"{NAME}: ends at guest byte {start + len(data):#x}, "
                                    f"expected {size:#x} (truncated?)")
            yield start, data


def _read_exactly(reader, count: int) -> bytes:
    parts, got = [], 0
    while got < count:
        try:
            part = reader.read(count - got)
        except zstandard.ZstdError as err:
            raise SnapshotError(f"{NAME}: cannot decompress ({err})") from None
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def digests(fd: int, size: int, progress=None) -> list[str]:
    found = []
    for start, data in chunks(fd, size):
        if progress:
            progress("verify", start, size)
        found.append(digest(data))
    return found


def load_into(view, fd: int, size: int) -> None:
    for start, data in chunks(fd, size):
        if digest(data) != ZERO_CHUNK_DIGEST:
            view[start:start + len(data)] = data
