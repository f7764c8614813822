"""A memory image: guest RAM saved in a file, raw or zstd, or in one file per 2 MiB chunk,
read back to verify or restore it.

A raw image holds the RAM byte for byte at the same offsets, its all-zero ranges
holes, so it can be mapped in place of guest RAM (a lazy restore) or copied into a
memfd inside the kernel. A zstd image holds the whole raw image compressed (holes
compress to almost nothing), for archives; it can only be decompressed into RAM.
Chunk files (``ChunkFiles``) hold one chunk each at offset 0, all-zero chunks
absent; being whole files, unchanged chunks can be hard links shared between
snapshots, and each file is mapped at its chunk's offset for a lazy restore.
Chunk digests are those of the raw bytes in every case, so a verify checks the same
thing for all.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import zstandard

from ..errors import FerryError
from ..files import open_private
from . import chunks
from .digests import chunk_digests
from .guest import GuestMemory
from .transfer import copy_into

ZSTD_SUFFIX = ".zst"
ZSTD_LEVEL = 3


class MemoryImageError(FerryError):
    pass


def _no_progress(step: str, done: int, total: int) -> None:
    pass


def compress_blocks(blocks, total: int, target: Path, progress=None) -> dict:
    """Write the raw image given as ``blocks`` (``total`` bytes in all) to ``target``,
    zstd-compressed; return what it cost. ``progress("compress", done, total)`` hears
    the raw bytes read so far."""
    started = time.perf_counter()
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with open_private(target) as sink:
        done = 0
        with compressor.stream_writer(sink, closefd=False) as writer:
            for block in blocks:
                writer.write(block)
                done += len(block)
                if progress:
                    progress("compress", done, total)
        sink.flush()
        os.fsync(sink.fileno())
    return {"file": target.name, "compression": "zstd", "compressed_bytes": target.stat().st_size,
            "compress_ms": (time.perf_counter() - started) * 1000}


def compress_file(raw: Path, progress=None) -> dict:
    """Replace the raw image ``raw`` by ``raw.zst``; return what it cost."""
    with open(raw, "rb") as source:
        blocks = iter(lambda: source.read(chunks.CHUNK_SIZE), b"")
        result = compress_blocks(blocks, os.fstat(source.fileno()).st_size, raw.with_name(raw.name + ZSTD_SUFFIX),
                                 progress)
    os.unlink(raw)
    return result


class _Image:
    """What raw, zstd and chunked images share: a verify against the manifest's digests."""

    size: int

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def digests(self, progress=None) -> list[str]:
        raise NotImplementedError

    def mismatch(self, index: int, where: str) -> str:
        raise NotImplementedError

    def verify(self, expected: list[str], progress=None) -> None:
        """Refuse the image unless every chunk has the digest ``expected`` gives it,
        naming the first chunk that differs."""
        for index, (want, got) in enumerate(zip(expected, self.digests(progress), strict=True)):
            if want != got:
                start = index * chunks.CHUNK_SIZE
                raise MemoryImageError(self.mismatch(index, f"guest bytes {start:#x}-"
                                                            f"{start + chunks.CHUNK_SIZE - 1:#x}"))


class MemoryImage(_Image):
    """``size`` bytes of guest RAM in the open file ``fd``, which the image now owns
    (``close`` it). ``name`` is the file's name in messages. The caller has checked
    that ``fd`` is a regular file; a raw image must also be exactly ``size`` bytes,
    as a shorter one would fault the guest when it touched the missing pages."""

    def __init__(self, fd: int, name: str, size: int, compressed: bool):
        self.fd, self.name, self.size, self.compressed = fd, name, size, compressed
        actual = os.fstat(fd).st_size
        if not compressed and actual != size:
            os.close(fd)
            raise MemoryImageError(f"{name}: {actual} bytes, expected {size} (truncated?)")

    def close(self) -> None:
        os.close(self.fd)

    def digests(self, progress=None) -> list[str]:
        """One xxh3 per chunk of the raw bytes; ``progress("verify", done, total)`` hears
        how far they have got."""
        progress = progress or _no_progress
        if self.compressed:
            found = []
            for start, data in self._decompressed():
                progress("verify", start, self.size)
                found.append(chunks.digest(data))
            return found
        return self._raw_digests(progress)

    def mismatch(self, index: int, where: str) -> str:
        return f"{self.name}: chunk {index} ({where}) checksum mismatch"

    @property
    def mappable(self) -> bool:
        return not self.compressed

    def map(self) -> GuestMemory:
        """Guest RAM backed by the raw image itself, copy-on-write: pages load as the guest
        touches them, and the guest never writes back to the file."""
        if self.compressed:
            raise MemoryImageError(f"{self.name}: a compressed image cannot be mapped, only loaded")
        fd = os.dup(self.fd)
        try:
            return GuestMemory(self.size, fd=fd, private=True)  # the mapping now owns fd
        except BaseException:
            os.close(fd)
            raise

    def load_into(self, memory: GuestMemory, progress=None) -> None:
        """Copy the image into fresh guest RAM; its holes stay holes.
        ``progress("load", done, total)`` hears how far the copy has got."""
        progress = progress or _no_progress
        if self.compressed:
            for start, data in self._decompressed():
                progress("load", start, self.size)
                if chunks.digest(data) != chunks.ZERO_CHUNK_DIGEST:
                    memory.view[start:start + len(data)] = data
            return
        for start, end in chunks.data_ranges(self.fd, self.size):
            progress("load", start, self.size)
            copy_into(memory.fd, self.fd, start, end)
        progress("load", self.size, self.size)

    def _raw_digests(self, progress) -> list[str]:
        with_data = chunks.with_data(self.fd, self.size)
        if not with_data:
            return chunk_digests(self.size, None, with_data)
        with mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ) as mapping:
            view = memoryview(mapping)

            def read(start: int, length: int):
                progress("verify", start, self.size)  # holes between are known zero: passed at once
                # Slices of the memoryview are hashed where they lie: no chunk is copied.
                return view[start:start + length]
            try:
                return chunk_digests(self.size, read, with_data)
            finally:
                view.release()

    def _decompressed(self):
        """(start, bytes) of each chunk of the raw image, in order. Only ``size`` bytes
        are ever decompressed, whatever the file claims."""
        with open(self.fd, "rb", closefd=False) as source:
            source.seek(0)
            reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=chunks.CHUNK_SIZE)
            for index in range(chunks.count(self.size)):
                start, want = chunks.span(index, self.size)
                data = self._read_exactly(reader, want)
                if len(data) != want:
                    raise MemoryImageError(f"{self.name}: ends at guest byte {start + len(data):#x}, "
                                           f"expected {self.size:#x} (truncated?)")
                yield start, data

    def _read_exactly(self, reader, count: int) -> bytes:
        parts, got = [], 0
        while got < count:
            try:
                part = reader.read(count - got)
            except zstandard.ZstdError as err:
                raise MemoryImageError(f"{self.name}: cannot decompress ({err})") from None
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)


# More chunk files than this are loaded, not mapped: each mapping is one of the
# process's memory areas (vm.max_map_count, 65530 by default), which never merge
# as each chunk is another file.
MAX_MAPPED_CHUNKS = 16384


class ChunkFiles(_Image):
    """``size`` bytes of guest RAM, one file per chunk in the folder open as ``folder_fd``
    (which the image now owns), named by the chunk's index; a chunk whose digest in
    ``expected`` is that of zeros has no file. ``open_chunk(folder_fd, index)`` opens
    one and returns its fd, checked as a regular file of exactly one chunk (the
    snapshot reader's checks)."""

    def __init__(self, folder_fd: int, name: str, size: int, expected: list[str], open_chunk):
        self.folder_fd, self.name, self.size, self.open_chunk = folder_fd, name, size, open_chunk
        self.stored = [index for index, value in enumerate(expected) if value != chunks.ZERO_CHUNK_DIGEST]

    def close(self) -> None:
        os.close(self.folder_fd)

    def _opened(self):
        """(index, fd) of each stored chunk in turn; each fd is closed once the next is asked for."""
        for index in self.stored:
            fd = self.open_chunk(self.folder_fd, index)
            try:
                yield index, fd
            finally:
                os.close(fd)

    def check(self) -> None:
        """Open every chunk file once, as a restore will (``open_chunk`` checks each)."""
        for _ in self._opened():
            pass

    def digests(self, progress=None) -> list[str]:
        progress = progress or _no_progress
        found = [chunks.ZERO_CHUNK_DIGEST] * chunks.count(self.size)
        for index, fd in self._opened():
            progress("verify", index * chunks.CHUNK_SIZE, self.size)
            with mmap.mmap(fd, chunks.CHUNK_SIZE, prot=mmap.PROT_READ) as mapping:
                found[index] = chunks.digest(mapping)
        progress("verify", self.size, self.size)
        return found

    def mismatch(self, index: int, where: str) -> str:
        return f"{self.name}/{index}: checksum mismatch ({where})"

    @property
    def mappable(self) -> bool:
        return len(self.stored) <= MAX_MAPPED_CHUNKS

    def map(self) -> GuestMemory:
        """Guest RAM of private mappings of the chunk files, zeros between them: pages
        load as the guest touches them, and the guest never writes to a file."""
        return GuestMemory(self.size, pieces=((index * chunks.CHUNK_SIZE, chunks.CHUNK_SIZE, fd)
                                              for index, fd in self._opened()))

    def load_into(self, memory: GuestMemory, progress=None) -> None:
        """Copy the chunks into fresh guest RAM; holes inside a chunk stay holes."""
        progress = progress or _no_progress
        for index, fd in self._opened():
            start = index * chunks.CHUNK_SIZE
            progress("load", start, self.size)
            for begin, end in chunks.data_ranges(fd, chunks.CHUNK_SIZE):
                copy_into(memory.fd, fd, begin, end, at=start + begin)
        progress("load", self.size, self.size)

    def blocks(self):
        """The raw image, chunk by chunk (zeros where no file is), for compressing it."""
        stored = iter(self._opened())
        following = next(stored, None)
        for index in range(chunks.count(self.size)):
            if following is not None and following[0] == index:
                yield os.pread(following[1], chunks.CHUNK_SIZE, 0)
                following = next(stored, None)
            else:
                yield bytes(chunks.CHUNK_SIZE)
