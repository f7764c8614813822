"""File-system steps every layer shares: durable records, and small settings files read back."""

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


def read_yaml_settings(path: Path, max_bytes: int, error, what: str):
    """A small YAML file of settings, parsed; ``error(message)`` is raised (one line, naming
    ``path``) when it cannot be read, is over ``max_bytes`` (not ``what`` at all) or is not
    YAML. A missing file raises FileNotFoundError, which callers may take as "no settings"."""
    import yaml  # here: only the commands that read settings pay for it

    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes // 1024} KiB, not {what}")
    try:
        return yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError):
        raise error(f"{path}: not valid YAML") from None
