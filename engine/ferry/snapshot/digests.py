"""Chunk digests of guest RAM, kept up to date as memory moves (to a snapshot file or
across a migration), so the final digests cost only the last delta.

Both ends keep one xxh3 per 2 MiB chunk. A chunk is hashed when it is sent
(or received) whole, and marked stale when only part of it moves; stale
chunks are hashed between rounds and once more at the end. So the final
list costs only what moved in the last, small delta, yet it covers every
byte of RAM: a page lost or damaged anywhere shows as a
mismatch.
"""

from __future__ import annotations

from . import format as fmt


class ChunkDigests:
    def __init__(self, size: int, read):
        self.size = size
        self.read = read
        self.values = [fmt.ZERO_CHUNK_DIGEST] * ((size + fmt.CHUNK_SIZE - 1) // fmt.CHUNK_SIZE)
        self.stale: set[int] = set()

    def moved(self, start: int, end: int) -> None:
        self.stale.update(range(start // fmt.CHUNK_SIZE, (end - 1) // fmt.CHUNK_SIZE + 1))

    def known(self, start: int, digest: str) -> None:
        """A whole chunk whose digest was just taken."""
        index = start // fmt.CHUNK_SIZE
        self.values[index] = digest
        self.stale.discard(index)

    def refresh(self) -> list[str]:
        for index in sorted(self.stale):
            start = index * fmt.CHUNK_SIZE
            self.values[index] = fmt.digest(self.read(start, min(fmt.CHUNK_SIZE, self.size - start)))
        self.stale.clear()
        return self.values
