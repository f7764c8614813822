"""Snapshot benchmark: save, pause, restore (lazy and eager), verify and disk bytes,
beside this disk's own bandwidth and QEMU saving and restoring the same footprint.

    .venv/bin/python bench/snapshot.py [--quick | --smoke] [--json]

Ferry's guest is the self-checking guest with ``fill=10 rate=0``: about 10 % of its
usable RAM holds non-zero patterns, written once and then only read (1 GiB and 4 GiB;
``--quick``: 1 GiB; ``--smoke``: 128 MiB, once, every row and anchor). QEMU runs a Linux
guest under ``-accel tcg`` that first reports what its kernel leaves non-zero, then fills
tmpfs up to Ferry's footprint (see bench/qemu.py). These saves are ``--full``.

Incremental saves: a second guest (``changing_cmdline``) owns half its RAM and rewrites
it in order, slowly enough that 10 % of its RAM takes ``CHANGE_S``; once it has written all
of it, a full save, then, after it rewrote about 10 % of its RAM, an incremental save (chunks compared by digest with the
full one, unchanged ones hard-linked) and, at once, a full save of the same state as
its anchor: pause, total time, bytes written and disk bytes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inprocess  # noqa: E402
import qemu  # noqa: E402
from common import (GIB, HEARTBEAT, MIB, BenchError, Ferry, Row, anchor_missing,  # noqa: E402
                    exit_cleanly_on_sigterm, load_average, median, parse_args, progress, report, run, utc_stamp,
                    wait_for)

GUEST_CMDLINE = "fill=10 rate=0 hb=50"
CHANGED = 0.10  # of the guest's RAM rewritten between the full and the incremental save
CHANGE_S = 2.0  # how long that takes: long beside a save, so what changes during one stays small


def changed_pages(memory: int) -> int:
    return round(CHANGED * memory * MIB / 4096)


def changing_cmdline(memory: int) -> str:
    return f"fill=50 rate={round(changed_pages(memory) / CHANGE_S)} hb=50"
UNCAPPED = 1 << 40


@dataclass(frozen=True)
class Sizes:
    """What each mode measures; every mode runs every row."""
    memory_mib: tuple[int, ...]
    repeats: int


# 128 MiB is the smallest guest QEMU's Debian kernel boots in (in 64 MiB it prints nothing).
SIZES = {"full": Sizes((1024, 4096), 3), "quick": Sizes((1024,), 2), "smoke": Sizes((128,), 1)}


def probe_mib(memory: int) -> int:
    """The disk probe's size: about a save's non-zero bytes, a multiple of its 8 MiB blocks."""
    return 16 if memory < 1024 else 256 if memory == 1024 else 512


# --- the disk ---

def disk_bandwidth(directory: Path, mib: int, reads: int = 3) -> dict:
    """Buffered writes + fdatasync of non-zero data (as a save writes), then reads of it from the page cache."""
    block = os.urandom(8 * MIB)
    path = directory / "bench-disk-probe"
    buffer = bytearray(8 * MIB)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            started = time.perf_counter()
            for _ in range(mib // 8):
                os.write(fd, block)
            os.fdatasync(fd)
            write = mib * MIB / (time.perf_counter() - started)
        finally:
            os.close(fd)
        read_rates = []
        for _ in range(reads):
            fd = os.open(path, os.O_RDONLY)
            try:
                started = time.perf_counter()
                while os.readv(fd, [buffer]):
                    pass
                read_rates.append(mib * MIB / (time.perf_counter() - started))
            finally:
                os.close(fd)
        return {"write_bytes_per_s": write, "page_cache_read_bytes_per_s": median(read_rates),
                "probe_mib": mib, "read_samples": read_rates}
    finally:
        path.unlink(missing_ok=True)


# --- Ferry, through its command line ---

def start_guest(ferry: Ferry, name: str, memory: int, cmdline: str = GUEST_CMDLINE) -> int:
    """Start the guest and wait until every owned page has been written once; returns the owned pages."""
    ferry.define(name, memory, cmdline=cmdline)
    ferry.run("start", name)
    owned = ferry.owned_pages(name)
    wait_for(lambda: any(beat[3] >= owned for beat in ferry.heartbeats(name)), 300,
             f"{name}: first pass over its {owned} pages")
    return owned


def save(ferry: Ferry, name: str, snapshot: str, *flags: str) -> dict:
    wall, result = ferry.run("snapshot", "create", name, "--snapshot", snapshot, *flags, timeout=600)
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    return {"wall_s": wall, "total_s": result["total_ms"] / 1000, "pause_s": result["pause_ms"] / 1000,
            "disk_bytes": result["disk_bytes"], "shared_bytes": result["shared_bytes"],
            "rounds": manifest["save"]["rounds"],
            "bytes_written": manifest["save"]["bytes_written"], "path": result["path"]}


def restore_cli(ferry: Ferry, name: str, snapshot: str, clone: str, eager: bool) -> dict:
    """``ferry restore`` (returns once the VM runs), then the clone's first heartbeat."""
    started = time.perf_counter()
    try:
        wall, _ = ferry.run("restore", name, snapshot, "--as", clone, *(["--eager"] if eager else []),
                            timeout=600)
        ferry.wait_heartbeats(clone, 1, timeout=60)
        return {"running_s": wall, "first_heartbeat_s": time.perf_counter() - started}
    finally:
        ferry.remove(clone)


# --- Ferry, in this process ---

class HeartbeatConsole:
    """A console that notes when the first heartbeat line is complete."""

    def __init__(self):
        self.data = bytearray()
        self.first_heartbeat: float | None = None

    def write(self, data: bytes) -> None:
        self.data += data
        if self.first_heartbeat is None and data.endswith(b"\n") and HEARTBEAT.search(self.data):
            self.first_heartbeat = time.perf_counter()

    def flush(self) -> None:
        pass


def restore_in_process(folder: Path, lazy: bool) -> dict:
    """From the start of reading the snapshot to the first KVM_RUN (and to the first heartbeat).

    Memory checksums are left out, as the VM process leaves them out once the
    command has verified the snapshot.
    """
    console, stamps = HeartbeatConsole(), []
    started = time.perf_counter()
    machine = inprocess.restore_machine(folder, console, lazy)
    built = time.perf_counter()
    running = False
    try:
        inprocess.stamp_first_run(machine, stamps)
        machine.start()
        running = True
        wait_for(lambda: stamps, 30, "in-process restore: first KVM_RUN", interval=0.001)
        wait_for(lambda: console.first_heartbeat, 30, "in-process restore: first heartbeat", interval=0.002)
    finally:
        if running:
            machine.stop()
        machine.close()
    if b"CORRUPT" in console.data:
        raise BenchError(f"in-process restore of {folder.name}: the guest reported CORRUPT")
    return {"build_s": built - started, "first_run_s": stamps[0] - started,
            "first_heartbeat_s": console.first_heartbeat - started}


def verify_in_process(folder: Path) -> float:
    started = time.perf_counter()
    inprocess.verify_snapshot(folder)
    return time.perf_counter() - started


def measure_ferry(ferry: Ferry, memory: int, repeats: int) -> dict:
    name = f"snap-{memory}"
    progress(f"Ferry {memory} MiB: start, fill ({GUEST_CMDLINE})")
    owned = start_guest(ferry, name, memory)
    try:
        progress(f"Ferry {memory} MiB: {repeats} live saves, {repeats} stop-the-world saves, verifies")
        live = [save(ferry, name, f"live-{i}", "--full") for i in range(repeats)]
        stw = [save(ferry, name, f"stw-{i}", "--stop-the-world", "--full") for i in range(repeats)]
        verify = [ferry.run("snapshot", "verify", name, f"live-{i}", timeout=600)[0] for i in range(repeats)]
        progress(f"Ferry {memory} MiB: restores (command, lazy and eager)")
        lazy = [restore_cli(ferry, name, f"live-{i}", f"lazy-{memory}-{i}", eager=False) for i in range(repeats)]
        eager = [restore_cli(ferry, name, f"live-{i}", f"eager-{memory}-{i}", eager=True) for i in range(repeats)]
        progress(f"Ferry {memory} MiB: restores in this process (lazy and eager)")
        folder = Path(live[0]["path"])
        in_lazy = [restore_in_process(folder, lazy=True) for _ in range(repeats)]
        in_eager = [restore_in_process(folder, lazy=False) for _ in range(repeats)]
        in_verify = [verify_in_process(Path(s["path"])) for s in live]
    finally:
        ferry.remove(name)
    return {"owned_pages": owned, "live": live, "stw": stw, "verify_s": verify, "restore_lazy": lazy,
            "restore_eager": eager, "in_process_lazy": in_lazy, "in_process_eager": in_eager,
            "in_process_verify_s": in_verify}


def writes_so_far(ferry: Ferry, name: str) -> int:
    return ferry.heartbeats(name)[-1][3]


def measure_incremental(ferry: Ferry, memory: int, repeats: int) -> dict:
    """Full save, ``CHANGED`` of RAM rewritten, incremental save and a full one of the same state."""
    name = f"incr-{memory}"
    cmdline, pages = changing_cmdline(memory), changed_pages(memory)
    progress(f"Ferry {memory} MiB: incremental saves ({cmdline}, {CHANGED:.0%} changed)")
    start_guest(ferry, name, memory, cmdline)
    runs = []
    try:
        for i in range(repeats):
            save(ferry, name, f"base-{i}", "--full")
            target = writes_so_far(ferry, name) + pages
            wait_for(lambda: writes_so_far(ferry, name) >= target, 120, f"{name}: {pages} pages rewritten")
            incremental = save(ferry, name, f"incr-{i}")
            runs.append({"incremental": incremental, "full": save(ferry, name, f"full-{i}", "--full")})
            for snapshot in (f"base-{i}", f"full-{i}"):
                ferry.run("snapshot", "delete", name, snapshot)
        verify = [ferry.run("snapshot", "verify", name, f"incr-{i}", timeout=600)[0] for i in range(repeats)]
    finally:
        ferry.remove(name)
    return {"runs": runs, "changed_bytes": pages * 4096, "verify_s": verify}


def incremental_rows(memory: int, measured: dict) -> list[Row]:
    size, runs = size_label(memory), measured["runs"]
    changed = f"{CHANGED:.0%} of RAM changed"
    rows = []
    for key, metric, unit in (("pause_s", "guest paused (pause_ms)", "s"), ("total_s", "total (total_ms)", "s"),
                              ("bytes_written", "bytes written", "B"), ("disk_bytes", "disk bytes held alone", "B")):
        rows.append(Row(f"incremental save, {changed}: {metric} [{size}]", unit,
                        [r["incremental"][key] for r in runs], [r["full"][key] for r in runs],
                        "full save (--full) of the same guest state", "lower",
                        extra={"shared_bytes": [r["incremental"]["shared_bytes"] for r in runs],
                               "changed_bytes": measured["changed_bytes"]}))
    return rows


# --- QEMU ---

def measure_qemu(workdir: Path, memory: int, target_nonzero: int, repeats: int) -> dict:
    initramfs = qemu.build_initramfs(workdir)
    image = workdir / f"qemu-{memory}.migration"
    progress(f"QEMU {memory} MiB: boot under TCG")
    vm = qemu.QemuVm(workdir, f"qemu-src-{memory}", memory, initramfs)
    try:
        serial = vm.attach_serial()
        serial.wait(b"BENCH-READY", 180)
        baseline = vm.save(image, UNCAPPED)["normal_bytes"]
        vm.cont()
        fill_mib = max(0, round((target_nonzero - baseline) / MIB))
        progress(f"QEMU {memory} MiB: kernel leaves {baseline / MIB:.0f} MiB non-zero; filling {fill_mib} MiB")
        serial.type(str(fill_mib))
        serial.wait(b"BENCH-FILLED", 300)
        progress(f"QEMU {memory} MiB: saves (default cap once, uncapped x{repeats})")
        capped = vm.save(image, qemu.DEFAULT_MAX_BANDWIDTH)
        vm.cont()
        uncapped = []
        for _ in range(repeats):
            result = vm.save(image, UNCAPPED)
            result["fsync_s"] = qemu.fsync_seconds(image)
            vm.cont()
            uncapped.append(result)
    finally:
        vm.close()
    progress(f"QEMU {memory} MiB: restores x{repeats}")
    restores = []
    try:
        for i in range(repeats):
            target = qemu.QemuVm(workdir, f"qemu-dst-{memory}-{i}", memory, initramfs, incoming=image)
            try:
                restores.append(target.wait_incoming_then_run())
            finally:
                target.close()
    finally:
        image.unlink(missing_ok=True)
    return {"kernel_nonzero_bytes": baseline, "fill_mib": fill_mib, "capped": capped, "uncapped": uncapped,
            "restore_s": restores}


# --- the table ---

def size_label(memory: int) -> str:
    return f"{memory // 1024} GiB" if memory >= 1024 else f"{memory} MiB"


CACHE_READ = "reading the snapshot's non-zero bytes from the page cache"
QEMU_RESTORE = "QEMU launch with -incoming exec:cat + cont, to running"


def rows_for(memory: int, f: dict, q: dict | None, why_no_qemu: str, disk: dict) -> list[Row]:
    size = size_label(memory)
    nonzero = median(s["disk_bytes"] for s in f["live"])
    cache_read = [nonzero / rate for rate in disk["read_samples"]]
    live, stw = f["live"], f["stw"]
    rows = []

    def versus_qemu(metric, ferry_samples, pick, anchor_name, unit="s", better="lower", extra=None):
        rows.append(Row(metric, unit, ferry_samples, None if q is None else pick(q), anchor_name, better,
                        note=why_no_qemu, extra=extra or {}))

    def uncapped_plus_fsync(q):
        return [s["seconds"] + s["fsync_s"] for s in q["uncapped"]]

    live_metric = f"save, live (total_ms) [{size}]"
    live_totals = [s["total_s"] for s in live]
    live_extra = {"cli_wall_s": [s["wall_s"] for s in live], "rounds": [s["rounds"] for s in live]}
    versus_qemu(live_metric, live_totals, lambda q: [s["seconds"] for s in q["uncapped"]],
                "QEMU stop + migrate to file, uncapped", extra=live_extra)
    versus_qemu(live_metric, live_totals, lambda q: [q["capped"]["seconds"]],
                "QEMU stop + migrate to file, default 128 MiB/s cap", extra=live_extra)
    versus_qemu(live_metric, live_totals, uncapped_plus_fsync, "QEMU uncapped + fsync of its file", extra=live_extra)
    versus_qemu(f"save, stop-the-world (total_ms) [{size}]", [s["total_s"] for s in stw], uncapped_plus_fsync,
                "QEMU uncapped + fsync of its file")
    versus_qemu(f"guest paused during a live save (pause_ms) [{size}]", [s["pause_s"] for s in live],
                lambda q: [s["seconds"] for s in q["uncapped"]], "QEMU uncapped (stopped for the whole save)")
    rows.append(Row(f"save bandwidth, live (non-zero bytes / total) [{size}]", "B/s",
                    [s["disk_bytes"] / s["total_s"] for s in live], [disk["write_bytes_per_s"]],
                    "this disk: buffered write + fdatasync", "higher"))
    versus_qemu(f"snapshot on disk [{size}]", [s["disk_bytes"] for s in live],
                lambda q: [s["file_bytes"] for s in q["uncapped"]], "QEMU migration file (same non-zero footprint)",
                unit="B")
    for mode in ("lazy", "eager"):
        runs = f[f"restore_{mode}"]
        versus_qemu(f"restore to running, {mode} (`ferry restore`) [{size}]", [r["running_s"] for r in runs],
                    lambda q: q["restore_s"], QEMU_RESTORE,
                    extra={"to_first_heartbeat_s": [r["first_heartbeat_s"] for r in runs]})
    for mode in ("lazy", "eager"):
        runs = f[f"in_process_{mode}"]
        rows.append(Row(f"restore in-process, {mode}: build -> first KVM_RUN [{size}]", "s",
                        [r["first_run_s"] for r in runs], cache_read, CACHE_READ, "lower",
                        extra={"build_s": [r["build_s"] for r in runs],
                               "to_first_heartbeat_s": [r["first_heartbeat_s"] for r in runs]}))
    rows.append(Row(f"verify (`ferry snapshot verify`) [{size}]", "s", f["verify_s"], cache_read, CACHE_READ,
                    "lower"))
    rows.append(Row(f"verify in-process [{size}]", "s", f["in_process_verify_s"], cache_read, CACHE_READ, "lower"))
    return rows


def footprint_note(memory: int, f: dict, q: dict | None) -> str:
    nonzero = median(s["disk_bytes"] for s in f["live"])
    text = (f"{size_label(memory)}: Ferry guest {f['owned_pages'] * 4096 / MIB:.0f} MiB owned, "
            f"snapshot {nonzero / MIB:.0f} MiB non-zero")
    if q is not None:
        moved = median(s["normal_bytes"] for s in q["uncapped"])
        text += (f"; QEMU guest: kernel {q['kernel_nonzero_bytes'] / MIB:.0f} MiB + fill {q['fill_mib']} MiB, "
                 f"{moved / MIB:.0f} MiB non-zero pages migrated")
    return text


def disk_note(memory: int, disk: dict) -> str:
    return (f"{size_label(memory)} round: disk write + fdatasync {disk['write_bytes_per_s'] / MIB:.0f} MiB/s, "
            f"page-cache read {disk['page_cache_read_bytes_per_s'] / GIB:.2f} GiB/s ({disk['probe_mib']} MiB probe)")


def main() -> int:
    args = parse_args(__doc__.strip().splitlines()[0])
    exit_cleanly_on_sigterm()
    started = utc_stamp()
    sizes = SIZES[args.mode]
    repeats = sizes.repeats
    load_before = load_average()
    why_no_qemu = anchor_missing(qemu.unavailable(), args)
    inprocess.install_kick_handler()
    rows: list[Row] = []
    notes: list[str] = []
    raw: dict = {}
    with Ferry() as ferry, tempfile.TemporaryDirectory(prefix="ferry-bench-qemu-") as scratch:
        for memory in sizes.memory_mib:
            # Probed right before Ferry's saves: this disk's speed drifts with what else runs on the machine.
            progress(f"disk: write + fdatasync, page-cache read ({size_label(memory)} round)")
            disk = disk_bandwidth(ferry.state_dir, probe_mib(memory))
            f = measure_ferry(ferry, memory, repeats)
            incremental = measure_incremental(ferry, memory, repeats)
            q = None
            if not why_no_qemu:
                # A QEMU that fails is an anchor that did not measure: the run fails with it.
                q = measure_qemu(Path(scratch), memory, median(s["disk_bytes"] for s in f["live"]), repeats)
            rows += rows_for(memory, f, q, why_no_qemu, disk) + incremental_rows(memory, incremental)
            notes += [footprint_note(memory, f, q), disk_note(memory, disk)]
            raw[size_label(memory)] = {"ferry": f, "incremental": incremental, "qemu": q, "disk": disk}
    notes += [f"QEMU: {why_no_qemu or qemu.version()}; guest under -accel tcg, 1 vCPU",
              "`ferry restore` checks every checksum before it starts the VM, so its time includes a verify",
              f"load average before/after: {load_before} / {load_average()}"]
    report("snapshot", "Ferry snapshot benchmark (MiB = 2^20 B)", rows, args, started,
           {"notes": notes, "raw": raw})
    return 0


if __name__ == "__main__":
    run(main)
