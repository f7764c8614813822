"""Snapshot operations of a host: create, list, delete, verify, restore (and clone)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone

from .. import inputs
from ..errors import Conflict, NotFound
from ..snapshot import format as fmt
from ..snapshot import reader, save
from ..snapshot.save import summary
from ..control import protocol as control
from ..store import statedir
from ..store.progress import Watch, progress_file
from ..store.snapshots import load
from .api import START_TIMEOUT, Host

SAVE_TIMEOUT = 3600.0
STOP_AFTER_SAVE_TIMEOUT = 30.0


def _check_id(snapshot_id: str) -> str:
    return inputs.snapshot_id(snapshot_id)


def _new_id(vmdir) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    taken = set(vmdir.snapshot_ids())
    candidate, suffix = stamp, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{stamp}-{suffix}"
    return candidate


def _folder(host: Host, name: str, snapshot_id: str):
    vmdir = host.existing(name)
    folder = vmdir.snapshot_dir(_check_id(snapshot_id))
    if not folder.is_dir():
        raise NotFound(f"{name}: no snapshot {snapshot_id!r}")
    return vmdir, folder


def create(host: Host, name: str, snapshot_id: str | None = None, tags=(), exit: bool = False,
           live: bool = True, origin: dict | None = None, compress: bool = False, full: bool = False,
           progress=None) -> dict:
    """Save a running VM; ``progress(step, done, total)`` hears how far the VM process got.
    It shares unchanged chunks with the VM's newest snapshot unless ``full``."""
    vmdir = host.existing(name)
    if not vmdir.process_alive():
        raise Conflict(f"{name}: the VM is not running; a snapshot saves a running VM")
    snapshot_id = _check_id(snapshot_id) if snapshot_id else _new_id(vmdir)
    folder = vmdir.snapshot_dir(snapshot_id)
    if os.path.lexists(folder):
        raise Conflict(f"snapshot: {name} already has a snapshot {snapshot_id!r}")
    save.reserve(folder)
    try:
        with Watch(progress_file(vmdir.path), progress):
            result = control.request(vmdir.socket, "snapshot", timeout=SAVE_TIMEOUT, id=snapshot_id,
                                     tags=list(tags), exit=exit, live=live, origin=origin or {"kind": "manual"},
                                     compress=compress, full=full)
    except BaseException:
        # The VM process removes the claim of a save it failed; one that never got the request cannot.
        if not vmdir.process_alive():
            statedir.remove_tree(host.root, save.partial_of(folder))
        raise
    if exit:
        # As bhyvectl --suspend: return once the VM is gone, so a restore can follow at once.
        host.wait_exit(vmdir, STOP_AFTER_SAVE_TIMEOUT)
    return {**result, "protected": False}  # a new snapshot is never protected


def list_snapshots(host: Host, name: str) -> list[dict]:
    """Every snapshot, structure and sizes checked (not the memory digests: that is
    ``verify``); a damaged one is listed with the reason."""
    return _summaries(host.existing(name))


def list_replicas(host: Host, name: str | None = None) -> list[dict]:
    """The replicas other hosts sent here (``ferry checkpoint send``), of one VM or of all,
    listed as snapshots are."""
    names = statedir.replica_names(host.root) if name is None else [inputs.vm_name(name)]
    return [{**snap, "vm": vm} for vm in names for snap in _summaries(_replicas_of(host, vm))]


def _replicas_of(host: Host, name: str) -> statedir.VmDir:
    return statedir.VmDir(host.root, name, folder=statedir.REPLICAS)


def _summaries(vmdir: statedir.VmDir) -> list[dict]:
    found, protected = [], vmdir.protected_ids()
    for snapshot_id in vmdir.snapshot_ids():
        folder = vmdir.snapshot_dir(snapshot_id)
        try:
            found.append({**summary(folder, load(folder, verify_memory=False).manifest),
                          "protected": snapshot_id in protected})
        except fmt.SnapshotError as err:
            found.append({"id": snapshot_id, "path": str(folder), "error": str(err)})
    return found


def delete(host: Host, name: str, snapshot_id: str) -> dict:
    vmdir, folder = _folder(host, name, snapshot_id)
    if snapshot_id in vmdir.protected_ids():
        raise Conflict(f"{name}: snapshot {snapshot_id} is protected; unprotect it first "
                       f"(ferry snapshot unprotect {name} {snapshot_id})")
    host.check_operation("snapshot-delete", vmdir)
    statedir.remove_tree(host.root, folder)
    return {"id": snapshot_id, "vm": name, "deleted": True}


def protect(host: Host, name: str, snapshot_id: str, protected: bool = True) -> dict:
    """Mark a snapshot so that neither a policy's prune nor ``snapshot delete`` removes it."""
    vmdir, _ = _folder(host, name, snapshot_id)
    vmdir.set_protected(snapshot_id, protected)
    return {"id": snapshot_id, "vm": name, "protected": protected}


def verify(host: Host, name: str, snapshot_id: str, progress=None) -> dict:
    vmdir, folder = _folder(host, name, snapshot_id)
    manifest = load(folder, progress=progress).manifest
    return {**summary(folder, manifest), "verified": True, "protected": snapshot_id in vmdir.protected_ids(),
            "sections": len(manifest["sections"]), "chunks": len(manifest["memory"]["chunks"])}


def restore_snapshot(host: Host, name: str, snapshot_id: str, as_name: str | None = None, replace: bool = False,
            eager: bool = False, verify_memory: bool = True, timeout: float = START_TIMEOUT,
            overcommit: bool = False, progress=None) -> dict:
    """Run the VM (or a clone ``as_name``) from a snapshot; ``progress`` hears its digest check
    and an eager copy-in."""
    timeout = inputs.seconds(timeout)
    replicas, local = _replicas_of(host, name), host.vmdir(name)
    is_local = local.exists() and local.snapshot_dir(_check_id(snapshot_id)).is_dir()
    if as_name is None and not is_local and replicas.snapshot_dir(snapshot_id).is_dir():
        return _restore_replica(host, replicas, snapshot_id, verify_memory, Start(eager, timeout, overcommit, progress))
    vmdir, folder = _folder(host, name, snapshot_id)
    if as_name is not None:
        inputs.vm_name(as_name, "as")
    else:
        host.check_operation("restore", vmdir)
    # Everything is checked before a running VM is touched: a bad snapshot changes nothing.
    snapshot = load(folder, verify_memory, progress)
    start = Start(eager or snapshot.compressed, timeout, overcommit, progress)  # zstd loads eagerly
    if as_name is None:
        return _restore_in_place(host, vmdir, snapshot, replace, start)
    return _restore_as(host, snapshot, as_name, start)


@dataclass(frozen=True)
class Start:
    """How the restored VM process is started."""
    eager: bool
    timeout: float
    overcommit: bool
    progress: object = None  # hears an eager copy-in, which the VM process reports


def _spawn(host: Host, target, snapshot: reader.Snapshot, start: Start) -> dict:
    # The VM process checks the snapshot again (it may have changed since), memory digests aside.
    extra = ("--restore", str(snapshot.folder)) + (("--eager",) if start.eager else ()) + ("--no-verify",)
    lock = target.start_lock()
    try:
        # A lazy start has nothing to report; no watching thread then, so the launcher may fork.
        with Watch(progress_file(target.path), start.progress if start.eager else None):
            host._spawn(target, start.timeout, extra, overcommit=start.overcommit)
    finally:
        os.close(lock)
    return host.describe(target)


def _shape(vcpus: int, memory: int) -> str:
    return f"{vcpus} vCPU{'s' if vcpus != 1 else ''} and {memory} MiB"


def _restore_in_place(host: Host, vmdir, snapshot: reader.Snapshot, replace: bool, start: Start) -> dict:
    current, saved = vmdir.load_definition(), snapshot.definition
    if (current.vcpus, current.memory) != (saved.vcpus, saved.memory):
        raise Conflict(f"snapshot {snapshot.folder.name} has {_shape(saved.vcpus, saved.memory)}, VM "
                       f"{vmdir.name} is now defined with {_shape(current.vcpus, current.memory)}: "
                       f"restore it --as NEWNAME, or define {vmdir.name} back")
    if vmdir.process_alive():
        if not replace:
            raise Conflict(f"{vmdir.name}: the VM is running; use --replace to restore over it, "
                           "or --as NEWNAME to restore a clone beside it")
        host.poweroff(vmdir.name)
    return _spawn(host, vmdir, snapshot, start)


def _restore_as(host: Host, snapshot: reader.Snapshot, as_name: str, start: Start) -> dict:
    """A clone from the snapshot's own definition; if it does not start, nothing of it stays."""
    if host.get(as_name) is not None:
        raise Conflict(f"as: a VM named {as_name!r} is already defined")
    host.define({**snapshot.manifest["definition"], "name": as_name})
    target = host.vmdir(as_name)
    try:
        return _spawn(host, target, snapshot, start)
    except BaseException:
        if not target.process_alive():
            statedir.remove_tree(host.root, target.path)
        raise


def _restore_replica(host: Host, replicas: statedir.VmDir, snapshot_id: str, verify_memory: bool,
                     start: Start) -> dict:
    """The dead host's case: define the VM from a replica's manifest and run it from the
    replica. Its replicas become its snapshots (one rename, hard links kept), so it goes on
    from here as a VM of this host. Refused where a VM of that name is defined: that VM is
    another, and its replica is not restored over it. If the VM does not start, the
    replicas are moved back and the definition removed."""
    name = replicas.name
    if host.vmdir(name).exists():
        raise Conflict(f"{name}: a VM of that name is defined on this host, so its replica {snapshot_id} is not "
                       f"restored here (restore it where {name} is not defined, or undefine {name} first)")
    lock = replicas.hold_lock()
    if lock is None:
        raise Conflict(f"busy: a checkpoint send of {name} to this host is under way")
    try:
        snapshot = load(replicas.snapshot_dir(snapshot_id), verify_memory, start.progress)
        if snapshot.definition.name != name:
            raise Conflict(f"{name}: replica {snapshot_id} is of a VM named {snapshot.definition.name!r}")
        host.define(snapshot.manifest["definition"])
        target = host.vmdir(name)
        for partial in replicas.snapshots.glob(".*.partial"):
            statedir.remove_tree(host.root, partial)  # a cut send: not a snapshot of the VM
        os.rename(replicas.snapshots, target.snapshots)
        try:
            result = _spawn(host, target, load(target.snapshot_dir(snapshot_id), verify_memory=False), start)
        except BaseException:
            if not target.process_alive():
                os.rename(target.snapshots, replicas.snapshots)
                statedir.remove_tree(host.root, target.path)
            raise
        statedir.remove_tree(host.root, replicas.path)
        return result
    finally:
        os.close(lock)
