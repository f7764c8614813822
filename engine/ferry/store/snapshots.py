"""Snapshots as the state store keeps them: read back with every file and field checked.

Apart from ``statedir`` so that commands which only list VMs do not import the
snapshot reader (and the machine's state types behind it).
"""

from __future__ import annotations

from ..snapshot import format as fmt
from ..snapshot import reader
from . import definition as defn


def load(folder, verify_memory: bool = True, progress=None) -> reader.Snapshot:
    """A snapshot with every file and field checked, its definition by this engine's rules."""
    return reader.load(folder, defn.validate, verify_memory, progress)


def newest_parent(folders, memory_size: int) -> reader.Snapshot | None:
    """The parent of an incremental save: the newest (by creation time) of ``folders``
    that passes the structure checks and holds chunk files of this memory size."""
    newest = None
    for folder in folders:
        try:
            snapshot = load(folder, verify_memory=False)
        except fmt.SnapshotError:
            continue  # damaged or half deleted: not one to build on
        if snapshot.chunked and snapshot.memory_size == memory_size and (
                newest is None or snapshot.manifest["created"] > newest.manifest["created"]):
            newest = snapshot
    return newest
