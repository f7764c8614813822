"""The one place that calls ioctl(2) on a KVM file descriptor.

``call`` turns a failure into ``KvmIoctlError`` naming the request. Tests
replace ``ioctl`` (see ``set_backend``) to run the layers above without
/dev/kvm.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Callable

from .abi import IOCTLS

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int


class KvmError(OSError):
    """Something KVM refused; the message names what was asked."""

    def __str__(self) -> str:
        return str(self.strerror)


class KvmIoctlError(KvmError):
    def __init__(self, name: str, err: int):
        super().__init__(err, f"{name} failed: {os.strerror(err)} ({errno.errorcode.get(err, err)})")
        self.name = name


def _libc_ioctl(fd: int, request: int, arg: int) -> int:
    result = _libc.ioctl(fd, request, arg)
    if result < 0:
        return -ctypes.get_errno()
    return result


Backend = Callable[[int, int, int], int]
_backend: Backend = _libc_ioctl


def set_backend(backend: Backend | None) -> None:
    """Route every ioctl through ``backend(fd, request, arg) -> result or -errno``."""
    global _backend
    _backend = backend or _libc_ioctl


def address(arg) -> int:
    """An ioctl argument: a ctypes object is passed by address, an int as is."""
    if isinstance(arg, int):
        return arg
    return ctypes.addressof(arg)


def call(fd: int, name: str, arg=0) -> int:
    """Run KVM ioctl ``name`` with ``arg``; return its non-negative result."""
    result = _backend(fd, IOCTLS[name], address(arg))
    if result < 0:
        raise KvmIoctlError(name, -result)
    return result
