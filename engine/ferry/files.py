"""File-system steps every layer that writes durable records shares."""

from __future__ import annotations

import os
from pathlib import Path


def sync_directory(path: Path) -> None:
    """Wait for the disk to hold the directory's entries (a rename into it, say); a link is
    not followed."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private(path: Path, mode: str = "wb"):
    """A new file only its owner can read (a snapshot's files hold all of a guest's memory
    and state); refused if the name exists, even as a link."""
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), mode)
