"""Several hypervisor hosts on one machine: network namespaces on a bridge,
each with its own sshd and private Ferry directories (see docs/lab.md)."""

from .lab import Lab

__all__ = ["Lab"]
