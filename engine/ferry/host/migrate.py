"""``ferry migrate`` and ``ferry receive``: the two ends as this host's commands run them."""

from __future__ import annotations

import json
from dataclasses import asdict
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

from ..errors import Conflict, FerryError
from ..migration import sender, transport
from ..migration.source_memory import SourceMemory
from . import launcher
from ..control import operations as ops
from ..control.protocol import Session
from .api import Host
from ..vmprocess.outgoing import decode_sections
from ..store import drain
from ..store.token import read_token

PROGRESS_EVERY = 0.25
RECEIVER_START_TIMEOUT = 30.0
SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kmgt]?)(i?b?)?(/s)?$", re.IGNORECASE)


def parse_rate(text: str | None) -> float | None:
    """``500M``, ``1.5G``, ``800MiB/s``: bytes per second (K, M, G are powers of 1024)."""
    if not text:
        return None
    match = SIZE.match(text.strip())
    if not match:
        raise FerryError(f"bandwidth: {text!r} is not a rate like 500M or 1G (bytes per second)")
    return float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2).lower() or "_")


class SourceVm:
    """The running VM, driven by the sender over one control connection."""

    def __init__(self, session: Session, vmdir, to: str):
        self.session = session
        self.vmdir = vmdir
        self.to = to
        self.memory: SourceMemory | None = None
        self._sections: list = []
        self.pause_parts: dict = {}
        self._last_progress = 0.0

    def call(self, op: str, **args):
        """One step; a step refused or cut short because the VM was powered off during the
        migration (a cancel) says so, instead of a broken control connection."""
        try:
            return self.session.call(op, **args)
        except FerryError:
            reason = str(self.vmdir.read_migration().get("reason", ""))
            if reason.startswith("cancelled:"):
                raise Conflict(f"{self.vmdir.name}: migration {reason}; the VM stays on this host, "
                               "and the destination discards what it received") from None
            raise

    def begin(self, live: bool) -> None:
        info, fds = self.call("migration-begin", live=live, to=self.to)
        self.memory = SourceMemory(info["size"], fd=fds[0] if fds else None, pid=info["pid"], base=info["base"])

    def dirty(self):
        return [tuple(r) for r in self.call("migration-dirty")[0]["ranges"]]

    def throttle(self, share: float) -> None:
        self.call("migration-throttle", share=share)

    def pause(self):
        answer = self.call("migration-pause")[0]
        self._sections = decode_sections(answer["sections"])  # captured in the pause
        self.pause_parts = answer["parts"]
        return [tuple(r) for r in answer["ranges"]]

    def sections(self):
        return self._sections

    def resume(self) -> None:
        try:
            self.call("migration-resume")
        except FerryError:
            pass  # the VM process resumes by itself when this connection ends

    def handover(self) -> None:
        self.call("migration-handover")

    def finish(self, outcome: str, report: dict) -> None:
        self.call("migration-finish", outcome=outcome, report=report)

    def progress(self, progress: dict) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            try:
                self.call("migration-progress", progress=progress)
            except FerryError:
                pass


def migrate(host: Host, name: str, to: str, token_file: Path, mode: str = "live",
            max_downtime_ms: float = 300.0, timeout_s: float = 3600.0, bandwidth: str | None = None,
            transport_name: str = "tcp", tls: transport.TlsFiles | None = None,
            ssh: transport.SshOptions | None = None, on_progress=lambda progress: None,
            link_timeout: float = transport.LINK_TIMEOUT, resolve: bool = False) -> dict:
    if mode not in ("live", "warm", "cold"):
        raise FerryError(f"mode: {mode!r} is not one of live, warm, cold")
    options = sender.Options(mode, max_downtime_ms, timeout_s, parse_rate(bandwidth), read_token(token_file))
    if transport_name == "tls":  # bad files are refused before the VM is touched
        transport.tls_context(ssl.Purpose.SERVER_AUTH, tls or transport.TlsFiles())
    if transport_name == "ssh":
        transport.check_ssh(ssh or transport.SshOptions())
    vmdir = host.existing(name)
    connect = lambda: transport.connect(to, transport_name, tls, ssh, link_timeout=link_timeout)  # noqa: E731
    if resolve:
        return _resolve(vmdir, connect, options, to)
    host.check_operation("migrate", vmdir)
    if mode == "cold":
        return _cold(vmdir, connect, options, on_progress, to)
    if not vmdir.process_alive():
        raise Conflict(f"{name}: the VM is not running; use --mode cold to move a stopped VM")
    session = Session(vmdir.socket, timeout=120)
    source = SourceVm(session, vmdir, to)

    def progress(values: dict) -> None:
        source.progress(values)
        on_progress(values)

    try:
        report = sender.Sender(source, connect, options, progress).run(vmdir.load_definition().to_dict())
    finally:
        if source.memory is not None:
            source.memory.close()
        session.close()
    return _summary(name, to, report)


def _resolve(vmdir, connect, options, to: str) -> dict:
    """Settle a migration left in doubt: ask the destination, then finish or resume here."""
    if not vmdir.process_alive():
        return _resolve_without_process(vmdir, connect, options, to)
    session = Session(vmdir.socket, timeout=120)
    try:
        session.call("migration-attach")
        worker = sender.Sender(SourceVm(session, vmdir, to), connect, options)
        worker.paused_at = time.monotonic()
        outcome = worker.resolve()
        session.call("migration-finish", outcome=outcome, report={"resolved": True})
    finally:
        session.close()
    return {"name": vmdir.name, "to": to, "outcome": outcome, "resolved": True}


def _resolve_without_process(vmdir, connect, options, to: str) -> dict:
    """The VM process ended during the handover (a cold migration, or it was killed): the
    destination's answer decides whether the VM lives there now or is free to start here."""
    if ops.phase_of(vmdir.read_migration(), False) not in ops.SETTLING:
        raise Conflict(f"{vmdir.name}: no migration of it is waiting for its outcome")
    worker = sender.Sender(StoppedVm(vmdir), connect, options)
    worker.paused_at = time.monotonic()
    outcome = worker.resolve()
    if outcome == "committed":
        vmdir.retire()
    else:
        vmdir.write_migration(phase="aborted", role="source", reason="resolved: the destination aborted")
    return {"name": vmdir.name, "to": to, "outcome": outcome, "resolved": True}


class NoMemory:
    """A stopped VM has no RAM to send."""

    size = 0
    fd = None

    def used_ranges(self):
        return []

    def read(self, offset: int, length: int) -> bytes:
        return b""


class StoppedVm:
    """A stopped VM for a cold migration: only its definition travels."""

    def __init__(self, vmdir):
        self.vmdir = vmdir
        self.memory = NoMemory()
        self.pause_parts: dict = {}

    def begin(self, live: bool) -> None:
        pass

    def pause(self):
        return []

    def sections(self):
        return []

    def resume(self) -> None:
        pass

    def progress(self, progress: dict) -> None:
        pass

    def handover(self) -> None:
        self.vmdir.write_migration(phase="handover", role="source")

    def finish(self, outcome: str, report: dict) -> None:
        if outcome == "committed":
            self.vmdir.retire()


def _cold(vmdir, connect, options, on_progress, to: str) -> dict:
    if vmdir.process_alive():
        raise Conflict(f"{vmdir.name}: the VM is running; stop it first, or use --mode warm or live")
    report = sender.Sender(StoppedVm(vmdir), connect, options, on_progress).run(
        vmdir.load_definition().to_dict())
    return _summary(vmdir.name, to, report)


def _summary(name: str, to: str, report) -> dict:
    return {"name": name, "to": to, **asdict(report)}


# --- receiving ---

def receive(host: Host, name: str, listen: str, token_file: Path, timeout: float = 600.0,
            tls: transport.TlsFiles | None = None, detach: bool = False,
            link_timeout: float = transport.LINK_TIMEOUT) -> dict:
    host.vmdir(name)  # the name first: it becomes the staging folder's
    drain.refuse_arrivals(host.root, f"receive {name}")
    read_token(token_file)
    transport.parse_address(listen)
    args = ["--incoming", listen, "--token-file", str(Path(token_file).resolve()),
            "--accept-timeout", str(timeout), "--link-timeout", str(link_timeout)]
    for flag, path in (("--tls-cert", tls and tls.cert), ("--tls-key", tls and tls.key), ("--tls-ca", tls and tls.ca)):
        if path:
            args += [flag, str(path)]
    host.root.mkdir(parents=True, exist_ok=True)
    log = host.root / f"receive-{name}.log"
    started = launcher.launch(host.root, [*args, name], log, RECEIVER_START_TIMEOUT)
    child, line = started.process, started.line
    if line.startswith("error: "):
        raise FerryError(line[len("error: "):])
    if not line.startswith("listening"):
        child.kill()
        raise FerryError(f"{name}: the receiver did not start (see {log})")
    port = int(line.split()[1])
    if detach:
        return {"name": name, "listening": listen, "port": port, "pid": child.pid}
    return _await_arrival(host, name, child, port)


def _await_arrival(host: Host, name: str, child: subprocess.Popen, port: int) -> dict:
    vmdir = host.vmdir(name)
    while child.poll() is None:
        if vmdir.exists() and vmdir.read_migration().get("phase") == "committed":
            return {**host.describe(vmdir), "port": port, "outcome": "committed"}
        time.sleep(0.05)
    if vmdir.exists():
        return {**host.describe(vmdir), "port": port, "outcome": "committed"}
    raise FerryError(f"{name}: no VM arrived (see {host.root}/receive-{name}.log)")


def render_progress(progress: dict) -> None:
    total = progress.get("bytes_total") or 1
    done = min(progress.get("bytes_sent", 0) / total, 1.0)
    bar = "#" * int(done * 30)
    sys.stderr.write(f"\r{progress.get('phase', ''):>13} [{bar:<30}] {progress.get('bytes_sent', 0) >> 20} MiB "
                     f"{progress.get('rate', 0) / 2**20:7.1f} MiB/s round {progress.get('round', 0)} "
                     f"throttle {progress.get('throttle', 0):.0%} ")
    sys.stderr.flush()


def json_progress(progress: dict) -> None:
    print(json.dumps({"progress": progress}, sort_keys=True), flush=True)
