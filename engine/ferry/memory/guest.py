"""Guest RAM: one memfd, mapped once, registered with KVM as memory slots.

RAM above ``PCI_HOLE_START`` is moved past 4 GiB, so a guest larger than
3 GiB gets two slots with the MMIO hole between them. The memfd is the
single backing store: snapshots and migration move it with sendfile /
copy_file_range, and a restore can map a snapshot's memory in its place (one
file, or one file per 2 MiB chunk, each mapped at its offset).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass

from ..layout import PCI_HOLE_END, PCI_HOLE_START


FALLOC_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
MADV_POPULATE_WRITE = 23
MAP_FIXED = 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64)


@dataclass(frozen=True)
class Region:
    """``size`` bytes of guest RAM at ``gpa``, stored at ``offset`` in the memfd."""

    gpa: int
    size: int
    offset: int

    @property
    def end(self) -> int:
        return self.gpa + self.size


class GuestMemoryError(ValueError):
    pass


def plan_regions(size: int) -> list[Region]:
    low = min(size, PCI_HOLE_START)
    regions = [Region(0, low, 0)]
    if size > low:
        regions.append(Region(PCI_HOLE_END, size - low, low))
    return regions


class GuestMemory:
    def __init__(self, size: int, fd: int | None = None, private: bool = False, pieces=None):
        """Create ``size`` bytes of RAM, or map an existing file ``fd`` (snapshots).

        ``private`` maps the file copy-on-write, so the guest never writes
        back to it (lazy restore from a snapshot's memory file). ``pieces``, an
        iterable of (offset, length, fd), maps instead each file copy-on-write at
        its offset over zeroed private memory (a snapshot stored in chunk files);
        the caller closes those fds, the mappings keep the files.
        """
        if size <= 0 or size % (2 * 1024 * 1024):
            raise GuestMemoryError(f"memory size {size} must be a positive multiple of 2 MiB")
        self.size = size
        self.regions = plan_regions(size)
        if fd is None and pieces is None:
            fd = os.memfd_create("ferry-guest-ram", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        self.fd = fd
        self.private = private or pieces is not None
        flags = mmap.MAP_PRIVATE if self.private else mmap.MAP_SHARED
        self.map = mmap.mmap(-1 if fd is None else fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.map)
        # The ctypes view is dropped at once so the mmap can still be closed later.
        self.base_address = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        try:
            for offset, length, piece_fd in pieces or ():
                self._map_over(offset, length, piece_fd)
        except BaseException:
            self.close()
            raise

    def _map_over(self, offset: int, length: int, fd: int) -> None:
        """Replace part of the mapping by a private mapping of ``fd``; closing the whole
        mapping later unmaps it too."""
        address = self.base_address + offset
        got = _libc.mmap(address, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | MAP_FIXED, fd, 0)
        if got != address:
            err = ctypes.get_errno()
            raise OSError(err, f"mapping guest RAM at {offset:#x}: {os.strerror(err)}")

    def offset_of(self, gpa: int, length: int = 1) -> int:
        for region in self.regions:
            if region.gpa <= gpa and gpa + length <= region.end:
                return region.offset + gpa - region.gpa
        raise GuestMemoryError(f"guest range {gpa:#x}+{length:#x} is not RAM")

    def read(self, gpa: int, length: int) -> bytes:
        start = self.offset_of(gpa, length)
        return bytes(self.view[start:start + length])

    def write(self, gpa: int, data: bytes) -> None:
        start = self.offset_of(gpa, len(data))
        self.view[start:start + len(data)] = data

    def read_backing(self, offset: int, length: int):
        """Bytes at ``offset`` of the backing store. A memfd is read with pread: pages the
        guest wrote through KVM are not mapped in this process yet, and touching them
        through the mapping would fault them in one by one."""
        if self.private:
            return self.view[offset:offset + length]
        return os.pread(self.fd, length, offset)

    def prepare_write(self, offset: int, length: int) -> None:
        """Allocate and map a range in one call before it is filled, rather than one
        page fault per page as the copy reaches it (MADV_POPULATE_WRITE, Linux 5.14)."""
        try:
            self.map.madvise(MADV_POPULATE_WRITE, offset, length)
        except OSError:
            pass  # older kernels: the copy faults the pages in itself

    def zero(self, offset: int, length: int) -> None:
        """Make a range of the backing read as zero, giving its pages back (a hole)."""
        if self.private:
            self.view[offset:offset + length] = bytes(length)
        elif _libc.fallocate(self.fd, FALLOC_PUNCH_HOLE, offset, length) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"punching a hole in guest RAM: {os.strerror(err)}")

    def host_address(self, region: Region) -> int:
        """Userspace address of ``region`` for KVM_SET_USER_MEMORY_REGION."""
        return self.base_address + region.offset

    def close(self) -> None:
        self.view.release()
        try:
            self.map.close()
        except BufferError:
            pass  # a slice still referenced (e.g. by a traceback) keeps the mapping until it goes
        if self.fd is not None:
            os.close(self.fd)
