"""The process that is one running VM (as bhyve runs one process per guest):
the classes it is made of. Its entry point is ``main``.

It holds the VM's lock, writes the console log and ``status.json``, serves
the control socket, and handles guest events: poweroff ends the process, a
reset reboots the guest in the same process (the RTC's NVRAM survives, as on
a PC), a crash stops the VM and records why.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

from ..errors import FerryError
from ..machine.vcpu import GuestEvent, RunState
from ..machine.vm import Event, Machine, MachineSpec
from ..snapshot import restore, save
from ..control import operations as ops
from ..store import hostconfig, snapshots, statedir
from ..store.progress import ProgressWriter, progress_file
from ..control.protocol import ControlServer
from .console import Console
from .outgoing import Outgoing


def spec_of(definition, root: Path) -> MachineSpec:
    """The machine of ``definition`` on the host of the state directory ``root``."""
    return MachineSpec(definition.name, definition.vcpus, definition.memory,
                       definition.kernel_path(),
                       Path(definition.initrd) if definition.initrd else None, definition.cmdline,
                       definition.cpu, hostconfig.load(root).cpu_hidden)


def log(text: str) -> None:
    """The engine log (this process's stderr): what the host did to the VM, and why it stopped."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        print(f"{stamp} {text}", file=sys.stderr, flush=True)
    except OSError:
        pass  # a full disk loses the line; it must not stop the VM or the migration


class VmProcess:
    def __init__(self, vmdir: statedir.VmDir, console: Console | None = None):
        self.vmdir = vmdir
        self.definition = vmdir.load_definition()
        self.console = console or Console(vmdir.console_log)
        self.lock = threading.Lock()
        self.machine: Machine | None = None
        self.boot_count = 0
        self.outgoing = Outgoing(self)
        self.migrated_to: str | None = None
        self.clear_unfinished_snapshots()
        self.handlers = self.operations()
        ops.check_served(self.handlers)
        self.server = ControlServer(vmdir.socket, self.handle, self.connection_closed)

    def clear_unfinished_snapshots(self) -> None:
        """Saves run inside this process, so a new process means any ``.ID.partial``
        was left by one that died mid-save: never listed, and now removed."""
        if self.vmdir.snapshots.is_dir():
            for partial in self.vmdir.snapshots.glob(".*.partial"):
                shutil.rmtree(partial, ignore_errors=True)

    # --- lifecycle ---

    def boot(self, rtc=None) -> None:
        self.machine = Machine(spec_of(self.definition, self.vmdir.root), self.console, rtc=rtc)
        self.machine.boot()
        self.boot_count += 1
        self._started()

    def adopt(self, machine: Machine, vmdir: statedir.VmDir) -> None:
        """Run a machine built elsewhere (an incoming migration, its folder now ``vmdir``)."""
        self.vmdir = vmdir
        self.server.path = vmdir.socket
        self.console.path = vmdir.console_log  # the folder moved: rotate where it is now
        self.machine = machine
        self.boot_count = 1
        self.machine.start()
        self.server.start()
        self.vmdir.write_status(state="running", error=None, pid=os.getpid(), restored_from=None,
                                boot_count=self.boot_count, started_at=time.time(),
                                cpu_features=self.machine.cpu_features)

    def restore(self, folder: Path, lazy: bool, verify_memory: bool) -> None:
        """Run the snapshot in its own shape and definition (under this VM's name): the
        saved vCPUs and memory need a machine like the one they came from. A refused
        restore closes the control socket, leaving the VM as it was."""
        try:
            snapshot = snapshots.load(folder, verify_memory)
            definition = snapshot.definition._replace(name=self.definition.name)
            progress = ProgressWriter(progress_file(self.vmdir.path), "restore")
            try:
                spec = spec_of(definition, self.vmdir.root)
                self.machine = restore.build(snapshot, self.console, spec, lazy, progress)
            finally:
                progress.close()
        except BaseException:
            self.server.close()
            raise
        self.definition = definition
        log(f"restored from snapshot {snapshot.manifest['id']} ({'lazy' if lazy else 'eager'})")
        self.boot_count = 1
        self._started(restored_from=str(folder))

    def _started(self, restored_from: str | None = None) -> None:
        self.machine.start()
        self.vmdir.write_status(state="running", error=None, pid=os.getpid(), restored_from=restored_from,
                                boot_count=self.boot_count, started_at=time.time(),
                                cpu_features=self.machine.cpu_features)

    def run(self) -> int:
        while True:
            event = self.machine.events.get()
            with self.lock:
                self.machine.stop()
                if event.kind is GuestEvent.RESET:
                    self.console.note(f"{event.message}: rebooting")
                    log(f"{event.message}: rebooting")
                    rtc = self.machine.devices.rtc
                    self.machine.close()
                    self.boot(rtc)
                    continue
                return self.finish(event)

    def finish(self, event: Event) -> int:
        crashed = event.kind is GuestEvent.CRASH
        if not event.by_host:
            self.console.note(event.message)
        log(event.message)
        self.vmdir.write_status(state="crashed" if crashed else "stopped",
                                error=event.message if crashed else None, stopped_at=time.time())
        self.server.close()
        if self.migrated_to:
            self.vmdir.retire()
        return 1 if crashed else 0

    # --- control requests ---

    def operations(self) -> dict:
        """The control operations this process serves, by name: exactly the socket door's
        operations of ``operations.TABLE``, whose phases ``handle`` checks for all of them."""
        return {"status": self.op_status, "pause": self.op_pause, "resume": self.op_resume,
                "shutdown": self.op_shutdown, "poweroff": self.op_poweroff, "snapshot": self.snapshot,
                "console-input": self.op_console_input, **self.outgoing.steps()}

    def handle(self, request: dict, session: dict) -> dict:
        op = request.get("op")
        if not isinstance(op, str) or op not in self.handlers:
            raise FerryError(f"op: unknown control request {op!r}")
        if op == "status":
            return self.op_status(request, session)  # never waits behind a long snapshot or migration step
        with self.lock:
            # Under the lock: the phase cannot move between the check and the operation.
            ops.check(op, self.outgoing.current, self.definition.name, self.outgoing.to)
            return self.handlers[op](request, session)

    def op_status(self, request: dict, session: dict) -> dict:
        return self.status()

    def op_pause(self, request: dict, session: dict) -> dict:
        self.machine.pause()
        self.vmdir.write_status(state="paused")
        return self.status()

    def op_resume(self, request: dict, session: dict) -> dict:
        self.machine.resume()
        self.vmdir.write_status(state="running")
        return self.status()

    def op_shutdown(self, request: dict, session: dict) -> dict:
        self.machine.press_power_button()
        return self.status()

    def op_poweroff(self, request: dict, session: dict) -> dict:
        self.power_off("powered off by the host")
        return self.status()

    def power_off(self, reason: str) -> None:
        """Power off now; during precopy or stop-and-copy this cancels the migration first."""
        if self.outgoing.current in ops.MOVING:
            self.outgoing.cancel(reason)
            log(f"migration to {self.outgoing.to} cancelled: {reason}")
        self.machine.events.put(Event(GuestEvent.POWEROFF, reason, by_host=True))

    def poweroff_signal(self) -> None:
        """SIGTERM: a poweroff, unless the table forbids it (the handover is not ours to cut)."""
        with self.lock:
            try:
                ops.check("poweroff", self.outgoing.current, self.definition.name, self.outgoing.to)
            except ops.Busy as err:
                log(f"SIGTERM ignored: {err}")
                return
            self.power_off("powered off by SIGTERM")

    def op_console_input(self, request: dict, session: dict) -> dict:
        data = request.get("data")
        if not isinstance(data, str):
            raise FerryError("data: console input must be text")
        self.machine.devices.serial.feed(data.encode("latin-1", errors="replace"))
        return self.status()

    def snapshot(self, request: dict, session: dict) -> dict:
        folder = self.vmdir.snapshot_dir(request.get("id"))
        stop_after = bool(request.get("exit"))
        # A paused VM stays paused: a checkpoint does not change what the guest is doing.
        leave_paused = stop_after or self.machine.state is RunState.PAUSED
        progress = ProgressWriter(progress_file(self.vmdir.path), "snapshot")
        try:
            result = save.create(self.machine, folder, self.definition.to_dict(), request.get("origin") or {},
                                 request.get("tags") or [], live=request.get("live", True),
                                 leave_paused=leave_paused, compress=bool(request.get("compress")),
                                 progress=progress, parent=self._parent(bool(request.get("full"))))
        finally:
            progress.close()
        if stop_after:
            self.machine.events.put(Event(GuestEvent.POWEROFF, f"stopped after snapshot {folder.name}",
                                           by_host=True))
        return result

    def _parent(self, full: bool):
        return None if full else snapshots.newest_parent(self.vmdir.snapshot_dirs(), self.machine.memory.size)

    def connection_closed(self, session: dict) -> None:
        with self.lock:
            self.outgoing.connection_closed(session)

    def leave(self, reason: str) -> None:
        """The VM now runs elsewhere: stop here and move this host's copy aside."""
        self.migrated_to = reason
        self.machine.events.put(Event(GuestEvent.POWEROFF, reason, by_host=True))

    def status(self) -> dict:
        state = self.machine.state
        return {"state": "paused" if state is RunState.PAUSED else state.value,
                "pid": os.getpid(), "boot_count": self.boot_count,
                "exits": sum(v.exits for v in self.machine.vcpus), "migration": self.outgoing.status()}
