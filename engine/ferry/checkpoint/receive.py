"""``ferry checkpoint receive --stdio``: the target's end of a replication (``wire.py``).

Replicas live in ``STATE_DIR/replicas/NAME/snapshots/ID``, snapshots in the format's own
layout that define no VM here (a VM defined on two hosts would be two VMs). Each chunk is
checked against the manifest's digest before it is written; a replica is written as
``.ID.partial`` and renamed to ``ID`` only when whole and synced, so a cut link, a bad
chunk or a sender that stalls leaves at most a partial folder, never a replica. A partial
folder keeps the chunks that arrived, so the next send of that checkpoint sends only the
rest. After each commit the VM's replicas are pruned by this host's own policy.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from ..errors import Conflict, FerryError
from ..files import open_private, sync_directory
from ..host.api import Host
from ..memory import chunks
from ..migration.protocol import Kind, ProtocolError, choose_version
from ..migration.transport import Channel
from ..snapshot import reader
from ..snapshot.save import link_chunk, partial_of
from ..store import definition as defn
from ..store import statedir
from ..store.snapshots import load
from . import plan, wire
from . import policy as policies

PAGE = 4096
ZERO_PAGE = bytes(PAGE)


def serve(host: Host, channel: Channel, policy_file: Path | None) -> list[dict]:
    """Answer one sender until it says DONE; what each committed replica took. A failure is
    told to the sender (FAIL) and raised: a partial folder stays for the next send."""
    try:
        _, hello = channel.expect(Kind.HELLO)
        version = choose_version(hello["versions"], wire.MIN_VERSION, wire.VERSION)
        channel.send(Kind.HELLO, {"version": version, "engine": __version__})
        channel.authenticated()  # ssh authenticated the sender; messages may now be as large as a manifest
        _, offer = channel.expect(Kind.OFFER)
        replicas = statedir.VmDir(host.root, offer["name"], folder=statedir.REPLICAS)
        lock = _lock(host, replicas)
        try:
            channel.send(Kind.ACCEPT, {"replicas": replicas.snapshot_ids()})
            return _checkpoints(host, replicas, channel, policy_file)
        finally:
            os.close(lock)
    except FerryError as err:
        _tell(channel, err)
        raise


def _checkpoints(host: Host, replicas: statedir.VmDir, channel: Channel, policy_file: Path | None) -> list[dict]:
    done = []
    while True:
        frame = channel.recv_frame()
        message = channel.recv_message(frame)
        if frame.kind is Kind.DONE:
            return done
        if frame.kind is not Kind.PLAN:
            raise ProtocolError(f"expected PLAN or DONE, got {frame.kind.name}")
        done.append(Incoming(host, replicas, channel, message).receive(policy_file))


def _tell(channel: Channel, err: FerryError) -> None:
    """Best effort: the link may be what failed."""
    try:
        channel.send(Kind.FAIL, {"reason": " ".join(str(err).split())[:1000]})
    except FerryError:
        pass


def _lock(host: Host, replicas: statedir.VmDir) -> int:
    """The VM's replica lock, held for the whole session: a second send is refused, not interleaved."""
    where = os.uname().nodename
    if host.vmdir(replicas.name).exists():
        raise Conflict(f"{replicas.name} is defined on {where}: a VM that is here is not received as a replica")
    replicas.make()
    fd = replicas.hold_lock()
    if fd is None:
        raise Conflict(f"busy: a send of {replicas.name} to {where} is under way")
    return fd


class Incoming:
    """One checkpoint arriving as replica ``id``."""

    def __init__(self, host: Host, replicas: statedir.VmDir, channel: Channel, plan_message: dict):
        self.host, self.replicas, self.channel = host, replicas, channel
        self.id, self.base = plan_message["id"], plan_message["base"]
        self.folder = replicas.snapshot_dir(self.id)
        self.tags: tuple = ()

    def receive(self, policy_file: Path | None) -> dict:
        if os.path.lexists(self.folder):
            raise ProtocolError(f"PLAN id: {self.host.root} already holds replica {self.id} of {self.replicas.name}")
        manifest_data, state_data = self._section(wire.MANIFEST), self._section(wire.STATE)
        digests = self._check(manifest_data, state_data)
        partial = self._partial()
        chunks_fd = self._chunks_folder(partial)
        try:
            kept = self._keep_verified(chunks_fd, digests)
            linked = self._link_base(chunks_fd, digests, kept)
            need = [index for index, value in enumerate(digests)
                    if value != chunks.ZERO_CHUNK_DIGEST and index not in kept and index not in linked]
            self.channel.send(Kind.PLAN, {"need": need})
            self._receive_chunks(chunks_fd, digests, need)
            self.channel.expect(Kind.PREPARE)
            self._commit(partial, chunks_fd, manifest_data, state_data, kept | set(need))
        finally:
            os.close(chunks_fd)
        pruned, warnings = prune(self.host, self.replicas, self.id, self.tags, policy_file)
        result = {"id": self.id, "received": len(need), "linked": len(linked), "kept": len(kept),
                  "pruned": pruned, "warnings": warnings}
        self.channel.send(Kind.DONE, result)
        return result

    def _section(self, name: str) -> bytes:
        frame = self.channel.recv_frame()
        if frame.kind is not Kind.SECTION:
            raise ProtocolError(f"expected SECTION {name}, got {frame.kind.name}")
        head, data = self.channel.recv_section(frame)
        if head["name"] != name:
            raise ProtocolError(f"SECTION name: {head['name']!r}, expected {name!r}")
        if chunks.digest(data) != head["checksum"]:
            raise ProtocolError(f"SECTION {name}: checksum mismatch")
        return data

    def _check(self, manifest_data: bytes, state_data: bytes) -> list[str]:
        """The manifest and sections by the snapshot reader's rules; the chunk digests."""
        manifest = reader.parse_json(manifest_data, wire.MANIFEST)
        definition = reader.check_manifest(manifest, len(state_data), defn.validate)
        reader.read_sections(state_data, manifest["sections"], definition.vcpus)
        if manifest["memory"]["file"] != reader.CHUNKS:
            raise ProtocolError(f"{wire.MANIFEST}: memory.file: {manifest['memory']['file']!r}, only a snapshot "
                                "in chunk files is replicated")
        if definition.name != self.replicas.name:
            raise ProtocolError(f"{wire.MANIFEST}: definition.name: {definition.name!r}, this send is of "
                                f"{self.replicas.name!r}")
        self.tags = definition.tags
        return manifest["memory"]["chunks"]

    def _partial(self) -> Path:
        """``.ID.partial``, kept from a send that was cut or made now; any other partial
        folder of the VM (of a checkpoint the sender no longer offers) is removed."""
        snapshots = statedir.check_inside(self.host.root, self.replicas.snapshots)
        snapshots.mkdir(mode=0o700, exist_ok=True)
        partial = statedir.check_inside(self.host.root, partial_of(self.folder))
        for entry in snapshots.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".partial") and entry != partial:
                statedir.remove_tree(self.host.root, entry)
        partial.mkdir(mode=0o700, exist_ok=True)
        (partial / reader.CHUNKS).mkdir(mode=0o700, exist_ok=True)
        return partial

    @staticmethod
    def _chunks_folder(partial: Path) -> int:
        folder_fd = reader.open_folder(partial)
        try:
            return reader.open_subfolder(folder_fd, reader.CHUNKS)
        finally:
            os.close(folder_fd)

    @staticmethod
    def _keep_verified(chunks_fd: int, digests: list[str]) -> set[int]:
        """Chunks a cut send left that match this manifest, each hashed again; anything else
        in the folder (a chunk of another content, a file half written) is removed."""
        kept = set()
        for name in os.listdir(chunks_fd):
            index = int(name) if name.isdigit() and name == str(int(name)) else -1
            if 0 <= index < len(digests) and digests[index] != chunks.ZERO_CHUNK_DIGEST \
                    and _holds(chunks_fd, index, digests[index]):
                kept.add(index)
            else:
                os.unlink(name, dir_fd=chunks_fd)
        return kept

    def _link_base(self, chunks_fd: int, digests: list[str], kept: set[int]) -> set[int]:
        """Hard links to the base replica's files of the chunks with the same digest at the same index."""
        base = self._base(len(digests))
        if base is None:
            return set()
        base_fd = self._chunks_folder(base.folder)
        try:
            return {index for index, value in enumerate(digests)
                    if value != chunks.ZERO_CHUNK_DIGEST and index not in kept and base.digests[index] == value
                    and link_chunk(base_fd, chunks_fd, index)}
        finally:
            os.close(base_fd)

    def _base(self, count: int) -> reader.Snapshot | None:
        if self.base is None or not self.replicas.snapshot_dir(self.base).is_dir():
            return None  # the sender's idea of what is here is out of date: a full send
        try:
            base = load(self.replicas.snapshot_dir(self.base), verify_memory=False)
        except FerryError:
            return None
        return base if base.chunked and len(base.digests) == count else None

    def _receive_chunks(self, chunks_fd: int, digests: list[str], need: list[int]) -> None:
        """Exactly the chunks asked for, each checked before a byte of it is written."""
        remaining = set(need)
        buffer = memoryview(bytearray(chunks.CHUNK_SIZE))
        while remaining:
            frame = self.channel.recv_frame()
            if frame.kind is not Kind.MEM:
                raise ProtocolError(f"expected MEM, got {frame.kind.name} with {len(remaining)} chunks to come")
            if frame.a not in remaining:
                raise ProtocolError(f"MEM: chunk {frame.a} was not asked for")
            if frame.b != chunks.CHUNK_SIZE:
                raise ProtocolError(f"MEM: chunk {frame.a} of {frame.b} bytes, a chunk has {chunks.CHUNK_SIZE}")
            self.channel.recv_into(buffer)
            if chunks.digest(buffer) != digests[frame.a]:
                raise ProtocolError(f"chunks/{frame.a}: checksum mismatch, the chunk is refused")
            _write_chunk(chunks_fd, frame.a, buffer)
            remaining.discard(frame.a)

    def _commit(self, partial: Path, chunks_fd: int, manifest_data: bytes, state_data: bytes,
                written: set[int]) -> None:
        """Synced, checked whole by the snapshot reader, then renamed: the replica appears
        whole or not at all."""
        for index in sorted(written):
            fd = os.open(str(index), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=chunks_fd)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        os.fsync(chunks_fd)
        for name, data in ((wire.STATE, state_data), (wire.MANIFEST, manifest_data)):
            (partial / name).unlink(missing_ok=True)  # left by a commit cut short
            with open_private(partial / name) as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        load(partial, verify_memory=False)
        sync_directory(partial)
        os.rename(partial, self.folder)
        sync_directory(self.folder.parent)


def _holds(chunks_fd: int, index: int, value: str) -> bool:
    try:
        fd = reader.open_chunk(chunks_fd, index)
    except FerryError:
        return False
    try:
        return chunks.digest(os.pread(fd, chunks.CHUNK_SIZE, 0)) == value
    finally:
        os.close(fd)


def _write_chunk(chunks_fd: int, index: int, data: memoryview) -> None:
    """A chunk file of exactly 2 MiB whose all-zero pages stay holes (as a save writes them),
    under a temporary name until written: a file named by its index is always whole."""
    temporary = f".{index}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=chunks_fd)
    try:
        os.ftruncate(fd, chunks.CHUNK_SIZE)
        for start, end in _data_runs(data):
            while start < end:
                start += os.pwrite(fd, data[start:end], start)
    finally:
        os.close(fd)
    os.rename(temporary, str(index), src_dir_fd=chunks_fd, dst_dir_fd=chunks_fd)


def _data_runs(data: memoryview):
    """(start, end) of the runs of pages of ``data`` that are not all zero."""
    start = None
    for offset in range(0, len(data), PAGE):
        zero = data[offset:offset + PAGE] == ZERO_PAGE
        if zero and start is not None:
            yield start, offset
            start = None
        elif not zero and start is None:
            start = offset
    if start is not None:
        yield start, len(data)


def prune(host: Host, replicas: statedir.VmDir, newest: str, tags, policy_file: Path | None) -> tuple[list, list]:
    """Delete the VM's replicas this host's policy keeps no more (never ``newest``, the base of
    the next send); no policy file, or one that does not cover the VM: nothing is pruned.
    Returns (ids pruned, warnings)."""
    if policy_file is None or not policy_file.exists():
        return [], []
    try:
        vm_policy = policies.load(policy_file).for_vm(replicas.name, tags)
    except policies.PolicyError as err:
        return [], [f"no prune: {err}"]
    if vm_policy is None:
        return [], []
    found = []
    for snapshot_id in replicas.snapshot_ids():
        try:
            origin = load(replicas.snapshot_dir(snapshot_id), verify_memory=False).manifest["origin"]
        except FerryError:
            continue  # a damaged replica's origin is unknown: never pruned
        checkpoint = plan.from_origin(snapshot_id, origin, held=snapshot_id == newest)
        if checkpoint is not None:
            found.append(checkpoint)
    pruned = [checkpoint.id for checkpoint in plan.to_prune(vm_policy, found)]
    for snapshot_id in pruned:
        statedir.remove_tree(host.root, replicas.snapshot_dir(snapshot_id))
    return pruned, []
