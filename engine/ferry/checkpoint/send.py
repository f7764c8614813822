"""``ferry checkpoint send``: replicate a VM's checkpoints to another host, as syncoid does
for ZFS datasets, over the protocol of ``wire.py``.

The sender runs ``ssh HOST ferry checkpoint receive --stdio`` and asks the target which
checkpoints of the VM it holds. It then sends, oldest first, every checkpoint the target
lacks that is newer than the newest one both hold, up to the one asked for; the target
says which chunks it needs of each (those it can neither link from the replica before nor
kept from a send that was cut), and only those travel. The source's snapshots are only
read; what it writes is ``replicas.json``, the newest checkpoint each destination holds,
which its own prune keeps (``run.checkpoints_of``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import Conflict, FerryError, NotFound
from ..host import snapshots
from ..host.api import Host
from ..host.migrate import parse_rate
from ..memory import chunks
from ..migration import transport
from ..migration.protocol import Kind, ProtocolError
from ..snapshot import reader
from . import wire

CONNECT_TIMEOUT = 10.0


@dataclass
class Target:
    """Where to send: an ssh destination, and how the engine is found and run there."""
    host: str
    ssh: transport.SshOptions = field(default_factory=transport.SshOptions)
    remote_ferry: str | None = None  # default: this ferry's own path (both hosts install it alike)
    remote_state_dir: str | None = None
    remote_policy: str | None = None
    link_timeout: float = transport.LINK_TIMEOUT

    @property
    def key(self) -> str:
        """The destination as ``replicas.json`` names it."""
        return self.host if self.remote_state_dir is None else f"{self.host}:{self.remote_state_dir}"

    def command(self) -> list[str]:
        argv = [self.remote_ferry or own_ferry(), "checkpoint", "receive", "--stdio",
                "--link-timeout", f"{self.link_timeout:g}"]
        if self.remote_state_dir is not None:
            argv += ["--state-dir", self.remote_state_dir]
        if self.remote_policy is not None:
            argv += ["--policy", self.remote_policy]
        return argv


def own_ferry() -> str:
    """The absolute path of the running ``ferry`` (the venv's ``bin/ferry`` under ``python -m``)."""
    started = Path(sys.argv[0])
    if started.name == "ferry" and started.exists():
        return str(started.absolute())
    beside = Path(sys.executable).with_name("ferry")
    if beside.exists():
        return str(beside)
    raise FerryError("remote-ferry: cannot tell where this ferry is installed; give its path on the target")


def send(host: Host, name: str, snapshot_id: str | None, target: Target, bandwidth: str | None = None) -> dict:
    transport.check_ssh(target.ssh)
    rate = parse_rate(bandwidth)
    vmdir = host.existing(name)
    offered = _sendable(host, name, snapshot_id)
    started = time.monotonic()
    argv = transport.ssh_command_argv(target.host, target.command(), target.ssh, CONNECT_TIMEOUT)
    channel = transport.Channel(transport.SshLink(target.host, argv), True, wire.TO_SENDER, target.link_timeout)
    try:
        held = _open(channel, name)
        common = base = next((snap["id"] for snap in reversed(offered) if snap["id"] in held), None)
        if common is not None:
            vmdir.record_replica(target.key, common)
        sent = []
        for snap in _after(offered, common, held):
            sent.append(_send_one(channel, vmdir, snap["id"], common, rate, started))
            common = snap["id"]
            vmdir.record_replica(target.key, common)
        channel.send(Kind.DONE)
    finally:
        channel.close()
    seconds = time.monotonic() - started
    return {"name": name, "to": target.host, "id": offered[-1]["id"], "base": base,
            "checkpoints": sent, "bytes_sent": channel.sent, "bytes_received": channel.received,
            "bytes_on_wire": channel.sent + channel.received,
            "chunks_sent": sum(c["chunks_sent"] for c in sent), "chunks_linked": sum(c["chunks_linked"] for c in sent),
            "chunks_kept": sum(c["chunks_kept"] for c in sent),
            "pruned": [p for c in sent for p in c["pruned"]], "seconds": seconds,
            "rate": channel.sent / seconds if seconds > 0 else 0.0}


def _sendable(host: Host, name: str, snapshot_id: str | None) -> list[dict]:
    """The VM's snapshots that can be sent, oldest first, up to ``snapshot_id`` (default the newest)."""
    listed = sorted((s for s in snapshots.list_snapshots(host, name) if not s.get("error")),
                    key=lambda s: s["created"])
    if snapshot_id is None:
        if not listed:
            raise NotFound(f"{name}: no snapshot to send")
        snapshot_id = listed[-1]["id"]
    upto = next((index for index, snap in enumerate(listed) if snap["id"] == snapshot_id), None)
    if upto is None:
        raise NotFound(f"{name}: no snapshot {snapshot_id!r} (or it is damaged: see ferry snapshot list {name})")
    if listed[upto]["compression"]:
        raise Conflict(f"{name}: snapshot {snapshot_id} is compressed; only snapshots in chunk files are sent")
    return [snap for snap in listed[:upto + 1] if not snap["compression"]]


def _after(offered: list[dict], common: str | None, held: set[str]) -> list[dict]:
    """What the target lacks that is newer than ``common``."""
    ids = [snap["id"] for snap in offered]
    newer = offered[ids.index(common) + 1:] if common is not None else offered
    return [snap for snap in newer if snap["id"] not in held]


def _open(channel: transport.Channel, name: str) -> set[str]:
    """HELLO and OFFER; the ids of the replicas the target holds of ``name``."""
    channel.send(Kind.HELLO, {"versions": [wire.MIN_VERSION, wire.VERSION], "engine": __version__})
    channel.expect(Kind.HELLO)
    channel.authenticated()
    channel.send(Kind.OFFER, {"name": name})
    return set(channel.expect(Kind.ACCEPT)[1]["replicas"])


def _send_one(channel: transport.Channel, vmdir, snapshot_id: str, base: str | None, rate: float | None,
              started: float) -> dict:
    """One checkpoint: its manifest and state, then the chunks the target asks for."""
    began, sent_before = time.monotonic(), channel.sent
    folder_fd = reader.open_folder(vmdir.snapshot_dir(snapshot_id))
    try:
        manifest = reader.read_part(folder_fd, wire.MANIFEST, reader.MAX_MANIFEST)
        state = reader.read_part(folder_fd, wire.STATE, reader.MAX_STATE)
        digests = reader.parse_json(manifest, wire.MANIFEST)["memory"]["chunks"]
        channel.send(Kind.PLAN, {"id": snapshot_id, **({"base": base} if base else {})})
        for part, data in ((wire.MANIFEST, manifest), (wire.STATE, state)):
            channel.send_section(part, 1, chunks.digest(data), data)
        need = channel.expect(Kind.PLAN)[1]["need"]
        _check_need(need, digests)
        chunks_fd = reader.open_subfolder(folder_fd, reader.CHUNKS)
        try:
            for index in need:
                _send_chunk(channel, chunks_fd, index)
                channel.pace(rate, started)
        finally:
            os.close(chunks_fd)
    finally:
        os.close(folder_fd)
    channel.send(Kind.PREPARE)
    done = channel.expect(Kind.DONE)[1]
    return {"id": snapshot_id, "base": base, "chunks_sent": done["received"], "chunks_linked": done["linked"],
            "chunks_kept": done["kept"], "bytes": channel.sent - sent_before,
            "seconds": time.monotonic() - began, "pruned": done["pruned"], "warnings": done["warnings"]}


def _check_need(need: list[int], digests: list[str]) -> None:
    """The target may ask only for chunks the snapshot has a file of, each once."""
    if len(set(need)) != len(need):
        raise ProtocolError("PLAN need: a chunk asked for twice")
    for index in need:
        if index >= len(digests) or digests[index] == chunks.ZERO_CHUNK_DIGEST:
            raise ProtocolError(f"PLAN need: chunk {index} is not one the snapshot holds")


def _send_chunk(channel: transport.Channel, chunks_fd: int, index: int) -> None:
    fd = reader.open_chunk(chunks_fd, index)
    try:
        channel.send_file(index, fd, chunks.CHUNK_SIZE)
    finally:
        os.close(fd)
