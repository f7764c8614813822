"""Live migration benchmark: Ferry between two lab hosts beside QEMU over the same link,
and the link's own TCP throughput (iperf3).

    .venv/bin/python bench/migration.py [--quick | --smoke] [--json]

Three workloads on 1 GiB, 1 vCPU guests: idle, dirtying 100 MiB/s, and dirtying as fast
as the guest can (with a 50 ms downtime target, so auto-converge has to act). Ferry's
guest is the self-checking guest (``fill=10``); QEMU (``-accel tcg``: this machine's KVM
cannot run QEMU guests) boots the Linux guest's kernel with an initramfs whose /init is
a static C program, compiled in the run, that owns as many pages as Ferry's guest and
rewrites them at the same rate. Both VMs ping-pong between lab hosts h1 and h2; QEMU and
iperf3 run inside the same hosts, so all three use the same veth/bridge path.
``--smoke``: 128 MiB guests, one migration per workload and side and no warm-up, one short
iperf3 run: every row and anchor, in under a minute. See bench/MIGRATION.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ferry.errors import FerryError  # noqa: E402
from ferry.lab import Lab  # noqa: E402
from ferry.migration.sender import DOWNTIME_PARTS, SETUP_PARTS  # noqa: E402

from qemu import Qmp, write_cpio  # noqa: E402
from common import (BANNER, HEARTBEAT, MIB, ROOT, BenchError, Row, SampleError, anchor_missing,  # noqa: E402
                    compile_c, exit_cleanly_on_sigterm, ferry_command, load_average, machine_facts, median,
                    parse_args, progress, render_table, run, utc_stamp, wait_for, write_results)

FILL = 10
HB_MS = 100
FERRY_PORT = 7400
QEMU_PORT = 7500
IPERF_PORT = 5201
MIGRATION_TIMEOUT_S = 60
UNCAPPED = 1 << 40
QEMU = "qemu-system-x86_64"
QEMU_LABEL = "QEMU -accel tcg, same link"
LINUX_OUT = ROOT / "engine" / "guests" / "linux" / "out"
LINUX_BUILD = ROOT / "engine" / "guests" / "linux" / "build.sh"
PAGES_PER_MIB = MIB // 4096


@dataclass(frozen=True)
class Sizes:
    """What each mode measures; every mode runs every workload, row and anchor."""
    memory_mib: int  # both guests'
    reps: int  # measured migrations per workload and side
    warmups: int  # migrations before those, kept out of the table (see ``label``)
    link_probes: int  # iperf3 runs: before the workloads, and after them when 2
    iperf_seconds: int


# 128 MiB is the smallest guest QEMU's Debian kernel boots in (in 64 MiB it prints nothing).
SIZES = {"full": Sizes(1024, 3, 1, 2, 3), "quick": Sizes(1024, 1, 1, 1, 3), "smoke": Sizes(128, 1, 0, 1, 1)}


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    rate: str  # the selfcheck guest's rate=, pages per second per CPU ("0": write once, then only read)
    max_downtime_ms: int
    auto_converge: bool  # QEMU only: Ferry's auto-converge is always on


WORKLOADS = (
    Workload("idle", "idle (fill=10 rate=0)", "0", 300, False),
    Workload("dirty100", "dirtying 100 MiB/s (rate=25600)", "25600", 300, False),
    Workload("flatout", "dirtying flat out (rate=max), downtime target 50 ms", "max", 50, True),
)


# --- the lab hosts, driven with the ferry CLI ---

class FerryHost:
    def __init__(self, lab: Lab, info: dict):
        self.lab = lab
        self.name = info["name"]
        self.ipv4 = info["ipv4"]
        # The host's /var/lib/ferry as seen from outside its mount namespace.
        self.state_dir = Path(info["root"]) / "var-lib-ferry"
        # The host's own state directory, not whatever the caller's environment points at.
        self.env = {k: v for k, v in os.environ.items() if k != "FERRY_STATE_DIR"}

    def run(self, *args: str, timeout: float = 120):
        """``ferry --json ARGS`` inside the host; its last output line as JSON."""
        try:
            done = self.lab.exec(self.name, [*ferry_command(), "--json", *args], capture_output=True, text=True,
                                 timeout=timeout, env=self.env)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name}: ferry {args[0]}: no answer within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise BenchError(f"{self.name}: ferry {' '.join(args[:2])}: {done.stderr.strip()[-400:]}")
        lines = done.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def vm_names(self) -> list[str]:
        return [vm["name"] for vm in self.run("list") or []]

    def console(self, vm: str) -> bytes:
        try:
            return (self.state_dir / "vms" / vm / "console.log").read_bytes()
        except FileNotFoundError:
            return b""

    def remove(self, vm: str) -> None:
        for action in ("poweroff", "undefine"):
            try:
                self.run(action, vm, timeout=60)
            except BenchError as err:
                progress(f"cleanup: {err}")


def heartbeats(console: bytes) -> list[tuple[int, int]]:
    """(ms, writes) of vCPU 0's heartbeats; a CORRUPT one means the migration lost memory."""
    beats = []
    for match in HEARTBEAT.finditer(console):
        if match.group(6) != b"OK":
            raise BenchError(f"the guest reported CORRUPT: {match.group(0).decode()}")
        if match.group(1) == b"0":
            beats.append((int(match.group(3)), int(match.group(4))))
    return beats


def wait_beats(host: FerryHost, vm: str, count: int, timeout: float = 60) -> list[tuple[int, int]]:
    return wait_for(lambda: (lambda b: b if len(b) >= count else None)(heartbeats(host.console(vm))),
                    timeout, f"{host.name}/{vm}: {count} heartbeats", interval=0.05)


def owned_pages(host: FerryHost, vm: str) -> int:
    found = wait_for(lambda: BANNER.search(host.console(vm)), 60, f"{vm}: selfcheck banner", interval=0.05)
    return int(found.group(1))


def guest_write_rate(host: FerryHost, vm: str, pages: int) -> float:
    """Pages per second of guest clock, once every owned page has been written once."""
    def after_first_pass():
        beats = [b for b in heartbeats(host.console(vm)) if b[1] >= pages]
        return beats if len(beats) >= 2 and beats[-1][0] - beats[0][0] >= 1000 else None
    beats = wait_for(after_first_pass, 90, f"{vm}: a second of heartbeats after its first pass", interval=0.1)
    (ms0, writes0), (ms1, writes1) = beats[0], beats[-1]
    return (writes1 - writes0) / (ms1 - ms0) * 1000


def start_ferry_vm(host: FerryHost, workdir: Path, vm: str, workload: Workload, memory_mib: int) -> None:
    path = workdir / f"{vm}.yaml"
    path.write_text(f"name: {vm}\nvcpus: 1\nmemory: {memory_mib}\nkernel: builtin:selfcheck\n"
                    f"cmdline: fill={FILL} rate={workload.rate} hb={HB_MS}\n")
    host.run("define", str(path))
    host.run("start", vm)


def ferry_migrate(here: FerryHost, there: FerryHost, vm: str, token: Path, workload: Workload) -> dict:
    to = f"{there.ipv4}:{FERRY_PORT}"
    receiver = there.run("receive", vm, "--listen", to, "--token-file", str(token), "--detach",
                         "--timeout", str(MIGRATION_TIMEOUT_S * 2), "--link-timeout", "10")
    try:
        report = here.run("migrate", vm, "--to", to, "--token-file", str(token),
                          "--max-downtime", str(workload.max_downtime_ms), "--timeout", str(MIGRATION_TIMEOUT_S),
                          "--link-timeout", "10", timeout=MIGRATION_TIMEOUT_S + 90)
    except BenchError:
        end_receiver(there, vm, receiver.get("pid"))
        raise
    if report.get("outcome") != "committed":
        raise BenchError(f"ferry migrate {vm}: outcome {report.get('outcome')!r}")
    return report


def end_receiver(there: FerryHost, vm: str, pid: int | None) -> None:
    """After a failed migration, a receiver still waiting would hold the port for the next try.
    One that has become the VM (the handover went through after all) is left alone."""
    if not pid or vm in there.vm_names():
        return
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def measure_ferry(hosts: list[FerryHost], workdir: Path, token: Path, workload: Workload, sizes: Sizes) -> dict:
    vm = f"bench-{workload.key}"
    result = {"reports": [], "warmup": [], "errors": [], "owned_pages": None, "guest_pages_per_s": None}
    here, there = hosts
    try:
        start_ferry_vm(here, workdir, vm, workload, sizes.memory_mib)
        result["owned_pages"] = owned_pages(here, vm)
        result["guest_pages_per_s"] = guest_write_rate(here, vm, result["owned_pages"])
        for rep in migrations(sizes):
            progress(f"ferry {workload.key}: {label(rep, sizes)} {here.name} -> {there.name}")
            try:
                report = ferry_migrate(here, there, vm, token, workload)
            except BenchError as err:
                failed(result, workload, f"{label(rep, sizes)}: {err}")
                continue
            here, there = there, here
            # Migrate next only once the guest runs (and verifies its memory) on its new host.
            wait_beats(here, vm, 3)
            result["reports" if rep else "warmup"].append(report)
    except BenchError as err:
        failed(result, workload, str(err))
    finally:
        for host in hosts:
            if host.state_dir.joinpath("vms", vm).exists():
                host.remove(vm)
    return result


# --- QEMU: the guest ---

# PID 1 of the QEMU guest; the kernel hands it dirty_pages= and dirty_rate= from its command
# line as environment variables. Like the selfcheck guest it writes all its pages once, then
# rewrites whole pages round-robin at the given rate (or flat out with "max"), and prints its rate
# every second (idle too, so arrival can be seen). Between writes it spins on the clock rather
# than sleeping: the selfcheck guest is never idle either (it verifies memory between writes),
# and with nanosleep pacing the guest's kernel died on arrival in each of four tries here
# (spinning, it still dies sometimes: see bench/MIGRATION.md).
# After a stall (migration pause, throttle) it does not catch up in a burst.
DIRTIER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void fill(unsigned long *page, unsigned long key) {
    for (int q = 0; q < 512; q++) page[q] = key + q * 0x9e3779b97f4a7c15UL;
}

static void forever(void) { for (;;) pause(); }

int main(void) {
    const char *spec_pages = getenv("dirty_pages"), *spec_rate = getenv("dirty_rate");
    if (!spec_pages || !spec_rate) {
        printf("DIRTY-ERROR no dirty_pages= or dirty_rate=\n");
        fflush(stdout);
        forever();
    }
    size_t pages = strtoul(spec_pages, NULL, 10);
    int flat = strcmp(spec_rate, "max") == 0;
    double rate = flat ? 0 : atof(spec_rate);
    unsigned long *mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) { printf("DIRTY-ERROR mmap of %zu pages failed\n", pages); fflush(stdout); forever(); }
    for (size_t p = 0; p < pages; p++) fill(mem + p * 512, p << 20 | 1);
    printf("DIRTY-READY pages=%zu rate=%s\n", pages, spec_rate);
    fflush(stdout);
    if (!flat && rate <= 0) for (;;) { sleep(1); printf("DIRTY pages_per_s=0\n"); fflush(stdout); }
    unsigned long writes = 0, reported = 0, paced = 0;
    double base = now(), last = base;
    for (size_t p = 0;; p = (p + 1) % pages) {
        fill(mem + p * 512, p << 20 | (writes / pages + 2));
        if (++writes % 64) continue;
        double t = now();
        if (!flat) {
            double due = base + (writes - paced) / rate;
            if (t > due + 0.1) { base = t; paced = writes; }
            else while (now() < due) {}
        }
        if (t - last >= 1.0) {
            printf("DIRTY pages_per_s=%.0f\n", (writes - reported) / (t - last));
            fflush(stdout);
            last = t;
            reported = writes;
        }
    }
}
"""

# init_on_free: pages the kernel frees while booting (the unpacked initramfs among them) are
# zeroed, so QEMU's zero-page detection skips them and the footprint is closer to what runs.
QEMU_APPEND = "console=ttyS0 panic=-1 quiet init_on_free=1 dirty_pages={pages} dirty_rate={rate}"


def qemu_unavailable() -> str | None:
    if shutil.which(QEMU) is None:
        return f"{QEMU} not installed (apt-get install -y qemu-system-x86)"
    if shutil.which("gcc") is None or not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists():
        return "no gcc or static libc for the guest's /init (apt-get install -y gcc libc6-dev)"
    return None


def qemu_version() -> str:
    done = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.splitlines()[0] if done.stdout else "?"


def linux_kernel() -> Path:
    image = LINUX_OUT / "vmlinuz"
    if not image.is_file():
        progress("building the Linux guest's kernel (engine/guests/linux/build.sh)")
        done = subprocess.run(["bash", str(LINUX_BUILD)], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not image.is_file():
            raise BenchError(f"building the Linux guest failed: {done.stderr.strip()[-400:]}")
    return image


def build_initramfs(workdir: Path) -> Path:
    """newc archive: /dev/console (the kernel opens it for PID 1's stdio) and /init, the dirtier."""
    source = workdir / "dirtier.c"
    source.write_text(DIRTIER_C)
    init = compile_c(source, workdir / "dirtier", "-static")
    entries = [("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
               ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
               ("init", stat.S_IFREG | 0o755, init.read_bytes(), (0, 0))]
    return write_cpio(workdir / "dirtier-initramfs.cpio", entries)


# --- QEMU: QMP and the process ---

class QemuVm:
    """One QEMU process inside a lab host; ``close`` always ends it."""

    def __init__(self, lab: Lab, host: FerryHost, workdir: Path, tag: str, kernel: Path, initramfs: Path,
                 append: str, memory_mib: int, incoming: str | None = None):
        self.host = host
        self.qmp_path = workdir / f"{tag}.qmp"
        self.serial_path = workdir / f"{tag}.serial"
        self.stderr_path = workdir / f"{tag}.stderr"
        command = [QEMU, "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot",
                   "-m", str(memory_mib), "-smp", "1", "-kernel", str(kernel), "-initrd", str(initramfs),
                   "-append", append, "-serial", f"file:{self.serial_path}",
                   "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if incoming:
            command += ["-incoming", incoming]
        with open(self.stderr_path, "wb") as stderr:
            # nsenter execs QEMU, so this pid is QEMU's own.
            self.process = lab.popen(host.name, command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=stderr)
        self.qmp: Qmp | None = None
        try:
            self.qmp = Qmp(self.qmp_path)
        except BaseException:
            self.close()
            raise

    def serial(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def dirty_rates(self) -> list[float]:
        return [float(line.split("=", 1)[1]) for line in self.serial().splitlines()
                if line.startswith("DIRTY pages_per_s=")]

    def why_gone(self) -> str:
        return f"QEMU on {self.host.name} exited: {self.stderr_path.read_text(errors='replace').strip()[-300:]}"

    def close(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def qemu_migrate(source: QemuVm, dest: QemuVm, address: str, workload: Workload) -> dict:
    """Migrate until query-migrate says completed; downtime also from the STOP and RESUME events."""
    # "events": the source reports MIGRATION status changes, so the moment it completed is known in µs.
    source.qmp.call("migrate-set-capabilities",
                    capabilities=[{"capability": "auto-converge", "state": workload.auto_converge},
                                  {"capability": "events", "state": True}])
    source.qmp.call("migrate-set-parameters", **{"max-bandwidth": UNCAPPED,
                                                 "downtime-limit": workload.max_downtime_ms})
    source.qmp.call("migrate", uri=f"tcp:{address}")
    throttle = 0
    deadline = time.monotonic() + MIGRATION_TIMEOUT_S
    while True:
        info = source.qmp.call("query-migrate")
        throttle = max(throttle, info.get("cpu-throttle-percentage", 0))
        if info.get("status") in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            source.qmp.call("migrate_cancel")
            raise BenchError(f"QEMU migration did not complete within {MIGRATION_TIMEOUT_S} s "
                             f"(throttle {throttle}%, {info.get('ram', {}).get('remaining', 0) >> 20} MiB left)")
        time.sleep(0.02)
    if info["status"] != "completed":
        raise BenchError(f"QEMU migration {info['status']}: {info.get('error-desc', '')}")
    wait_running(dest)
    source.qmp.call("query-status")  # reads any event still queued behind the last reply
    stopped, resumed = source.qmp.event_time("STOP"), dest.qmp.event_time("RESUME")
    began = source.qmp.event_time("MIGRATION", status="setup")
    completed = source.qmp.event_time("MIGRATION", status="completed")
    ram = info.get("ram", {})
    # query-migrate's "downtime" is whole milliseconds, 0 for a small idle guest, and its
    # "total-time" was seen reading 0 right after completion: both are kept as raw, while
    # the rows use the same spans from the source's own event stamps (microseconds).
    return {"total_ms": (completed - began) * 1000 if began and completed else None,
            "total_ms_reported": info.get("total-time"), "downtime_ms": info.get("downtime"),
            "stop_to_completed_ms": (completed - stopped) * 1000 if stopped and completed else None,
            "setup_ms": info.get("setup-time"),
            "stop_to_resume_ms": (resumed - stopped) * 1000 if stopped and resumed else None,
            "transferred": ram.get("transferred"), "normal_bytes": ram.get("normal-bytes"),
            "dirty_sync_count": ram.get("dirty-sync-count"),
            # The first two syncs bracket the bulk pass; without the count there is no figure, not a guess.
            "precopy_passes": None if "dirty-sync-count" not in ram else max(ram["dirty-sync-count"] - 2, 1),
            "throttle_pct": throttle}


def wait_running(dest: QemuVm) -> None:
    """Until the destination runs (its RESUME event is read on the way). A destination that dies
    first is left for ``settle_qemu`` to report: the migration itself completed."""
    try:
        wait_for(lambda: dest.qmp.call("query-status")["status"] == "running", 30, "QEMU destination running",
                 interval=0.02)
    except BenchError:
        if dest.process.poll() is None:
            raise


class QemuPair:
    """The QEMU VMs of one workload: boots the guest, starts destinations, ends them all."""

    def __init__(self, lab: Lab, workdir: Path, files: tuple[Path, Path], workload: Workload, pages: int,
                 memory_mib: int):
        self.lab, self.workdir, self.files, self.workload = lab, workdir, files, workload
        self.memory_mib = memory_mib
        self.append = QEMU_APPEND.format(pages=pages, rate=workload.rate)
        self.vms: list[QemuVm] = []

    def start(self, host: FerryHost, incoming: str | None = None) -> QemuVm:
        vm = QemuVm(self.lab, host, self.workdir, f"qemu-{self.workload.key}-{len(self.vms)}", *self.files,
                    self.append, self.memory_mib, incoming=incoming)
        self.vms.append(vm)
        return vm

    def boot(self, host: FerryHost) -> QemuVm:
        vm = self.start(host)
        wait_ready(vm, self.workload)
        return vm

    def close(self) -> None:
        for vm in self.vms:
            vm.close()


def measure_qemu(lab: Lab, hosts: list[FerryHost], workdir: Path, files: tuple[Path, Path], workload: Workload,
                 pages: int, sizes: Sizes) -> dict:
    result = {"runs": [], "warmup": [], "errors": [], "pages": pages, "guest_pages_per_s": None}
    pair = QemuPair(lab, workdir, files, workload, pages, sizes.memory_mib)
    here, there = hosts
    try:
        source = pair.boot(here)
        if workload.rate != "0":
            rates = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(source.dirty_rates()), 30,
                             "QEMU guest's dirty rate", interval=0.1)
            result["guest_pages_per_s"] = median(rates[-2:])
        for rep in migrations(sizes):
            progress(f"qemu {workload.key}: {label(rep, sizes)} {here.name} -> {there.name}")
            address = f"{there.ipv4}:{QEMU_PORT + rep}"
            dest = pair.start(there, incoming=f"tcp:{address}")
            try:
                run = qemu_migrate(source, dest, address, workload)
            except BenchError as err:
                failed(result, workload, f"{label(rep, sizes)}: {err}")
                dest.close()
                continue
            source.close()
            result["runs" if rep else "warmup"].append(run)
            try:
                settle_qemu(dest)
                run["guest_survived"] = True
            except BenchError as err:
                # QEMU called it completed, so its figures count; the guest is replaced by a fresh one.
                run["guest_survived"] = False
                failed(result, workload, f"{label(rep, sizes)} completed, then: {err}")
                dest.close()
                source = pair.boot(here)
                continue
            source, here, there = dest, there, here
    except BenchError as err:
        failed(result, workload, str(err))
    finally:
        pair.close()
    return result


def migrations(sizes: Sizes) -> range:
    """Numbers of one side's migrations: 0 is the warm-up, 1.. the measured ones."""
    return range(1 - sizes.warmups, sizes.reps + 1)


def label(rep: int, sizes: Sizes) -> str:
    # A freshly booted QEMU guest's first migration is 2-4x slower than the next ones (see
    # bench/MIGRATION.md), so each side's first migration is a warm-up, kept out of the table
    # (not in --smoke, which checks the benchmark works rather than its figures).
    return f"migration {rep}/{sizes.reps}" if rep else "warm-up migration"


def failed(result: dict, workload: Workload, error: str) -> None:
    result["errors"].append(error)
    progress(f"{workload.key}: {error}")


def wait_ready(vm: QemuVm, workload: Workload) -> None:
    wait_for(lambda: "DIRTY-" in vm.serial() or vm.process.poll() is not None, 120,
             f"QEMU guest boot ({workload.key})", interval=0.1)
    if vm.process.poll() is not None:
        raise BenchError(vm.why_gone())
    errors = [line for line in vm.serial().splitlines() if line.startswith("DIRTY-ERROR")]
    if errors:
        raise BenchError(f"QEMU guest: {errors[0]}")
    wait_for(lambda: "DIRTY-READY" in vm.serial(), 60, "QEMU guest filling its memory", interval=0.1)


def settle_qemu(vm: QemuVm) -> None:
    """Migrate next only once the guest runs again on its new host: it prints its rate every second
    (its destination's serial log starts at the arrival), unless its kernel died."""
    def printed_or_died():
        text = vm.serial()
        return "DIRTY pages_per_s=" in text or "Kernel panic" in text or vm.process.poll() is not None
    wait_for(printed_or_died, 30, "QEMU guest running again after arrival", interval=0.1)
    panic = [line.strip() for line in vm.serial().splitlines() if "Kernel panic" in line]
    if panic:
        raise BenchError(f"the QEMU guest's kernel panicked on arrival: {panic[0]}")
    if vm.process.poll() is not None:
        raise BenchError(vm.why_gone())


# --- the link ---

def link_rate(lab: Lab, client: FerryHost, server: FerryHost, seconds: int) -> list[float]:
    """Bytes per second of one TCP stream from ``client`` to ``server`` (iperf3, a few seconds),
    as a list: empty when iperf3 failed, which fails the link rows (no sample)."""
    command = ["iperf3", "-s", "-1", "-B", server.ipv4, "-p", str(IPERF_PORT)]
    listener = lab.popen(server.name, command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        return [wait_for(lambda: iperf_client(lab, client, server, seconds), 20, "iperf3 between the lab hosts",
                         interval=0.2)]
    except BenchError as err:
        progress(f"link: {err}")
        return []
    finally:
        if listener.poll() is None:
            listener.terminate()
            try:
                listener.wait(5)
            except subprocess.TimeoutExpired:
                listener.kill()
                listener.wait(5)


def iperf_client(lab: Lab, client: FerryHost, server: FerryHost, seconds: int) -> float | None:
    """One measurement, or None while the server is not listening yet."""
    command = ["iperf3", "-c", server.ipv4, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    try:
        done = lab.exec(client.name, command, capture_output=True, text=True, timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        raise BenchError("iperf3 client: no result in time") from None
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return None
    if "error" in data:
        if "refused" in data["error"]:
            return None
        raise BenchError(f"iperf3: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 8


# --- rows ---

def per_second(count, ms):
    """``count`` per second over ``ms``, or None where no duration was measured (the sample rule
    then fails the row, instead of a division by zero or a made-up rate)."""
    return count / (ms / 1000) if isinstance(ms, (int, float)) and ms > 0 and count is not None else None


def ferry_values(result: dict) -> dict[str, list]:
    reports = result["reports"]
    return {
        "total": [r["total_ms"] / 1000 for r in reports],
        "downtime": [r["downtime_ms"] / 1000 for r in reports],
        "stop_copy": [r["stop_copy_ms"] / 1000 for r in reports],
        "bytes": [r["bytes_on_wire"] for r in reports],
        "passes": [len(r["rounds"]) for r in reports],
        "throttle": [r["throttle"] * 100 for r in reports],
        "rate": [per_second(r["bytes_on_wire"], r["total_ms"]) for r in reports],
        "first_pass_rate": [per_second(r["rounds"][0]["bytes"], r["rounds"][0]["duration_ms"]) if r["rounds"]
                            else None for r in reports],
    }


def ms_to_s(ms):
    """Seconds from milliseconds, leaving a missing reading (None) for the sample rule to catch."""
    return ms / 1000 if isinstance(ms, (int, float)) else ms


def qemu_values(result: dict) -> dict[str, list]:
    """Every measured run's figures as QEMU reported them; a missing one stays None, so the
    sample rule fails its row rather than the row quietly using fewer runs."""
    runs = result["runs"]
    return {
        "total": [ms_to_s(r["total_ms"]) for r in runs],
        "downtime": [ms_to_s(r["stop_to_resume_ms"]) for r in runs],
        "stop_copy": [ms_to_s(r["stop_to_completed_ms"]) for r in runs],
        "bytes": [r["transferred"] for r in runs],
        "passes": [r["precopy_passes"] for r in runs],
        "throttle": [r["throttle_pct"] for r in runs],
        "rate": [per_second(r["transferred"], r["total_ms"]) for r in runs],
    }


def row(metric: str, key: str, unit: str, better: str, f: dict, q: dict | None, qemu_note: str,
        zero_ok: bool = False) -> Row:
    return Row(metric, unit, f[key], None if q is None else q[key], QEMU_LABEL, better, note=qemu_note,
               zero_ok=zero_ok)


def rows_for(f: dict, q: dict | None, links: list[float] | None, qemu_note: str, link_note: str) -> list[Row]:
    """``q`` and ``links`` are None only where QEMU or iperf3 is missing (outside --smoke)."""
    rows = [
        row("total time", "total", "s", "lower", f, q, qemu_note),
        row("downtime, pause to running at destination", "downtime", "s", "lower", f, q, qemu_note),
        row("downtime, source side (Ferry stop_copy_ms, QEMU STOP to completed)", "stop_copy", "s", "lower", f, q,
            qemu_note),
        row("bytes on the wire", "bytes", "B", "", f, q, qemu_note),
        row("pre-copy passes", "passes", "", "", f, q, qemu_note),
        # An idle guest is never throttled: 0 % is what happened there, not a failed reading.
        row("final vCPU throttle", "throttle", "%", "", f, q, qemu_note, zero_ok=True),
        row("effective rate, bytes on wire / total time", "rate", "B/s", "higher", f, q, qemu_note),
    ]
    for metric, key in (("effective rate vs the link (share)", "rate"), ("first-pass rate vs the link (share)",
                                                                         "first_pass_rate")):
        rows.append(Row(metric, "B/s", f[key], links, "iperf3, 1 TCP stream h1 -> h2", "higher", note=link_note))
    return rows


def notes_for(workload: Workload, fr: dict, qr: dict | None) -> list[str]:
    notes = []
    if fr.get("guest_pages_per_s") is not None:
        text = f"{workload.key}: Ferry guest {fr['owned_pages']} pages, writes {fr['guest_pages_per_s']:,.0f} pages/s"
        if qr and qr.get("guest_pages_per_s"):
            text += f"; QEMU guest {qr['pages']} pages, writes {qr['guest_pages_per_s']:,.0f} pages/s"
        elif qr:
            text += f"; QEMU guest {qr['pages']} pages"
        notes.append(text)
    completed = (qr or {}).get("warmup", []) + (qr or {}).get("runs", [])
    died = [run for run in completed if not run.get("guest_survived")]
    if died:
        notes.append(f"{workload.key}: the QEMU guest's kernel died on arrival after {len(died)} of "
                     f"{len(completed)} migrations QEMU reported completed, warm-up included (their "
                     f"figures count)")
    notes += [f"{workload.key}: {line}" for line in where_the_time_went(fr.get("reports", []))]
    for side, result in (("Ferry", fr), ("QEMU", qr)):
        for error in (result or {}).get("errors", []):
            notes.append(f"{workload.key}: {side} failed: {error}")
    return notes


def where_the_time_went(reports: list[dict]) -> list[str]:
    """Ferry's downtime and setup by step (the report's ``downtime_parts`` and ``setup_parts``),
    in the order the steps happen, and where its first pass spent its time on either end
    (``rounds[0].parts``): medians over the measured migrations."""
    lines = []
    for label, parts_key, whole_key, order in (("downtime", "downtime_parts", "downtime_ms", DOWNTIME_PARTS),
                                               ("setup", "setup_parts", "setup_ms", SETUP_PARTS)):
        found = [r[parts_key] for r in reports if r.get(parts_key)]
        if not found:
            continue
        steps = ", ".join(f"{name} {statistics.median(parts.get(name, 0.0) for parts in found):.1f}"
                          for name in order if name in found[0])
        whole = statistics.median(r[whole_key] for r in reports if r.get(parts_key))
        lines.append(f"Ferry's {label} by step, median ms: {steps} (of {whole:.1f})")
    firsts = [r["rounds"][0] for r in reports if r.get("rounds") and r["rounds"][0].get("parts")]
    for side in ("source", "destination"):
        found = [first["parts"][side] for first in firsts]
        if found:
            steps = ", ".join(f"{name} {statistics.median(parts.get(name, 0.0) for parts in found):.1f}"
                              for name in found[0])
            whole = statistics.median(first["duration_ms"] for first in firsts)
            lines.append(f"Ferry's first pass on the {side}, median ms: {steps} (of {whole:.1f})")
    return lines


# --- main ---

def make_token(workdir: Path) -> Path:
    token = workdir / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    token.chmod(0o600)
    return token


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    exit_cleanly_on_sigterm()
    started = utc_stamp()
    sizes = SIZES[args.mode]
    why_no_qemu = anchor_missing(qemu_unavailable(), args)
    why_no_iperf = anchor_missing(None if shutil.which("iperf3") else
                                  "iperf3 not installed (apt-get install -y iperf3)", args)
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-migration-"))
    lab = Lab(str(workdir / "lab"))
    results: dict = {}
    links: list[float] = []
    try:
        qemu_files = None if why_no_qemu else (linux_kernel(), build_initramfs(workdir))
        progress("lab up (2 hosts)")
        lab.up(2)
        hosts = [FerryHost(lab, info) for info in lab.hosts]
        token = make_token(workdir)
        if not why_no_iperf:
            links += link_rate(lab, *hosts, sizes.iperf_seconds)
        for workload in WORKLOADS:
            fr = measure_ferry(hosts, workdir, token, workload, sizes)
            qr = None
            if qemu_files:
                pages = fr["owned_pages"] or sizes.memory_mib * PAGES_PER_MIB * FILL // 100
                qr = measure_qemu(lab, hosts, workdir, qemu_files, workload, pages, sizes)
            results[workload.key] = {"ferry": fr, "qemu": qr}
        if not why_no_iperf and sizes.link_probes > 1:
            links += link_rate(lab, *hosts, sizes.iperf_seconds)
    finally:
        progress("lab down")
        try:
            lab.down()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    emit(args, started, results, None if why_no_iperf else links, why_no_qemu, why_no_iperf, load_before, sizes)
    return 0


def workload_rows(workload: Workload, result: dict, links: list[float] | None, why_no_qemu: str,
                  why_no_iperf: str) -> list[Row]:
    fr, qr = result["ferry"], result["qemu"]
    try:
        return rows_for(ferry_values(fr), None if qr is None else qemu_values(qr), links, why_no_qemu, why_no_iperf)
    except SampleError as err:
        # The first failed run, if any, is most likely why a row has no sample; all are in the progress lines.
        errors = fr["errors"] + (qr["errors"] if qr else [])
        first = f" (first failure: {errors[0].splitlines()[0]})" if errors else ""
        raise SampleError(f"[{workload.key}] {err}{first}") from None


def emit(args, started: str, results: dict, links: list[float] | None, why_no_qemu: str, why_no_iperf: str,
         load_before: str, sizes: Sizes) -> None:
    tables, all_rows, notes = [], [], []
    size = f"{sizes.memory_mib // 1024} GiB" if sizes.memory_mib >= 1024 else f"{sizes.memory_mib} MiB"
    for workload in WORKLOADS:
        rows = workload_rows(workload, results[workload.key], links, why_no_qemu, why_no_iperf)
        results[workload.key]["rows"] = [r.to_dict() for r in rows]
        all_rows += [replace(r, metric=f"[{workload.key}] {r.metric}") for r in rows]
        tables.append(render_table(f"Live migration, {size} guest, {workload.title}; medians of {sizes.reps}", rows))
        notes += notes_for(workload, results[workload.key]["ferry"], results[workload.key]["qemu"])
    link = median(links) if links else None
    doc = {"benchmark": "migration", "time": started, "mode": args.mode, "quick": args.quick,
           "machine": machine_facts(), "load_average": {"before": load_before, "after": load_average()},
           "qemu": why_no_qemu or qemu_version(),
           "link_bytes_per_s": {"median": link, "samples": links},
           "rows": [r.to_dict() for r in all_rows], "workloads": results, "notes": notes}
    path = write_results("migration", doc)
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return
    print("\n\n".join(tables))
    print(f"\nlink: iperf3 {' / '.join(f'{v * 8 / 1e9:.2f}' for v in links or []) or '-'} Gbit/s; {doc['qemu']}; "
          f"load average before {load_before}, after {doc['load_average']['after']}")
    for note in notes:
        print(f"note: {note}")
    print(f"results: {path}")


if __name__ == "__main__":
    run(main, FerryError)
