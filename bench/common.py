"""What the benchmarks share: a throwaway Ferry state directory driven through the
CLI, bounded waits, the sample rule, the result table and the results file.

Every number a benchmark prints is a ``Row``: Ferry's figure beside an anchor
measured in the same run, and which direction of Ferry/anchor is better. A row's
figures are medians of its samples, and every sample passes ``check_sample`` first.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import math
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
from dataclasses import dataclass, field
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


class SampleError(BenchError):
    """A sample that is not a measurement: the run fails rather than print a figure built on it."""


# --- command line, signals, results ---

def parse_args(description: str, argv=None, add_arguments=None) -> argparse.Namespace:
    """The options every benchmark takes; ``add_arguments(parser)`` adds a benchmark's own."""
    parser = argparse.ArgumentParser(description=description)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    sizes.add_argument("--smoke", action="store_true",
                       help="tiny guests, one repetition, every row and anchor: seconds, for the test suite")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    return args


def anchor_missing(why: str | None, args) -> str:
    """The reason an anchor's tool is missing, for its rows' note. The test suite runs
    --smoke on machines set up to have every anchor, so there a missing one fails the run."""
    if why and args.smoke:
        raise BenchError(f"--smoke measures every anchor: {why}")
    return why or ""


def run(main, *errors: type[Exception]) -> None:
    """Exit with ``main``'s status; a benchmark that cannot measure (a ``BenchError``, or one
    of ``errors``) says why in one line and exits 1."""
    try:
        status = main()
    except (BenchError, *errors) as err:
        print(f"error: {err}", file=sys.stderr)
        status = 1
    sys.exit(status)


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

def check_sample(value, row: str, who: str, zero_ok: bool = False) -> float:
    """The one rule every sample passes before it enters a median: a finite number above
    zero. A failed reading (None, NaN, a 0.0 left where nothing was measured, a negative
    difference of clocks) would otherwise pull the median and be printed as a figure, so
    it fails the run, naming the row and whose sample it was. Samples only come from runs
    that succeeded: a failed run contributes none, and a row without samples fails too.
    ``zero_ok`` is for counts where 0 is what happened (a vCPU throttle that never started).
    """
    real = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not real or value < 0 or (value == 0 and not zero_ok):
        raise SampleError(f"row {row!r}: {who}: sample {value!r} is not a measurement")
    return float(value)


def figure(samples, row: str, who: str, zero_ok: bool = False) -> float:
    """The median of ``samples``, each passed through ``check_sample``."""
    checked = [check_sample(value, row, who, zero_ok) for value in samples]
    if not checked:
        raise SampleError(f"row {row!r}: {who}: no sample (every run of it failed)")
    return statistics.median(checked)


def median(values):
    """For notes and raw figures only; a row's figures go through ``figure``."""
    return statistics.median(list(values))


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
    """One line of the table. Its figures are computed here, from samples that pass the
    sample rule, so no benchmark can print a median built on a failed reading."""
    metric: str
    unit: str
    ferry_samples: list
    anchor_samples: list | None  # None only when the anchor's tool is missing here (see ``note``)
    anchor_name: str = ""
    better: str = ""  # "higher" or "lower": which Ferry/anchor is better
    note: str = ""  # shown instead of the anchor's figure when its tool is missing
    extra: dict = field(default_factory=dict)  # raw figures behind the samples, for the results file
    zero_ok: bool = False  # a count that can be 0 (see check_sample)
    ferry: float = field(init=False)
    anchor: float | None = field(init=False)

    def __post_init__(self):
        self.ferry = figure(self.ferry_samples, self.metric, "Ferry", self.zero_ok)
        self.anchor = (None if self.anchor_samples is None else
                       figure(self.anchor_samples, self.metric, f"anchor {self.anchor_name!r}", self.zero_ok))

    @property
    def ratio(self) -> float | None:
        if not self.anchor:  # no anchor here (its tool is missing), or a zero_ok count of 0
            return None
        return self.ferry / self.anchor

    def to_dict(self) -> dict:
        samples = {"ferry": self.ferry_samples, "anchor": self.anchor_samples, **self.extra}
        return {"metric": self.metric, "ferry": self.ferry, "unit": self.unit, "anchor": self.anchor,
                "anchor_name": self.anchor_name, "better": self.better, "note": self.note,
                "samples": samples, "ratio": self.ratio}


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
        anchor = human(row.anchor, row.unit) if row.anchor is not None else (row.note or "-")
        lines.append((row.metric, human(row.ferry, row.unit), anchor, ratio, row.anchor_name))
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def report(name: str, title: str, rows: list[Row], args, started: str, extra: dict) -> None:
    doc = {"benchmark": name, "time": started, "mode": args.mode, "quick": args.quick, "machine": machine_facts(),
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

def compile_engine() -> None:
    """Write the engine's bytecode, as installing it does (pip compiles every module), so a
    command's time is the engine's and not the compiler's: a checkout imported with
    PYTHONDONTWRITEBYTECODE set would otherwise compile every module on every command."""
    package = importlib.util.find_spec("ferry").submodule_search_locations[0]
    if not compileall.compile_dir(package, quiet=1, workers=0):
        raise BenchError(f"cannot compile the engine's bytecode in {package}")


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
        compile_engine()

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
        import inprocess
        return inprocess.control_request(self.vm_dir(name) / "control.sock", op)

    def remove(self, name: str) -> None:
        """Power ``name`` off (killing its process if it will not go) and undefine it."""
        if not self.vm_dir(name).exists():
            return
        self._power_off(name)
        try:
            # The benchmark's snapshots go with the VM: the whole state directory is temporary.
            self.run("undefine", name, "--with-snapshots", timeout=30)
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
