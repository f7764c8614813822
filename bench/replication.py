"""Replication benchmark: ``ferry checkpoint send`` between two lab hosts over real OpenSSH,
beside the same link's TCP throughput (iperf3), and the bytes a full and an incremental send
put on the wire beside what the checkpoints hold.

    .venv/bin/python bench/replication.py [--quick | --smoke] [--json]

The self-checking guest writes 10 MiB/s (``rate=2560``) on lab host h1. Each repetition
takes a checkpoint once every owned page has been written, sends it to h2 (full: h2 holds
nothing of the VM), takes a second one a second later and sends that (incremental: only the
chunks that changed travel). A send's rate is its bytes sent over its whole time (ssh's
connection and the remote ferry's start included); the transfer's rate leaves those out. Anchors, measured in the same run: iperf3, one TCP stream
h1 -> h2 over the same veth and bridge, for the rate; the checkpoint's chunk files (the
chunks with data) for the full send's bytes; the chunks whose digest changed between the two
manifests for the incremental send's. ``--smoke``: a 128 MiB guest, one repetition, a
1-second iperf3 run.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ferry.errors import FerryError  # noqa: E402
from ferry.lab import Lab  # noqa: E402
from ferry.memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST  # noqa: E402

from common import (BenchError, Row, anchor_missing, exit_cleanly_on_sigterm, load_average,  # noqa: E402
                    machine_facts, parse_args, progress, render_table, run, utc_stamp, wait_for, write_results)
from migration import FerryHost, heartbeats, link_rate, owned_pages  # noqa: E402

VM = "r1"
RATE = 2560  # pages per second: 10 MiB/s


@dataclass(frozen=True)
class Sizes:
    memory_mib: int
    fill: int  # percent of the guest's RAM it owns and keeps writing
    reps: int
    iperf_seconds: int


SIZES = {"full": Sizes(1024, 20, 3, 3), "quick": Sizes(512, 20, 1, 3), "smoke": Sizes(128, 50, 1, 1)}


def start_vm(host: FerryHost, workdir: Path, sizes: Sizes) -> int:
    """The guest, running; returns its owned pages."""
    path = workdir / f"{VM}.yaml"
    path.write_text(f"name: {VM}\nvcpus: 1\nmemory: {sizes.memory_mib}\nkernel: builtin:selfcheck\n"
                    f"cmdline: fill={sizes.fill} rate={RATE} hb=100\n")
    host.run("define", str(path))
    host.run("start", VM)
    return owned_pages(host, VM)


def written_once(host: FerryHost, pages: int, timeout: float = 120) -> None:
    wait_for(lambda: (lambda b: b and b[-1][1] > pages)(heartbeats(host.console(VM))), timeout,
             f"{VM}: every owned page written", interval=0.1)


def manifest(host: FerryHost, snapshot_id: str) -> dict:
    return json.loads((host.state_dir / "vms" / VM / "snapshots" / snapshot_id / "manifest.json").read_text())


def send(here: FerryHost, there: FerryHost, lab: Lab, snapshot_id: str) -> dict:
    state = lab.require()
    return here.run("checkpoint", "send", VM, snapshot_id, "--to", there.ipv4, "--ssh-user", "root",
                    "--ssh-key", state["ssh_key"], "--ssh-known-hosts", state["known_hosts"],
                    "--link-timeout", "10", timeout=300)


def clear(hosts: list[FerryHost], lab: Lab) -> None:
    """No checkpoint of the VM on h1, no replica of it on h2."""
    h1, h2 = hosts
    for snap in h1.run("snapshot", "list", VM) or []:
        h1.run("snapshot", "delete", VM, snap["id"])
    lab.exec(h2.name, ["rm", "-rf", f"/var/lib/ferry/replicas/{VM}"], check=True)


def one_rep(hosts: list[FerryHost], lab: Lab, rep: int) -> dict:
    """A full send then an incremental one, from a clean slate on both hosts."""
    h1, h2 = hosts
    clear(hosts, lab)
    full_id, inc_id = f"rep{rep}-full", f"rep{rep}-incremental"
    h1.run("snapshot", "create", VM, "--snapshot", full_id)
    full = send(h1, h2, lab, full_id)
    time.sleep(1)
    h1.run("snapshot", "create", VM, "--snapshot", inc_id)
    incremental = send(h1, h2, lab, inc_id)
    before, after = manifest(h1, full_id)["memory"]["chunks"], manifest(h1, inc_id)["memory"]["chunks"]
    return {"full": full, "incremental": incremental,
            "held_bytes": sum(CHUNK_SIZE for value in before if value != ZERO_CHUNK_DIGEST),
            "changed_bytes": sum(CHUNK_SIZE for old, new in zip(before, after)
                                 if new != ZERO_CHUNK_DIGEST and new != old)}


def measure(hosts: list[FerryHost], lab: Lab, workdir: Path, sizes: Sizes) -> list[dict]:
    h1 = hosts[0]
    pages = start_vm(h1, workdir, sizes)
    try:
        written_once(h1, pages)
        reps = []
        for rep in range(sizes.reps):
            progress(f"rep {rep + 1}/{sizes.reps}: full and incremental send h1 -> h2")
            reps.append(one_rep(hosts, lab, rep))
        heartbeats(h1.console(VM))  # a CORRUPT guest fails the run
        return reps
    finally:
        clear(hosts, lab)
        h1.remove(VM)


def rows_for(reps: list[dict], links: list[float]) -> list[Row]:
    full = [r["full"] for r in reps]
    incremental = [r["incremental"] for r in reps]
    return [
        Row("full send: rate", "B/s", [f["rate"] for f in full], links, "iperf3, 1 TCP stream h1 -> h2", "higher"),
        Row("full send: rate of the transfer (ssh and remote start left out)", "B/s",
            [f["checkpoints"][0]["bytes"] / f["checkpoints"][0]["seconds"] for f in full], links,
            "iperf3, 1 TCP stream h1 -> h2", "higher"),
        Row("incremental send: rate", "B/s", [i["rate"] for i in incremental], links,
            "iperf3, 1 TCP stream h1 -> h2", "higher"),
        Row("full send: bytes on the wire", "B", [f["bytes_on_wire"] for f in full],
            [r["held_bytes"] for r in reps], "the checkpoint's chunks with data", "lower"),
        Row("incremental send: bytes on the wire", "B", [i["bytes_on_wire"] for i in incremental],
            [r["changed_bytes"] for r in reps], "chunks changed since the full one", "lower"),
        Row("incremental send: bytes on the wire, vs full", "B", [i["bytes_on_wire"] for i in incremental],
            [f["bytes_on_wire"] for f in full], "the full send's bytes on the wire", "lower"),
    ]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    exit_cleanly_on_sigterm()
    started = utc_stamp()
    sizes = SIZES[args.mode]
    anchor_missing(None if shutil.which("iperf3") else "iperf3 not installed (apt-get install -y iperf3)", args)
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-replication-"))
    lab = Lab(str(workdir / "lab"))
    try:
        progress("lab up (2 hosts)")
        lab.up(2)
        hosts = [FerryHost(lab, info) for info in lab.hosts]
        links = link_rate(lab, *hosts, sizes.iperf_seconds)
        if not links:
            raise BenchError("iperf3 between h1 and h2 gave no reading: no anchor for the rate")
        reps = measure(hosts, lab, workdir, sizes)
    finally:
        progress("lab down")
        try:
            lab.down()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = rows_for(reps, links)
    doc = {"benchmark": "replication", "time": started, "mode": args.mode, "quick": args.quick,
           "machine": machine_facts(), "load_average": {"before": load_before, "after": load_average()},
           "sizes": sizes.__dict__, "link_bytes_per_s": links, "rows": [r.to_dict() for r in rows], "reps": reps}
    path = write_results("replication", doc)
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    print(render_table(f"Replication, {sizes.memory_mib} MiB guest writing 10 MiB/s, medians of {sizes.reps}",
                       rows))
    print(f"link: iperf3 {' / '.join(f'{v * 8 / 1e9:.2f}' for v in links)} Gbit/s; "
          f"load average before {load_before}, after {doc['load_average']['after']}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    run(main, FerryError)
