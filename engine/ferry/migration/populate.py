"""The destination's pages allocated ahead of the memory that will land in them.

Allocating (and zeroing) fresh pages is the receiver's largest cost in a first pass,
larger than copying out of the socket. A thread of its own does it for the chunks the
source announced (PLAN) while the main thread receives; the ctypes call lets go of the
GIL, so the two run on two CPUs. Where the thread is behind, the receive allocates the
pages itself, as it would without it.
"""

from __future__ import annotations

import ctypes
import threading

from ..memory.guest import MADV_POPULATE_WRITE
from ..memory.chunks import CHUNK_SIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class Populator:
    def __init__(self, base_address: int, runs: list[list[int]]):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(base_address, runs), daemon=True)
        self.thread.start()

    def _run(self, base_address: int, runs: list[list[int]]) -> None:
        for first, count in runs:
            for index in range(first, first + count):
                if self.stopping.is_set():
                    return
                # A failure (an old kernel) only means the receive allocates these pages itself.
                _libc.madvise(base_address + index * CHUNK_SIZE, CHUNK_SIZE, MADV_POPULATE_WRITE)

    def stop(self) -> None:
        """Before the memory may be unmapped: no madvise runs after this returns."""
        self.stopping.set()
        self.thread.join()


def chunk_runs(ranges) -> list[list[int]]:
    """[first chunk, count] for each run of 2 MiB chunks that ``ranges`` (sorted) touch."""
    runs: list[list[int]] = []
    for start, end in ranges:
        first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        if runs and first <= runs[-1][0] + runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], last - runs[-1][0] + 1)
        else:
            runs.append([first, last - first + 1])
    return runs
