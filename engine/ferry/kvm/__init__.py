"""Thin typed layer over the KVM API: structs, one ioctl chokepoint, fd types, exits."""

from .fds import Kvm, KvmUnavailable, VcpuFd, VmFd
from .ioctl import KvmError, KvmIoctlError

__all__ = ["Kvm", "KvmUnavailable", "VmFd", "VcpuFd", "KvmError", "KvmIoctlError"]
