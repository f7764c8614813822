"""The host-level API: what the CLI and the Ansible modules call.

Every method returns plain data (dicts) and raises ``FerryError`` with a
one-line message. Operations that change a VM's state block until the VM
has reached it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import inputs
from ..errors import Conflict, FerryError, NotFound
from ..control import operations as ops
from ..store import definition as defn, drain, statedir
from .info import meminfo_mib

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
HOST_RESERVE_MIB = 512  # kept for the host itself when admitting VMs


def _size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def last_line(path) -> str:
    try:
        lines = [line for line in open(path, errors="replace").read().splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


class Host:
    def __init__(self, state_dir: str | os.PathLike | None = None, must_exist: bool = False):
        self.root = statedir.resolve(state_dir)
        if must_exist and not self.root.is_dir():
            raise NotFound(f"state-dir: {self.root} does not exist (no VM was ever defined here?)")

    def vmdir(self, name: str) -> statedir.VmDir:
        return statedir.VmDir(self.root, name)

    def existing(self, name: str) -> statedir.VmDir:
        vmdir = self.vmdir(name)
        if not vmdir.exists():
            raise NotFound(f"no VM named {name!r} in {self.root}")
        return vmdir

    # --- queries ---

    def names(self) -> list[str]:
        self.clear_abandoned_arrivals()
        return statedir.vm_names(self.root)

    def clear_abandoned_arrivals(self) -> None:
        """Staging folders of receivers that died: never committed, so nothing of them may stay."""
        incoming = self.root / "incoming"
        if not incoming.is_dir():
            return
        for folder in incoming.iterdir():
            if not inputs.VM_NAME.fullmatch(folder.name):
                continue  # not a staging folder the engine made: not ours to delete
            staging = statedir.VmDir(self.root, folder.name, folder="incoming")
            if not staging.process_alive():
                statedir.remove_tree(self.root, folder)

    # --- the operations table, at the host API's door ---

    def phase(self, vmdir: statedir.VmDir, record: dict) -> str:
        if statedir.VmDir(self.root, vmdir.name, folder="incoming").process_alive():
            return ops.RECEIVING
        return ops.phase_of(record, vmdir.process_alive())

    def check_operation(self, op: str, vmdir: statedir.VmDir) -> None:
        """Refuse ``op`` (changing nothing) unless the VM's migration phase allows it."""
        record = vmdir.read_migration()
        ops.check(op, self.phase(vmdir, record), vmdir.name, record.get("to"))

    def get(self, name: str) -> dict | None:
        vmdir = self.vmdir(name)
        return self.describe(vmdir) if vmdir.exists() else None

    def list(self) -> list[dict]:
        return [self.describe(self.vmdir(name)) for name in self.names()]

    def describe(self, vmdir: statedir.VmDir) -> dict:
        info = vmdir.load_definition().to_dict()
        status = vmdir.read_status()
        live = self._live_status(vmdir)
        if live is not None:
            state, error = live["state"], None
        else:
            state, error = status.get("state", "stopped"), status.get("error")
            if state in ("running", "paused"):
                state, error = "crashed", "the VM process ended without recording why (killed?)"
        info.update(state=state, error=error, pid=status.get("pid") if live is not None else None,
                    started_at=status.get("started_at") if live is not None else None,
                    boot_count=status.get("boot_count", 0), path=str(vmdir.path),
                    console_log=str(vmdir.console_log), restored_from=_restored_from(status),
                    cpu_features=status.get("cpu_features") if live is not None else None)
        if live and live.get("migration"):
            info["migration"] = live["migration"]
        if live and "exits" in live:
            info["exits"] = live["exits"]
        return info

    def _live_status(self, vmdir: statedir.VmDir) -> dict | None:
        """What the VM process itself says (running or paused, a migration's progress),
        or None when no process holds the VM."""
        if not vmdir.process_alive():
            return None
        from ..control import protocol as control  # here: a host of stopped VMs opens no socket
        try:
            live = control.request(vmdir.socket, "status", timeout=2)
        except control.ControlError:
            live = {"state": vmdir.read_status().get("state", "running")}
        if live.get("state") not in ("running", "paused"):
            live["state"] = "running"
        return live

    # --- definitions ---

    def define(self, values: dict, replace: bool = False) -> dict:
        new = defn.validate(values)
        vmdir = self.vmdir(new.name)
        self.check_operation("define", vmdir)
        if not vmdir.exists():
            drain.refuse_arrivals(self.root, f"define {new.name}")
        if vmdir.exists():
            old = vmdir.load_definition()
            if not replace:
                raise Conflict(f"name: a VM named {new.name!r} is already defined")
            if vmdir.process_alive() and (old.vcpus, old.memory) != (new.vcpus, new.memory):
                raise Conflict(f"{new.name}: vcpus and memory of a running VM cannot change; "
                               "stop it first, then define and start it again")
        vmdir.save_definition(new)
        return self.describe(vmdir)

    def undefine(self, name: str, with_snapshots: bool = False) -> dict:
        vmdir = self.existing(name)
        self.check_operation("undefine", vmdir)
        if vmdir.process_alive():
            raise Conflict(f"{name}: the VM is running; stop it before undefining it")
        kept = vmdir.snapshot_ids()
        if kept and not with_snapshots:
            raise Conflict(f"{name}: the VM has {len(kept)} snapshot(s) ({', '.join(kept[:3])}"
                           f"{', ...' if len(kept) > 3 else ''}); use --with-snapshots to delete them with it")
        statedir.remove_tree(self.root, vmdir.path)
        return {"name": name, "state": "absent"}

    # --- state changes ---

    def start(self, name: str, timeout: float = START_TIMEOUT, overcommit: bool = False) -> dict:
        timeout = inputs.seconds(timeout)
        vmdir = self.existing(name)
        lock = vmdir.start_lock()
        try:
            if not vmdir.process_alive():
                self.check_operation("start", vmdir)
                self._spawn(vmdir, timeout, overcommit=overcommit)
        finally:
            os.close(lock)
        return self.describe(vmdir)

    def admit(self, vmdir: statedir.VmDir, memory_mib: int) -> None:
        """Refuse a VM whose RAM does not fit beside the running ones (guest RAM is a memfd
        that fills as the guest touches it: an overcommitted host fails later, and worse)."""
        total = meminfo_mib()["MemTotal"]
        committed = sum(vm["memory"] for vm in self.list()
                        if vm["name"] != vmdir.name and vm["state"] in ("running", "paused"))
        room = total - HOST_RESERVE_MIB - committed
        if memory_mib > room:
            raise Conflict(f"memory: {vmdir.name} needs {memory_mib} MiB, this host has {room} MiB left for VMs "
                           f"({total} MiB total, {committed} MiB committed to running VMs, "
                           f"{HOST_RESERVE_MIB} MiB kept for the host); use --overcommit to start it anyway")

    def _spawn(self, vmdir: statedir.VmDir, timeout: float, extra: tuple[str, ...] = (),
               overcommit: bool = False, memory_mib: int | None = None) -> None:
        if not overcommit:
            self.admit(vmdir, memory_mib or vmdir.load_definition().memory)
        from . import launcher  # here: commands that start no VM process skip its imports
        started = launcher.launch(self.root, [*extra, vmdir.name], vmdir.engine_log, timeout)
        if started.line.startswith("error: "):
            started.process.wait(5)
            raise FerryError(f"{vmdir.name}: could not start: {started.line[len('error: '):]}")
        if started.line not in ("ready", "already running"):
            started.process.kill()
            why = f"did not start within {timeout:.0f} s" if not started.answered else "its process ended at once"
            raise FerryError(f"{vmdir.name}: {why}: {last_line(vmdir.engine_log)} (see {vmdir.engine_log})")

    def _control(self, name: str, op: str, **args) -> dict:
        vmdir = self.existing(name)
        if not vmdir.process_alive():
            raise Conflict(f"{name}: the VM is not running")
        from ..control import protocol as control
        control.request(vmdir.socket, op, **args)
        return self.describe(vmdir)

    def pause(self, name: str) -> dict:
        return self._control(name, "pause")

    def resume(self, name: str) -> dict:
        return self._control(name, "resume")

    def console_input(self, name: str, data: bytes) -> None:
        self._control(name, "console-input", data=data.decode("latin-1"))

    def poweroff(self, name: str, timeout: float = STOP_TIMEOUT) -> dict:
        timeout = inputs.seconds(timeout)
        vmdir = self.existing(name)
        if self._ask_to_end(vmdir, "poweroff"):
            self.wait_exit(vmdir, timeout)
        return self.describe(vmdir)

    def stop(self, name: str, timeout: float = STOP_TIMEOUT, force: bool = False) -> dict:
        """Press the ACPI power button and wait ``timeout`` for the guest to power off; with
        ``force`` power it off after that, otherwise a guest still up is an error (as
        ``virsh shutdown``: a stop that quietly became a poweroff would hide a stuck guest)."""
        timeout = inputs.seconds(timeout, zero=True)
        vmdir = self.existing(name)
        if not self._ask_to_end(vmdir, "shutdown") or self.wait_exit(vmdir, timeout, fail=False):
            return self.describe(vmdir)
        if not force:
            raise FerryError(f"{name}: the guest did not power off within {timeout:g} s of the power button "
                             "and still runs; use --force to power it off after the timeout, or ferry poweroff")
        self.poweroff(name)
        return {**self.describe(vmdir), "forced": True}

    def _ask_to_end(self, vmdir: statedir.VmDir, op: str) -> bool:
        """Send ``op`` to the VM process; False when there is no VM process (any more): a
        guest that powers off by itself while we ask has done what was asked."""
        if not vmdir.process_alive():
            return False
        from ..control import protocol as control
        try:
            control.request(vmdir.socket, op)
        except control.ControlError:
            if vmdir.process_alive():
                raise
            return False
        return True

    def wait_exit(self, vmdir: statedir.VmDir, timeout: float, fail: bool = True) -> bool:
        deadline = time.monotonic() + timeout
        while vmdir.process_alive():
            if time.monotonic() > deadline:
                if fail:
                    raise FerryError(f"{vmdir.name}: still running {timeout:.0f} s after poweroff")
                return False
            time.sleep(0.05)
        return True

    # --- folders of VMs that left ---

    def migrated(self) -> list[dict]:
        """What is kept of each VM that migrated away: its logs and snapshots, and where it went."""
        found = []
        for folder in statedir.migrated_folders(self.root):
            record = statedir.read_record(folder / "migration.json")
            found.append({"name": folder.name.rsplit(".", 1)[0], "folder": str(folder), "to": record.get("to"),
                          "left_at": folder.stat().st_mtime, "bytes": _size_of(folder)})
        return found

    def prune_migrated(self, older_than_days: float = 0.0) -> list[dict]:
        """Delete those folders, or those left more than ``older_than_days`` ago."""
        if not inputs.is_positive(older_than_days, zero=True):
            raise inputs.InvalidValue(f"older-than: {older_than_days!r} is not a number of days, 0 or more")
        cutoff = time.time() - older_than_days * 86400
        pruned = [entry for entry in self.migrated() if entry["left_at"] <= cutoff]
        for entry in pruned:
            statedir.remove_tree(self.root, Path(entry["folder"]))
        return pruned

    def host_info(self) -> dict:
        from .info import host_info
        return host_info(self)

    def drain(self, reason: str = "") -> dict:
        return {"drained": drain.mark(self.root, reason)}

    def undrain(self) -> dict:
        return {"drained": None, "was_drained": drain.clear(self.root)}


def _restored_from(status: dict) -> dict | None:
    """The snapshot the VM's current boot came from (its folder is vms/VM/snapshots/ID),
    kept until the VM next starts afresh; None for a boot from its kernel."""
    folder = status.get("restored_from")
    if not isinstance(folder, str):
        return None
    path = Path(folder)
    return {"vm": path.parent.parent.name, "snapshot": path.name}
