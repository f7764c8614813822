"""Chunk digests of guest RAM: the whole list at once, or kept up to date as memory
moves (to a snapshot file or across a migration), so the final digests cost only the
last delta.

``ChunkDigests`` keeps one xxh3 per 2 MiB chunk. A chunk is hashed when it is sent
(or received) whole, and marked stale when only part of it moves; stale
chunks are hashed between rounds and once more at the end. So the final
list costs only what moved in the last, small delta, yet it covers every
byte of RAM: a page lost or damaged anywhere shows as a
mismatch.
"""

from __future__ import annotations

from . import chunks


def chunk_digests(size: int, read, with_data=None) -> list[str]:
    """One xxh3 per chunk; ``read(offset, length)`` gives a buffer; chunks outside
    ``with_data`` (when given) are holes and known to be zero."""
    indices = range(chunks.count(size)) if with_data is None else sorted(with_data)
    digests = [chunks.ZERO_CHUNK_DIGEST] * chunks.count(size)
    for index in indices:
        digests[index] = chunks.digest(read(*chunks.span(index, size)))
    return digests


class ChunkDigests:
    def __init__(self, size: int, read):
        self.size = size
        self.read = read
        self.values = [chunks.ZERO_CHUNK_DIGEST] * chunks.count(size)
        self.stale: set[int] = set()

    def moved(self, start: int, end: int) -> None:
        self.stale.update(chunks.touched(start, end))

    def known(self, start: int, digest: str) -> None:
        """A whole chunk whose digest was just taken."""
        index = start // chunks.CHUNK_SIZE
        self.values[index] = digest
        self.stale.discard(index)

    def refresh(self) -> list[str]:
        for index in sorted(self.stale):
            self.values[index] = chunks.digest(self.read(*chunks.span(index, self.size)))
        self.stale.clear()
        return self.values
