"""Snapshot operations of a host: create, list, delete, verify, restore (and clone)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from .. import inputs
from ..errors import Conflict, NotFound
from ..snapshot import format as fmt
from ..snapshot import restore
from ..snapshot.save import summary
from . import control, statedir
from .host import START_TIMEOUT, Host

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
           live: bool = True, origin: dict | None = None, compress: bool = False) -> dict:
    vmdir = host.existing(name)
    if not vmdir.process_alive():
        raise Conflict(f"{name}: the VM is not running; a snapshot saves a running VM")
    snapshot_id = _check_id(snapshot_id) if snapshot_id else _new_id(vmdir)
    if vmdir.snapshot_dir(snapshot_id).exists():
        raise Conflict(f"snapshot: {name} already has a snapshot {snapshot_id!r}")
    vmdir.snapshots.mkdir(exist_ok=True, mode=0o700)
    result = control.request(vmdir.socket, "snapshot", timeout=SAVE_TIMEOUT, id=snapshot_id,
                             tags=list(tags), exit=exit, live=live, origin=origin or {"kind": "manual"},
                             compress=compress)
    if exit:
        # As bhyvectl --suspend: return once the VM is gone, so a restore can follow at once.
        host.wait_exit(vmdir, STOP_AFTER_SAVE_TIMEOUT)
    return result


def list_snapshots(host: Host, name: str) -> list[dict]:
    vmdir = host.existing(name)
    found = []
    for snapshot_id in vmdir.snapshot_ids():
        folder = vmdir.snapshot_dir(snapshot_id)
        try:
            found.append(summary(folder, fmt.read_manifest(folder)))
        except fmt.SnapshotError as err:
            found.append({"id": snapshot_id, "path": str(folder), "error": str(err)})
    return found


def delete(host: Host, name: str, snapshot_id: str) -> dict:
    _, folder = _folder(host, name, snapshot_id)
    statedir.remove_tree(host.root, folder)
    return {"id": snapshot_id, "vm": name, "deleted": True}


def verify(host: Host, name: str, snapshot_id: str) -> dict:
    _, folder = _folder(host, name, snapshot_id)
    manifest = fmt.verify(folder)
    restore.check_sections(manifest)
    return {**summary(folder, manifest), "verified": True,
            "sections": len(manifest["sections"]), "chunks": len(manifest["memory"]["chunks"])}


def restore_snapshot(host: Host, name: str, snapshot_id: str, as_name: str | None = None, replace: bool = False,
            eager: bool = False, verify_memory: bool = True, timeout: float = START_TIMEOUT) -> dict:
    vmdir, folder = _folder(host, name, snapshot_id)
    # Everything is checked before a running VM is touched: a bad snapshot changes nothing.
    manifest = fmt.verify(folder) if verify_memory else fmt.read_manifest(folder)
    restore.check_sections(manifest)
    target = _target(host, vmdir, manifest, as_name, replace)
    extra = ("--restore", str(folder)) + (("--eager",) if eager else ()) + ("--no-verify",)
    lock = target.start_lock()
    try:
        host._spawn(target, timeout, extra)
    finally:
        os.close(lock)
    return host.describe(target)


def _target(host: Host, vmdir, manifest: dict, as_name: str | None, replace: bool):
    if as_name is None:
        if vmdir.process_alive():
            if not replace:
                raise Conflict(f"{vmdir.name}: the VM is running; use --replace to restore over it, "
                               "or --as NEWNAME to restore a clone beside it")
            host.poweroff(vmdir.name)
        return vmdir
    if host.get(as_name) is not None:
        raise Conflict(f"as: a VM named {as_name!r} is already defined")
    definition = {**manifest["definition"], "name": as_name}
    host.define(definition)
    return host.vmdir(as_name)
