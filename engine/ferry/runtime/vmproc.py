"""The process that is one running VM (as bhyve runs one process per guest).

Started detached by ``Host.start``; it holds the VM's lock, writes the
console log and ``status.json``, serves the control socket, and handles
guest events: poweroff ends the process, a reset reboots the guest in the
same process (the RTC's NVRAM survives, as on a PC), a crash stops the VM
and records why.

    python -m ferry.runtime.vmproc --state-dir DIR NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from ..errors import FerryError
from ..machine.vcpu import GuestEvent, RunState, install_kick_handler
from ..machine.vm import Event, Machine, MachineSpec
from ..snapshot import restore, save
from . import snapshots, statedir
from .control import ControlServer
from .outgoing import Outgoing


def spec_of(definition) -> MachineSpec:
    return MachineSpec(definition.name, definition.vcpus, definition.memory,
                       definition.kernel_path(),
                       Path(definition.initrd) if definition.initrd else None, definition.cmdline)


def log(text: str) -> None:
    """The engine log (this process's stderr): what the host did to the VM, and why it stopped."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {text}", file=sys.stderr, flush=True)


class Console:
    """The console log: every byte the guest writes to COM1, kept across reboots."""

    def __init__(self, path: Path):
        self.handle = open(path, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def flush(self) -> None:
        pass

    def note(self, text: str) -> None:
        self.handle.write(f"\n[ferry] {text}\n".encode())


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
        self.server = ControlServer(vmdir.socket, self.handle, self.connection_closed)

    def clear_unfinished_snapshots(self) -> None:
        """Saves run inside this process, so a new process means any ``.ID.partial``
        was left by one that died mid-save: never listed, and now removed."""
        if self.vmdir.snapshots.is_dir():
            for partial in self.vmdir.snapshots.glob(".*.partial"):
                shutil.rmtree(partial, ignore_errors=True)

    # --- lifecycle ---

    def boot(self, rtc=None) -> None:
        self.machine = Machine(spec_of(self.definition), self.console, rtc=rtc)
        self.machine.boot()
        self.boot_count += 1
        self._started()

    def adopt(self, machine: Machine, vmdir: statedir.VmDir) -> None:
        """Run a machine built elsewhere (an incoming migration, its folder now ``vmdir``)."""
        self.vmdir = vmdir
        self.server.path = vmdir.socket
        self.machine = machine
        self.boot_count = 1
        self.machine.start()
        self.server.start()
        self.vmdir.write_status(state="running", error=None, pid=os.getpid(), restored_from=None,
                                boot_count=self.boot_count, started_at=time.time())

    def restore(self, folder: Path, lazy: bool, verify_memory: bool) -> None:
        """Run the snapshot in its own shape and definition (under this VM's name): the
        saved vCPUs and memory need a machine like the one they came from. A refused
        restore closes the control socket, leaving the VM as it was."""
        try:
            snapshot = snapshots.load(folder, verify_memory)
            definition = dataclasses.replace(snapshot.definition, name=self.definition.name)
            self.machine = restore.build(snapshot, self.console, spec_of(definition), lazy=lazy)
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
                                boot_count=self.boot_count, started_at=time.time())

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

    def handle(self, request: dict, session: dict) -> dict:
        op = request.get("op")
        if op == "status":
            return self.status()  # never waits behind a long snapshot or migration step
        with self.lock:
            if op.startswith("migration-"):
                return self.outgoing.handle(op[len("migration-"):], request, session)
            if op == "pause":
                self.machine.pause()
                self.vmdir.write_status(state="paused")
            elif op == "resume":
                self.machine.resume()
                self.vmdir.write_status(state="running")
            elif op == "shutdown":
                self.machine.press_power_button()
            elif op == "poweroff":
                self.machine.events.put(Event(GuestEvent.POWEROFF, "powered off by the host", by_host=True))
            elif op == "snapshot":
                return self.snapshot(request)
            elif op == "console-input":
                self.machine.devices.serial.feed(request.get("data", "").encode("latin-1"))
            else:
                raise FerryError(f"unknown control request {op!r}")
            return self.status()

    def snapshot(self, request: dict) -> dict:
        folder = self.vmdir.snapshot_dir(request["id"])
        stop_after = bool(request.get("exit"))
        result = save.create(self.machine, folder, self.definition.to_dict(), request["origin"],
                             request.get("tags", []), live=request.get("live", True), leave_paused=stop_after,
                             compress=bool(request.get("compress")))
        if stop_after:
            self.machine.events.put(Event(GuestEvent.POWEROFF, f"stopped after snapshot {request['id']}",
                                           by_host=True))
        return result

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


def _detach_stdio(ready_fd: int, message: str) -> None:
    os.write(ready_fd, (message + "\n").encode())
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferry-vm")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--restore", type=Path, help="start from this snapshot directory")
    parser.add_argument("--eager", action="store_true", help="copy snapshot memory in before running")
    parser.add_argument("--no-verify", action="store_true", help="skip memory checksums on restore")
    parser.add_argument("--incoming", metavar="ADDR:PORT", help="wait for a migration of NAME here")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--accept-timeout", type=float, default=600.0)
    parser.add_argument("--link-timeout", type=float, default=30.0)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--tls-ca", type=Path)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    if args.incoming:
        return receive_main(args)
    vmdir = statedir.VmDir(Path(args.state_dir), args.name)
    stdout = os.dup(1)
    if vmdir.hold_lock() is None:
        _detach_stdio(stdout, "already running")
        return 0
    install_kick_handler()
    try:
        process = VmProcess(vmdir)
        if args.restore:
            process.restore(args.restore, lazy=not args.eager, verify_memory=not args.no_verify)
        else:
            process.boot()
    except Exception as err:
        message = str(err) if isinstance(err, (FerryError, OSError)) else f"{type(err).__name__}: {err}"
        if not args.restore:  # a refused restore changed nothing: the VM stays as it was
            vmdir.write_status(state="crashed", error=message, stopped_at=time.time())
        traceback.print_exc()
        _detach_stdio(stdout, f"error: {message}")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: process.machine.events.put(
        Event(GuestEvent.POWEROFF, "powered off by SIGTERM", by_host=True)))
    process.server.start()
    _detach_stdio(stdout, "ready")
    return process.run()


def receive_main(args) -> int:
    """Wait for NAME to arrive; on commit, go on as its VM process."""
    from ..migration.receiver import Receiver
    from ..migration.transport import Listener, TlsFiles
    from .incoming import Incoming

    stdout = os.dup(1)
    install_kick_handler()
    incoming = Incoming(Path(args.state_dir), args.name, log)
    try:
        token = read_token(args.token_file)
        if incoming.final.exists():
            raise FerryError(f"name: a VM named {args.name!r} is already defined on this host")
        incoming.staging.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if incoming.staging.hold_lock() is None:
            raise FerryError(f"{args.name}: another receiver is already waiting for it")
        listener = Listener(args.incoming, TlsFiles(args.tls_cert, args.tls_key, args.tls_ca), args.link_timeout)
    except FerryError as err:
        _detach_stdio(stdout, f"error: {err}")
        return 1
    log(f"waiting for {args.name} on {args.incoming} (port {listener.port})")
    _detach_stdio(stdout, f"listening {listener.port}")
    receiver = Receiver(listener, token, incoming, args.accept_timeout)
    try:
        outcome = receiver.run()
    except FerryError as err:
        log(f"no migration: {err}")
        outcome = "aborted"
    if outcome != "committed":
        shutil.rmtree(incoming.staging.path, ignore_errors=True)
        listener.close()
        return 1
    if incoming.process is None:
        return 0
    return incoming.process.run()


def read_token(path: Path | None) -> bytes:
    if path is None:
        raise FerryError("token-file: a one-time token file is required")
    try:
        token = Path(path).read_bytes().strip()
    except OSError as err:
        raise FerryError(f"token-file: cannot read {path}: {err.strerror}") from None
    if len(token) < 16:
        raise FerryError(f"token-file: {path} holds {len(token)} bytes, at least 16 are required")
    return token


if __name__ == "__main__":
    sys.exit(main())
