"""Guest RAM in chunks: the unit snapshots and migration hash and name in their errors.

Offsets are those of the backing store (the memfd, or a raw image: the same bytes at
the same offsets), not guest-physical addresses. Every chunk is ``CHUNK_SIZE`` bytes;
memory sizes are multiples of 2 MiB, but the walk does not rely on it.
"""

from __future__ import annotations

import os

import xxhash

CHUNK_SIZE = 2 * 1024 * 1024


def digest(data) -> str:
    """xxh3-64 of any buffer; a memoryview of a mapping is hashed where it lies, uncopied."""
    return xxhash.xxh3_64_hexdigest(data)


ZERO_CHUNK_DIGEST = digest(bytes(CHUNK_SIZE))


def count(size: int) -> int:
    """How many chunks ``size`` bytes of memory have."""
    return (size + CHUNK_SIZE - 1) // CHUNK_SIZE


def span(index: int, size: int) -> tuple[int, int]:
    """(start, length) of chunk ``index`` of a memory of ``size`` bytes."""
    start = index * CHUNK_SIZE
    return start, min(CHUNK_SIZE, size - start)


def touched(start: int, end: int) -> range:
    """Indices of the chunks that bytes ``start`` to ``end`` (exclusive, non-empty) fall in."""
    return range(start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1)


def pieces(start: int, end: int):
    """(start, length) of the parts of ``start``..``end`` that lie in one chunk each, in
    order; a piece of ``CHUNK_SIZE`` bytes is a whole chunk, which can be hashed as it goes."""
    while start < end:
        length = min(CHUNK_SIZE - start % CHUNK_SIZE, end - start)
        yield start, length
        start += length


def data_ranges(fd: int, size: int, first: int = 0):
    """(start, end) of the ranges of ``fd``'s bytes ``first`` to ``size`` that hold data;
    holes read as zero."""
    position = first
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError:
            return
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        position = end


def with_data(fd: int, size: int) -> set[int]:
    """Indices of the chunks of ``fd`` that hold any data: all others are holes, all zero."""
    indices = set()
    for start, end in data_ranges(fd, size):
        indices.update(touched(start, end))
    return indices
