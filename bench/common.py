"""What both benchmarks share: a throwaway Ferry state directory driven through the
CLI, bounded waits, medians, the result table and the results file.

Every number a benchmark prints is a ``Row``: Ferry's figure beside an anchor
measured in the same run, and which direction of Ferry/anchor is better.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

HEARTBEAT = re.compile(rb"HB cpu=(\d+) seq=(\d+) ms=(\d+) writes=(\d+) verified=(\d+) (OK|CORRUPT)")
BANNER = re.compile(rb"FERRY-SELFCHECK version=\d+ boot=\d+ cpus=\d+ ram_mib=\d+ owned_pages=(\d+)")

MIB = 1 << 20
GIB = 1 << 30


class BenchError(RuntimeError):
    pass


# --- command line, signals, results ---

def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    return parser.parse_args()


def exit_cleanly_on_sigterm() -> None:
    """A SIGTERM unwinds through the ``finally`` blocks, so no VM or QEMU is left behind."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_facts() -> dict:
    facts = {"hostname": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
             "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["memory_mib"] = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    return facts


def write_results(name: str, doc: dict) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{doc['time']}.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path


# --- numbers ---

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def wait_for(probe, timeout: float, what: str, interval: float = 0.01):
    """Call ``probe`` until it returns something truthy; give up after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# --- the table ---

@dataclass
class Row:
    metric: str
    ferry: float | None
    unit: str
    anchor: float | None = None
    anchor_name: str = ""
    better: str = ""  # "higher" or "lower": which Ferry/anchor is better
    note: str = ""  # shown instead of a number when a figure could not be measured
    samples: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ferry is None or not self.anchor:
            return None
        return self.ferry / self.anchor

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def human(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "B":
        return f"{value / MIB:.1f} MiB"
    if unit == "B/s":
        return f"{value / GIB:.2f} GiB/s" if value >= GIB else f"{value / MIB:.0f} MiB/s"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M {unit}"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k {unit}"
    return f"{value:.3g} {unit}"


def render_table(title: str, rows: list[Row]) -> str:
    header = ("metric", "Ferry", "anchor", "Ferry/anchor", "anchor is")
    lines = []
    for row in rows:
        if row.ratio is None:
            ratio = "-"
        else:
            ratio = f"{row.ratio:.2f}" + (f" ({row.better} is better)" if row.better else "")
        ferry = human(row.ferry, row.unit) if row.ferry is not None else (row.note or "-")
        anchor = human(row.anchor, row.unit) if row.anchor is not None else ("-" if row.ferry is None
                                                                             else row.note or "-")
        lines.append((row.metric, ferry, anchor, ratio, row.anchor_name))
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def report(name: str, title: str, rows: list[Row], args, started: str, extra: dict) -> None:
    doc = {"benchmark": name, "time": started, "quick": args.quick, "machine": machine_facts(),
           "rows": [row.to_dict() for row in rows], **extra}
    path = write_results(name, doc)
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        print(render_table(title, rows))
        for note in extra.get("notes", []):
            print(f"note: {note}")
        print(f"results: {path}")


# --- Ferry through its command line ---

def ferry_command() -> list[str]:
    beside = Path(sys.executable).with_name("ferry")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "ferry.cli"]


class Ferry:
    """``ferry`` in a state directory of its own, removed (with every VM in it) by ``close``."""

    def __init__(self):
        self.state_dir = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
        self.definitions = self.state_dir / "definitions"
        self.definitions.mkdir()
        self.env = {**os.environ, "FERRY_STATE_DIR": str(self.state_dir)}
        self.command = ferry_command()

    def run(self, *args: str, timeout: float = 120):
        """Run ``ferry --json ARGS``; return (seconds it took, its JSON)."""
        started = time.perf_counter()
        try:
            done = subprocess.run([*self.command, "--json", *args], env=self.env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"ferry {' '.join(args)}: no answer within {timeout:.0f} s") from None
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"ferry {' '.join(args)}: {done.stderr.strip()}")
        return seconds, (json.loads(done.stdout) if done.stdout.strip() else None)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.command, "--json", *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def define(self, name: str, memory: int, kernel: str = "builtin:selfcheck", cmdline: str = "",
               vcpus: int = 1) -> None:
        path = self.definitions / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "vcpus": vcpus, "memory": memory, "kernel": kernel,
                                        "cmdline": cmdline}))
        self.run("define", str(path))

    def vm_dir(self, name: str) -> Path:
        return self.state_dir / "vms" / name

    def console(self, name: str) -> bytes:
        try:
            return (self.vm_dir(name) / "console.log").read_bytes()
        except FileNotFoundError:
            return b""

    def heartbeats(self, name: str) -> list[tuple[int, ...]]:
        """(cpu, seq, ms, writes, verified) of every heartbeat so far; raises on CORRUPT."""
        beats = []
        for match in HEARTBEAT.finditer(self.console(name)):
            if match.group(6) != b"OK":
                raise BenchError(f"{name}: the guest reported CORRUPT: {match.group(0).decode()}")
            beats.append(tuple(int(g) for g in match.groups()[:5]))
        return beats

    def owned_pages(self, name: str, timeout: float = 30) -> int:
        banner = wait_for(lambda: BANNER.search(self.console(name)), timeout, f"{name}: selfcheck banner")
        return int(banner.group(1))

    def wait_heartbeats(self, name: str, count: int, timeout: float = 60) -> list[tuple[int, ...]]:
        return wait_for(lambda: (lambda b: b if len(b) >= count else None)(self.heartbeats(name)),
                        timeout, f"{name}: {count} heartbeat(s)")

    def control(self, name: str, op: str = "status") -> dict:
        """Ask the VM process directly: its status reply carries the exit count the CLI leaves out."""
        from ferry.runtime import control
        return control.request(self.vm_dir(name) / "control.sock", op, timeout=10)

    def remove(self, name: str) -> None:
        """Power ``name`` off (killing its process if it will not go) and undefine it."""
        if not self.vm_dir(name).exists():
            return
        self._power_off(name)
        try:
            self.run("undefine", name, timeout=30)
        except BenchError as err:
            progress(f"cleanup: {err}")

    def _power_off(self, name: str) -> None:
        try:
            self.run("poweroff", name, timeout=40)
        except BenchError as err:
            progress(f"cleanup: {err}")
        # Only a VM whose lock is held counts as running, so its pid is not a stale one.
        try:
            _, vm = self.run("status", name, timeout=30)
        except BenchError as err:
            progress(f"cleanup: {err}")
            return
        pid = vm.get("pid")
        if vm.get("state") in ("running", "paused") and pid:
            progress(f"cleanup: VM {name} (pid {pid}) still running; killing it")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not self._alive(pid), 10, f"VM process {pid} to end")

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie of ours would count as alive forever; a VM process is not our child.
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return False

    def close(self) -> None:
        vms = self.state_dir / "vms"
        names = sorted(p.name for p in vms.iterdir()) if vms.is_dir() else []
        for name in names:
            self._power_off(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "Ferry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- small compiled helpers ---

def compile_c(source: Path, out: Path, *flags: str) -> Path:
    done = subprocess.run(["gcc", "-O2", "-Wall", *flags, "-o", str(out), str(source)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BenchError(f"gcc {source.name}: {done.stderr.strip()}")
    return out
