"""QEMU as the snapshot benchmark's anchor: a Linux guest under ``-accel tcg`` (this machine's
KVM cannot run QEMU guests) that holds a chosen amount of non-zero memory, saved with
``stop`` + ``migrate`` to a file and restored with ``-incoming``, all over QMP.

The guest is the Debian kernel Ferry's Linux guest uses (engine/guests/linux/out/vmlinuz)
with an initramfs of our own: busybox, and an /init that reports on COM1, then takes a
size from COM1 and fills that many MiB of tmpfs with non-zero data. Taking the size after
boot lets the benchmark first measure what the kernel alone leaves non-zero and then fill
only the rest, so QEMU saves the same non-zero footprint as the Ferry guest.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

from common import MIB, ROOT, BenchError, wait_for

QEMU = "qemu-system-x86_64"
LINUX_OUT = ROOT / "engine" / "guests" / "linux" / "out"
LINUX_BUILD = ROOT / "engine" / "guests" / "linux" / "build.sh"
DEFAULT_MAX_BANDWIDTH = 128 * MIB  # QEMU 7.2's migration default

# One cat of the same random MiB, named N times: /dev/urandom alone, or many small
# writes, are slow under TCG. QEMU only skips all-zero pages, so repeated content costs
# it as much as random content. Nothing is deleted afterwards: freed pages would keep
# their contents and be saved as well.
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=95% tmpfs /fill
echo BENCH-READY
read -r mib
head -c 1048576 /dev/urandom > /fill/seed
set --
i=1
while [ "$i" -lt "${mib:-1}" ]; do set -- "$@" /fill/seed; i=$((i + 1)); done
[ "$#" -gt 0 ] && cat "$@" > /fill/data
echo "BENCH-FILLED mib=${mib:-0}"
while :; do sleep 3600; done
"""


def unavailable() -> str | None:
    """Why the QEMU anchor cannot run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not installed (apt-get install -y qemu-system-x86)"
    if _busybox() is None:
        return "no static busybox for the guest's initramfs (apt-get install -y busybox-static)"
    return None


def version() -> str:
    done = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.splitlines()[0] if done.stdout else "?"


def _busybox() -> Path | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and b"statically linked" in subprocess.run(
                ["file", "-L", str(path)], capture_output=True, timeout=30).stdout:
            return path
    return None


def kernel() -> Path:
    """The Linux guest's kernel, built (from Debian packages) if it is not there yet."""
    image = LINUX_OUT / "vmlinuz"
    if not image.is_file():
        done = subprocess.run(["bash", str(LINUX_BUILD)], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not image.is_file():
            raise BenchError(f"building the Linux guest failed: {done.stderr.strip()[-400:]}")
    return image


# --- initramfs ---

def cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), inode: int = 0) -> bytes:
    fields = [inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    header = b"070701" + b"".join(b"%08X" % value for value in fields) + name.encode() + b"\0"
    return header + b"\0" * (-len(header) % 4) + data + b"\0" * (-len(data) % 4)


def write_cpio(path: Path, entries) -> Path:
    """An uncompressed newc archive of (name, mode, data, rdev) entries."""
    with open(path, "wb") as archive:
        for inode, (name, mode, data, rdev) in enumerate(entries, start=1):
            archive.write(cpio_entry(name, mode, data, rdev, inode))
        archive.write(cpio_entry("TRAILER!!!", 0))
    return path


def build_initramfs(workdir: Path) -> Path:
    """An uncompressed newc archive; /dev/console is in it because the kernel opens it before /init."""
    busybox = _busybox()
    entries = [("bin", stat.S_IFDIR | 0o755, b"", (0, 0)), ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
               ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)), ("proc", stat.S_IFDIR | 0o755, b"", (0, 0)),
               ("fill", stat.S_IFDIR | 0o755, b"", (0, 0)),
               ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes(), (0, 0)),
               ("init", stat.S_IFREG | 0o755, INIT.encode(), (0, 0))]
    return write_cpio(workdir / "bench-initramfs.cpio", entries)


# --- QMP ---

def connect_unix(sock: socket.socket, path: Path) -> bool:
    """One try to reach a socket QEMU may not have created yet."""
    try:
        sock.connect(str(path))
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False


class Qmp:
    """A QMP client that keeps the events it reads past (STOP and RESUME time the downtime)."""

    def __init__(self, path: Path, timeout: float = 30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        wait_for(lambda: connect_unix(self.sock, path), timeout, f"QMP socket {path}", interval=0.01)
        self.stream = self.sock.makefile("rwb")
        self.events: list[dict] = []
        self._read()
        self.call("qmp_capabilities")

    def _read(self) -> dict:
        try:
            line = self.stream.readline()
        except socket.timeout:
            raise BenchError("QMP: no answer from QEMU") from None
        if not line:
            raise BenchError("QMP: QEMU closed the connection")
        return json.loads(line)

    def call(self, command: str, **arguments):
        self.stream.write(json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})}).encode()
                          + b"\n")
        self.stream.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise BenchError(f"QMP {command}: {reply['error'].get('desc')}")
            elif "return" in reply:
                return reply["return"]

    def status(self) -> str:
        return self.call("query-status")["status"]

    def event_time(self, name: str, **data) -> float | None:
        """Host clock of the last ``name`` event whose data holds ``data`` (QEMU stamps events
        with gettimeofday)."""
        found = [e["timestamp"] for e in self.events
                 if e["event"] == name and all(e.get("data", {}).get(k) == v for k, v in data.items())]
        return found[-1]["seconds"] + found[-1]["microseconds"] / 1e6 if found else None

    def close(self) -> None:
        self.sock.close()


# --- a QEMU VM ---

class SerialPort:
    """COM1 over a unix socket: what the guest prints is collected, and we can type to it."""

    def __init__(self, path: Path, timeout: float = 30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        wait_for(lambda: connect_unix(self.sock, path), timeout, f"serial socket {path}", interval=0.002)
        self.output = bytearray()
        self.reader = threading.Thread(target=self._read, name="qemu-serial", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def wait(self, marker: bytes, timeout: float) -> None:
        wait_for(lambda: marker in self.output, timeout,
                 f"QEMU guest: {marker.decode()} on COM1 (so far: {bytes(self.output[-300:])!r})", interval=0.02)

    def type(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r")

    def close(self) -> None:
        self.sock.close()


class QemuVm:
    """One QEMU process; ``close`` always ends it."""

    def __init__(self, workdir: Path, name: str, memory_mib: int, initramfs: Path, incoming: Path | None = None):
        self.qmp_path = workdir / f"{name}.qmp"
        self.serial_path = workdir / f"{name}.serial"
        for path in (self.qmp_path, self.serial_path):
            path.unlink(missing_ok=True)
        command = [QEMU, "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot",
                   "-m", str(memory_mib), "-smp", "1", "-kernel", str(kernel()), "-initrd", str(initramfs),
                   "-append", "console=ttyS0 panic=-1 nokaslr quiet",
                   "-chardev", f"socket,id=com1,path={self.serial_path},server=on,wait=off",
                   "-serial", "chardev:com1",
                   "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if incoming is not None:
            command += ["-incoming", f"exec:cat {incoming}"]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        self.qmp: Qmp | None = None
        self.serial: SerialPort | None = None
        try:
            self.qmp = Qmp(self.qmp_path)
        except BaseException:
            self.close()
            raise

    def attach_serial(self) -> SerialPort:
        self.serial = SerialPort(self.serial_path)
        return self.serial

    def save(self, target: Path, max_bandwidth: int, timeout: float = 300) -> dict:
        """``stop`` + ``migrate`` into ``target``; the guest stays stopped until ``cont``."""
        target.unlink(missing_ok=True)
        self.qmp.call("migrate-set-parameters", **{"max-bandwidth": max_bandwidth})
        started = time.perf_counter()
        self.qmp.call("stop")
        self.qmp.call("migrate", uri=f"exec:cat > {target}")
        info = wait_for(lambda: self._migration_over(), timeout, "QEMU migrate to file", interval=0.002)
        seconds = time.perf_counter() - started
        if info.get("status") != "completed":
            raise BenchError(f"QEMU migrate: {info.get('status')}: {info.get('error-desc', '')}")
        ram = info.get("ram", {})
        return {"seconds": seconds, "qemu_total_ms": info.get("total-time"),
                "normal_bytes": ram.get("normal-bytes"), "file_bytes": target.stat().st_size}

    def _migration_over(self) -> dict | None:
        info = self.qmp.call("query-migrate")
        return info if info.get("status") in ("completed", "failed", "cancelled") else None

    def cont(self) -> None:
        self.qmp.call("cont")

    def wait_incoming_then_run(self, timeout: float = 300) -> float:
        """Seconds from this process's launch until it runs the restored guest.

        A guest saved while stopped arrives paused, so ``cont`` follows the load.
        """
        wait_for(lambda: self.qmp.status() != "inmigrate", timeout, "QEMU incoming migration", interval=0.002)
        outcome = self.qmp.call("query-migrate").get("status")
        if outcome != "completed":
            raise BenchError(f"QEMU incoming migration: {outcome}")
        self.cont()
        wait_for(lambda: self.qmp.status() == "running", 30, "QEMU running after cont", interval=0.002)
        return time.perf_counter() - self.started

    def close(self) -> None:
        for part in (self.qmp, self.serial):
            if part is not None:
                part.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stderr:
            self.process.stderr.close()
        for path in (self.qmp_path, self.serial_path):
            path.unlink(missing_ok=True)


def fsync_seconds(path: Path) -> float:
    """What making ``path`` durable costs: QEMU's ``cat > FILE`` leaves it in the page cache."""
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started
