"""Engine benchmark: vCPU exit rate, guest memory write rate, start to first heartbeat.

    .venv/bin/python bench/engine.py [--quick | --smoke] [--json]

(a) Exits per second the run loop sustains: a guest of a few instructions that
    writes to an unclaimed port forever (from ring 3, where this platform runs
    guests natively, and from ring 0, which it emulates), in a Ferry VM process
    and in Ferry's run loop in this process, against a bare KVM_RUN loop in
    Python on the same guest (no decoding, no bus): the cost of the round trip
    itself. Per wall-clock second and per CPU second of the process taking them.
(b) The self-checking guest's ring-3 write rate (rate=max), against the same
    loop compiled for the host (bench/hostmem.c) and the host's memset bandwidth,
    per CPU second (and wall-clock second) of each.
(c) ``ferry start`` to the first heartbeat on the console, 64 MiB and 1 GiB,
    against the cheapest ferry command (``ferry --json list``).

``--smoke``: the same rows from tiny guests (32 MiB for (b), 16 and 64 MiB for (c)),
one repetition, short samples: it checks the benchmark works, not the figures.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inprocess  # noqa: E402
from common import (BENCH_DIR, BenchError, Ferry, Row, compile_c, exit_cleanly_on_sigterm,  # noqa: E402
                    load_average, parse_args, progress, report, run, utc_stamp, wait_for)

UNCLAIMED_PORT = 0x80


@dataclass(frozen=True)
class Sizes:
    """What each mode measures; every mode runs every row."""
    exit_seconds: float  # one exit-rate sample
    exit_rounds: int
    memory_mib: int  # (b): the guest's RAM and the host memset buffer
    memory_seconds: float
    memory_hb_ms: int  # (b) times heartbeats, so at least three must fit in memory_seconds
    start_mib: tuple[int, ...]  # (c)
    start_repeats: int


SIZES = {
    "full": Sizes(1.0, 5, 256, 5, 1000, (64, 1024), 3),
    "quick": Sizes(0.5, 3, 256, 3, 1000, (64, 1024), 2),
    "smoke": Sizes(0.2, 1, 32, 1, 200, (16, 64), 1),
}

# Ring 3 gets IOPL 3 from iretq's RFLAGS (0x3002), so `out` needs no TSS bitmap.
EXIT_GUEST = r"""
    .code64
    .section .text
    .globl _start
_start:
#ifdef RING3
    lgdt gdt_ptr(%rip)
    mov %rsp, %rax
    pushq $0x23
    pushq %rax
    pushq $0x3002
    pushq $0x1b
    lea spin(%rip), %rax
    pushq %rax
    iretq
#endif
spin:
    mov $PORT, %dx
1:  out %al, %dx
    jmp 1b

    .section .data
    .balign 16
gdt:
    .quad 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00AFFB000000FFFF, 0x00CFF3000000FFFF
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
"""

# One segment at 1 MiB, as the boot contract wants; no notes, no headers in it.
EXIT_GUEST_LD = """
ENTRY(_start)
SECTIONS { . = 0x100000; .text : { *(.text*) } .data : { *(.data*) *(.bss*) } /DISCARD/ : { *(.note*) } }
"""


class NullConsole:
    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


def build_exit_guest(workdir: Path, ring: int) -> Path:
    source, script = workdir / "exit.S", workdir / "exit.ld"
    source.write_text(EXIT_GUEST)
    script.write_text(EXIT_GUEST_LD)
    obj, elf = workdir / f"exit-ring{ring}.o", workdir / f"exit-ring{ring}.elf"
    defines = [f"-DPORT={UNCLAIMED_PORT:#x}"] + (["-DRING3"] if ring == 3 else [])
    for command in (["gcc", "-c", *defines, str(source), "-o", str(obj)],
                    ["ld", "-nostdlib", "-static", "-T", str(script), "-z", "max-page-size=4096",
                     "--build-id=none", "--no-warn-rwx-segments", str(obj), "-o", str(elf)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"{command[0]}: {done.stderr.strip()}")
    return elf


# --- (a) exits per second ---

def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time every thread of a process has had, guest time included (schedstat, in ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def count_rate(read_count, seconds: float, pid: int | str = "self") -> tuple[float, float]:
    """Exits per wall-clock second and per CPU second of the process that takes them.

    The second figure does not depend on how much of a CPU other work on the
    machine left to the vCPU thread.
    """
    before, cpu_before, started = read_count(), cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    after, cpu_after, ended = read_count(), cpu_seconds(pid), time.perf_counter()
    return (after - before) / (ended - started), (after - before) / max(cpu_after - cpu_before, 1e-9)


class BareLoop:
    """KVM_RUN in a tight Python loop on a thread, as the run loop does, with nothing else."""

    def __init__(self, elf: Path):
        self.machine = inprocess.exit_machine(elf, NullConsole())

    def sample(self, seconds: float) -> tuple[float, float]:
        fd, request = inprocess.kvm_run_call(self.machine)
        count = [0]
        stop = threading.Event()

        def loop():
            ioctl = fcntl.ioctl
            while not stop.is_set():
                for _ in range(200):
                    ioctl(fd, request, 0)
                count[0] += 200

        thread = threading.Thread(target=loop, name="bare-vcpu", daemon=True)
        thread.start()
        try:
            time.sleep(0.1)
            rates = count_rate(lambda: count[0], seconds)
        finally:
            stop.set()
            thread.join(30)
        if thread.is_alive():
            raise BenchError("bare KVM_RUN loop did not stop")
        other = inprocess.left_on_port_io(self.machine)
        if other:
            raise BenchError(f"bare loop: the guest left with {other}, not port I/O")
        return rates

    def close(self) -> None:
        self.machine.close()


class RunLoop:
    """Ferry's vCPU thread (decode, bus, completion) in this process: no VM process, no console file."""

    def __init__(self, elf: Path):
        self.machine = inprocess.exit_machine(elf, NullConsole())
        self.machine.start(paused=True)

    def sample(self, seconds: float) -> tuple[float, float]:
        self.machine.resume()
        try:
            time.sleep(0.1)
            return count_rate(lambda: inprocess.exits(self.machine), seconds)
        finally:
            self.machine.pause()

    def close(self) -> None:
        self.machine.stop()
        self.machine.close()


class VmProcess:
    """A Ferry VM process started by ``ferry start``; its exit count comes over the control socket."""

    def __init__(self, ferry: Ferry, elf: Path, name: str):
        self.ferry, self.name = ferry, name
        ferry.define(name, 64, kernel=str(elf))
        ferry.run("start", name)
        self.pid = ferry.control(name, "pause")["pid"]

    def sample(self, seconds: float) -> tuple[float, float]:
        self.ferry.control(self.name, "resume")
        try:
            time.sleep(0.1)
            return count_rate(lambda: self.ferry.control(self.name)["exits"], seconds, self.pid)
        finally:
            self.ferry.control(self.name, "pause")

    def close(self) -> None:
        self.ferry.remove(self.name)


def interleaved(runners: dict, seconds: float, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """One sample of each in turn, so load from elsewhere on the machine falls on all of them alike."""
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            rates[name].append(runner.sample(seconds))
    return rates


def exit_rows(ferry: Ferry, workdir: Path, sizes: Sizes) -> list[Row]:
    inprocess.install_kick_handler()
    seconds, rounds = sizes.exit_seconds, sizes.exit_rounds
    rows = []
    for ring in (3, 0):
        elf = build_exit_guest(workdir, ring)
        progress(f"exits: ring-{ring} guest: bare KVM_RUN loop, Ferry run loop, Ferry VM process, "
                 f"{rounds} rounds")
        runners = {}
        try:
            runners["bare"] = BareLoop(elf)
            runners["loop"] = RunLoop(elf)
            runners["vmproc"] = VmProcess(ferry, elf, f"exits-ring{ring}")
            rates = interleaved(runners, seconds, rounds)
        finally:
            for runner in runners.values():
                runner.close()
        anchor = f"bare KVM_RUN loop in Python, same guest (ring {ring})"
        for key, where, clock in (("vmproc", "VM process", 1), ("loop", "run loop in-process", 1),
                                  ("vmproc", "VM process", 0)):
            ferry_rates = [r[clock] for r in rates[key]]
            bare_rates = [r[clock] for r in rates["bare"]]
            per = "per CPU-second" if clock else "per wall-clock second"
            rows.append(Row(f"(a) exits {per}, ring-{ring} `out` loop, {where}", "exits/s", ferry_rates,
                            bare_rates, anchor, "higher"))
    return rows


# --- (b) guest memory write rate ---

def guest_write_rate(ferry: Ferry, sizes: Sizes) -> dict:
    """Page writes of the self-checking guest per wall-clock second and per CPU second of its VM process.

    Counts come from its heartbeats; both clocks are the host's, read when a heartbeat shows up.
    """
    name, seconds = "memwrite", sizes.memory_seconds
    ferry.define(name, sizes.memory_mib, cmdline=f"fill=50 rate=max hb={sizes.memory_hb_ms}")
    try:
        ferry.run("start", name)
        pid = ferry.control(name)["pid"]
        owned = ferry.owned_pages(name)
        first = ferry.wait_heartbeats(name, 2, timeout=30)
        seen = [(time.perf_counter(), cpu_seconds(pid), first[-1])]
        deadline = time.perf_counter() + seconds
        give_up = deadline + 1.5 * sizes.memory_hb_ms / 1000
        while time.perf_counter() < give_up and (len(seen) < 3 or time.perf_counter() < deadline):
            beats = ferry.heartbeats(name)
            if beats[-1][1] != seen[-1][2][1]:
                seen.append((time.perf_counter(), cpu_seconds(pid), beats[-1]))
            time.sleep(0.005)
        if len(seen) < 3:
            raise BenchError(f"{name}: too few heartbeats to time ({len(seen)})")
        (t0, c0, b0), (t1, c1, b1) = seen[0], seen[-1]
        writes = b1[3] - b0[3]
        return {"writes_per_s": writes / (t1 - t0), "writes_per_cpu_s": writes / (c1 - c0),
                "by_guest_clock": writes / ((b1[2] - b0[2]) / 1000), "owned_pages": owned,
                "heartbeats": len(seen), "wall_seconds": t1 - t0}
    finally:
        ferry.remove(name)


def host_memory(workdir: Path, pages: int, sizes: Sizes) -> tuple[dict, dict]:
    binary = compile_c(BENCH_DIR / "hostmem.c", workdir / "hostmem")
    results = []
    seconds = sizes.memory_seconds
    for args in (["memset", str(sizes.memory_mib)], ["selfcheck", str(pages), str(seconds)]):
        done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise BenchError(f"hostmem {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        results.append(json.loads(done.stdout))
    return results[0], results[1]


def memory_rows(ferry: Ferry, workdir: Path, sizes: Sizes) -> list[Row]:
    mib = sizes.memory_mib
    progress(f"memory: self-checking guest, rate=max, 1 vCPU, {mib} MiB, fill=50")
    guest = guest_write_rate(ferry, sizes)
    progress("memory: the same loop on the host, and memset")
    memset, loop = host_memory(workdir, guest["owned_pages"], sizes)
    page = 4096
    same_loop = "same loop compiled for the host, same page count"
    raw = {"ferry_raw": guest, "anchor_raw": loop}
    return [
        Row("(b) guest ring-3 page writes per CPU-second (selfcheck loop)", "pages/s", [guest["writes_per_cpu_s"]],
            [loop["writes_per_cpu_s"]], same_loop, "higher", extra=raw),
        Row("(b) guest ring-3 page writes per wall-clock second", "pages/s", [guest["writes_per_s"]],
            [loop["writes_per_s"]], same_loop, "higher", extra=raw),
        Row("(b) guest ring-3 bytes written per CPU-second (pages x 4 KiB)", "B/s", [guest["writes_per_cpu_s"] * page],
            [memset["warm_bytes_per_cpu_s"]], f"host memset, warm {mib} MiB buffer", "higher",
            extra={"anchor_raw": memset}),
        Row("(b) guest ring-3 bytes written per CPU-second (pages x 4 KiB)", "B/s", [guest["writes_per_cpu_s"] * page],
            [memset["fresh_bytes_per_cpu_s"]], f"host memset, fresh {mib} MiB buffer (page faults)", "higher",
            extra={"anchor_raw": memset}),
    ]


# --- (c) start to first heartbeat ---

def start_to_heartbeat(ferry: Ferry, name: str, memory: int) -> tuple[float, float]:
    """(seconds to the first heartbeat, seconds until ``ferry start`` returned), both from its launch."""
    ferry.define(name, memory, cmdline="fill=10 rate=0 hb=10")
    try:
        started = time.perf_counter()
        command = ferry.popen("start", name)
        try:
            wait_for(lambda: ferry.heartbeats(name) or command.poll() not in (None, 0), 60,
                     f"{name}: first heartbeat", interval=0.002)
            first = time.perf_counter() - started
            if command.poll() not in (None, 0):
                raise BenchError(f"ferry start {name}: {command.stderr.read().strip()}")
            command.wait(60)
            returned = time.perf_counter() - started
        finally:
            if command.poll() is None:
                command.kill()
            command.communicate()
        if command.returncode != 0:
            raise BenchError(f"ferry start {name} failed")
        return first, returned
    finally:
        ferry.remove(name)


def start_rows(ferry: Ferry, sizes: Sizes) -> list[Row]:
    repeats = sizes.start_repeats
    progress("start: the cheapest ferry command")
    floor = [ferry.run("list")[0] for _ in range(repeats)]
    rows = []
    for memory in sizes.start_mib:
        progress(f"start: {memory} MiB guest to its first heartbeat")
        runs = [start_to_heartbeat(ferry, f"start-{memory}-{i}", memory) for i in range(repeats)]
        size = f"{memory} MiB" if memory < 1024 else f"{memory // 1024} GiB"
        rows.append(Row(f"(c) `ferry start` to first heartbeat, {size}", "s", [r[0] for r in runs], floor,
                        "`ferry --json list` (CLI floor)", "lower", extra={"start_returned": [r[1] for r in runs]}))
    return rows


def main() -> int:
    args = parse_args(__doc__.strip().splitlines()[0])
    sizes = SIZES[args.mode]
    exit_cleanly_on_sigterm()
    started = utc_stamp()
    load_before = load_average()
    rows: list[Row] = []
    with Ferry() as ferry, tempfile.TemporaryDirectory(prefix="ferry-bench-build-") as build:
        workdir = Path(build)
        rows += exit_rows(ferry, workdir, sizes)
        rows += memory_rows(ferry, workdir, sizes)
        rows += start_rows(ferry, sizes)
    notes = [f"load average before/after: {load_before} / {load_average()} "
             f"(other work on this machine skews every figure; ratios are taken within the run)",
             "(a) the VM process's exit count comes from its control socket status reply; "
             "`ferry status --json` does not show it"]
    report("engine", "Ferry engine benchmark (GiB = 2^30 B, k = 10^3, M = 10^6)", rows, args, started,
           {"notes": notes})
    return 0


if __name__ == "__main__":
    run(main)
