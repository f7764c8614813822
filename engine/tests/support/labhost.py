"""Two lab hosts driven with the ferry CLI, and the checks a user makes after a migration."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ferry.lab import Lab

from support.cli import HEARTBEAT, assert_sequence_continues

PORT = 7411


class Host:
    """One lab host, driven with the ferry CLI inside its namespaces."""

    def __init__(self, lab: Lab, info: dict):
        self.lab = lab
        self.name = info["name"]
        self.ipv4 = info["ipv4"]
        self.ipv6 = info["ipv6"]
        self.ns = info["ns"]
        # The host's /var/lib/ferry, as seen from outside its mount namespace.
        self.state_dir = Path(info["root"]) / "var-lib-ferry"

    def vm_processes(self) -> dict[int, str]:
        """Engine processes living in this host's network namespace (pids are machine-wide)."""
        pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split()
        found = {}
        for pid in pids:
            try:
                args = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "ferry.vmprocess.main" in args:
                found[int(pid)] = args
        return found

    def run(self, *args, timeout=120, env=None):
        return self.lab.exec(self.name, [sys.executable, "-m", "ferry.cli", *args],
                             capture_output=True, text=True, timeout=timeout, env=env)

    def ok(self, *args, timeout=120):
        done = self.run("--json", *args, timeout=timeout)
        assert done.returncode == 0, f"{self.name}: ferry {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    def popen(self, *args):
        return self.lab.popen(self.name, [sys.executable, "-m", "ferry.cli", "--json", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sh(self, command: str) -> str:
        return self.lab.exec(self.name, ["sh", "-c", command], capture_output=True, text=True).stdout

    def vm_names(self) -> list[str]:
        return [vm["name"] for vm in self.ok("list")]

    def console_segments(self, vm: str) -> list[Path]:
        """The console logs of every stay of ``vm`` on this host."""
        logs = list(self.state_dir.glob(f"migrated/{vm}.*/console.log"))
        current = self.state_dir / "vms" / vm / "console.log"
        return logs + ([current] if current.exists() else [])

    def console(self, vm: str) -> bytes:
        return b"".join(p.read_bytes() for p in self.console_segments(vm))

    def cleanup(self) -> None:
        for vm in self.vm_names():
            self.run("poweroff", vm)
            self.run("undefine", vm)
        for pid in self.vm_processes():
            subprocess.run(["kill", "-9", str(pid)], check=False)
        self.sh("rm -rf /var/lib/ferry/vms /var/lib/ferry/migrated /var/lib/ferry/incoming "
                "/var/lib/ferry/replicas /var/lib/ferry/receive-*.log")


def start_vm(host: Host, tmp_path, name="m1", vcpus=1, memory=64, cmdline="fill=50 rate=max hb=100",
             start_args=()):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nvcpus: {vcpus}\nmemory: {memory}\nkernel: builtin:selfcheck\n"
                    f"cmdline: {cmdline}\n")
    host.ok("define", str(path))
    host.ok("start", name, *start_args)
    wait_beats(host, name, 3)


def journey(hosts, name: str) -> bytes:
    """Everything the guest printed, across hosts, in order: each stay's log stops being
    written when the guest leaves, so modification times order the stays."""
    segments = [path for host in hosts for path in host.console_segments(name)]
    return b"".join(p.read_bytes() for p in sorted(segments, key=lambda p: p.stat().st_mtime_ns))


def beats(host, name: str, cpu: int = 0) -> list[tuple]:
    text = journey(host if isinstance(host, (list, tuple)) else [host], name)
    found = [tuple(int(g) if g.isdigit() else g.decode() for g in m.groups()) for m in HEARTBEAT.finditer(text)]
    return [b for b in found if b[0] == cpu]


def wait_beats(host: Host, name: str, count: int, timeout: float = 30, cpu: int = 0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = beats(host, name, cpu)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{host.name}/{name}: fewer than {count} heartbeats; console ends "
                         f"{host.console(name)[-300:]!r}")


def receive(host: Host, token, name="m1", address=None, extra=()):
    address = address or f"{host.ipv4}:{PORT}"
    return host.ok("receive", name, "--listen", address, "--token-file", str(token), "--detach",
                   "--timeout", "60", "--link-timeout", "5", *extra)


def migrate(host: Host, to: str, token, name="m1", *extra, expect_ok=True, env=None):
    done = host.run("--json", "migrate", name, "--to", to, "--token-file", str(token),
                    "--link-timeout", "5", *extra, timeout=300, env=env)
    if expect_ok:
        assert done.returncode == 0, f"migrate failed: {done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])
    return done


def wait_no_engine(host: Host, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not host.vm_processes():
            return
        time.sleep(0.1)
    raise AssertionError(f"{host.name}: engine processes still running: {host.vm_processes()}")


def exactly_one_copy(running_on: Host, other: Host, name="m1", cpus=(0,), gaps=False) -> None:
    """The user's check: one host runs the VM and keeps heartbeating, the other has nothing,
    and the guest's heartbeats run on without a gap or a CORRUPT across the move (``gaps``:
    lines may be missing from a log whose disk was full)."""
    assert running_on.ok("status", name)["state"] == "running"
    assert name not in other.vm_names()
    wait_no_engine(other)
    assert not other.sh(f"ls /var/lib/ferry/incoming/{name} 2>/dev/null").strip(), "staging left behind"
    count = len(beats(running_on, name))
    wait_beats(running_on, name, count + 3)
    for cpu in cpus:
        assert_sequence_continues(beats([running_on, other], name, cpu), gaps)


def one_stopped_copy(stopped_on: Host, other: Host, name="m1") -> None:
    """After the VM itself was killed or powered off: it exists once, not running, on
    ``stopped_on``; nothing of it anywhere else; and that copy is whole (it starts again)."""
    wait_no_engine(stopped_on)
    assert stopped_on.ok("status", name)["state"] in ("stopped", "crashed")
    assert name not in other.vm_names()
    wait_no_engine(other)
    assert not other.sh(f"ls /var/lib/ferry/incoming/{name} 2>/dev/null").strip(), "staging left behind"
    stopped_on.ok("start", name)
    wait_beats(stopped_on, name, len(beats(stopped_on, name)) + 2)


def receiver_waits_on(host: Host, pid: int, name="m1", staged=("vm.lock",)) -> None:
    """A receiver that never took an offer waits on for the right source, holding nothing
    but its lock; ended (SIGTERM), it removes its staging folder."""
    assert pid in host.vm_processes(), "the receiver should still be waiting"
    assert name not in host.vm_names()
    if staged is not None:
        assert host.sh(f"ls -A /var/lib/ferry/incoming/{name}").split() == list(staged)
    os.kill(pid, signal.SIGTERM)
    wait_no_engine(host)
    assert not host.sh(f"ls /var/lib/ferry/incoming/{name} 2>/dev/null").strip(), "staging left behind"


def small_disk(host: Host, size="16m") -> None:
    """A small filesystem for the host's /var/lib/ferry, inside its mount namespace only;
    the tests then read the host's files through its sshd's view of the root."""
    host.sh(f"mount -t tmpfs -o size={size},mode=0755 ferry-small /var/lib/ferry")
    host.state_dir = Path(f"/proc/{host.lab.host(host.name)['sshd_pid']}/root/var/lib/ferry")


def fill_disk(host: Host) -> None:
    host.sh("dd if=/dev/zero of=/var/lib/ferry/filler bs=64k 2>/dev/null")
    assert "No space" in host.sh("echo x > /var/lib/ferry/probe 2>&1 || echo 'No space'"), "disk not full"


def free_disk(host: Host) -> None:
    host.sh("rm -f /var/lib/ferry/filler /var/lib/ferry/probe")


def drop_small_disk(host: Host, info: dict) -> None:
    host.cleanup()
    host.sh("umount /var/lib/ferry || umount -l /var/lib/ferry")
    host.state_dir = Path(info["root"]) / "var-lib-ferry"


def assert_busy(done, *phases: str) -> None:
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "busy: m1 is migrating to" in done.stderr, done.stderr
    assert any(f"({phase})" in done.stderr for phase in phases), done.stderr


def conflicting(host: Host, tmp_path, token) -> dict:
    """Every operation a careless operator might type while the VM is moving."""
    return {"pause": host.run("pause", "m1"), "resume": host.run("resume", "m1"),
            "stop": host.run("stop", "m1", "--timeout", "1"),
            "snapshot": host.run("snapshot", "create", "m1", "--snapshot", "during"),
            "define": host.run("define", str(tmp_path / "m1.yaml"), "--replace"),
            "migrate": host.run("migrate", "m1", "--to", "127.0.0.1:9", "--token-file", str(token))}


def start_migration(h1, to, token, *extra):
    """``ferry migrate`` running in the background, its JSON progress lines on stdout."""
    return h1.popen("migrate", "m1", "--to", to, "--token-file", str(token), "--link-timeout", "5", *extra)


def wait_progress(process, phase: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        progress = json.loads(line).get("progress", {})
        if progress.get("phase") == phase and progress.get("bytes_sent", 0) > 4 * 2**20:
            return progress
    raise AssertionError(f"migration never reached {phase}: {process.stderr.read()[-500:]}")
