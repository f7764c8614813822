"""Snapshots as the state store keeps them: read back with every file and field checked.

Apart from ``statedir`` so that commands which only list VMs do not import the
snapshot reader (and the machine's state types behind it).
"""

from __future__ import annotations

from ..snapshot import reader
from . import definition as defn


def load(folder, verify_memory: bool = True, progress=None) -> reader.Snapshot:
    """A snapshot with every file and field checked, its definition by this engine's rules."""
    return reader.load(folder, defn.validate, verify_memory, progress)
