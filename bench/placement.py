"""Placement benchmark: the evacuation planner on a synthetic fleet.

    .venv/bin/python bench/placement.py [--quick | --smoke] [--hosts N] [--vms M] [--json]

Ferry: the ``ferry.hypervisor.evacuation_plan`` filter (input checks included, as a play
calls it) planning the drain of about 10 % of the hosts of a synthetic fleet: VMs of 512 MiB
to 16 GiB and 1 to 8 vCPUs, a tenth of them stopped, a third in anti-affinity groups of two to
five, a few ignored or pinned. The anchor, measured in the same run, is Python's own sort of
the same fleet's VMs by size (``sorted`` of every VM by memory, vCPUs and name): the least a
planner that places the biggest VMs first has to do.

The full run plans 1,000 hosts x 20,000 VMs, 5 repetitions; ``--quick`` the same fleet with 3;
``--smoke`` 50 hosts x 1,000 VMs once, to show the benchmark works. ``--hosts`` and ``--vms``
set the fleet's size in any mode. The JSON document's ``seconds`` is Ferry's median.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, BenchError, Row, load_average, parse_args, progress, report, run, utc_stamp  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    hosts: int
    vms: int
    repeats: int


SIZES = {"full": Sizes(1000, 20000, 5), "quick": Sizes(1000, 20000, 3), "smoke": Sizes(50, 1000, 1)}
MEMORY_MIB = (512, 1024, 2048, 4096, 8192, 16384)


def evacuation_plan():
    """The filter as Ansible loads it, from the checkout linked as the collection."""
    collections = ROOT / "collections"
    if not (collections / "ansible_collections" / "ferry" / "hypervisor").exists():
        raise BenchError("the checkout is not linked as the collection: run scripts/link-collection.sh")
    sys.path.insert(0, str(collections))
    from ansible_collections.ferry.hypervisor.plugins.filter.evacuation import FilterModule
    return FilterModule().filters()["evacuation_plan"]


def fleet(hosts: int, vms: int, seed: int = 7):
    """(facts, drain): host_info/vm_info facts of a fleet with room for its drained VMs."""
    rng = random.Random(seed)
    names = [f"h{index:04d}" for index in range(hosts)]
    placed = {name: [] for name in names}
    group = 0
    index = 0
    while index < vms:
        size = rng.randint(2, 5) if rng.random() < 0.33 else 1
        group += size > 1
        for host in rng.sample(names, min(size, hosts, vms - index)):
            tags = [f"group:g{group}"] if size > 1 else []
            roll = rng.random()
            if roll < 0.01:
                tags.append("evacuate-ignore")
            elif roll < 0.012:
                tags.append("pinned")
            placed[host].append({"name": f"vm{index:06d}", "state": "stopped" if rng.random() < 0.1 else "running",
                                 "memory": rng.choice(MEMORY_MIB), "vcpus": rng.randint(1, 8), "tags": tags})
            index += 1
    facts = {name: {"host": host_facts(placed[name]), "vms": placed[name]} for name in names}
    drain = sorted(rng.sample(names, max(1, hosts // 10)))
    return facts, drain


def host_facts(vms):
    running = [vm for vm in vms if vm["state"] != "stopped"]
    committed = sum(vm["memory"] for vm in running)
    total = 512 * 1024
    return {"hostname": "", "cpus": 64, "memory_total_mib": total, "memory_free_mib": total - committed - 2048,
            "committed_memory_mib": committed, "committed_vcpus": sum(vm["vcpus"] for vm in running), "drained": None}


def time_once(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> int:
    args = parse_args(__doc__.strip().splitlines()[0], add_arguments=lambda parser: (
        parser.add_argument("--hosts", type=int, help="hosts in the fleet"),
        parser.add_argument("--vms", type=int, help="VMs in the fleet")))
    started = utc_stamp()
    sizes = SIZES[args.mode]
    hosts, vms = args.hosts or sizes.hosts, args.vms or sizes.vms
    if hosts < 2 or vms < 1:
        raise BenchError(f"a fleet needs 2 hosts or more and a VM, got {hosts} hosts and {vms} VMs")
    load_before = load_average()
    plan = evacuation_plan()
    progress(f"fleet: {hosts} hosts x {vms} VMs")
    facts, drain = fleet(hosts, vms)
    every_vm = [vm for fact in facts.values() for vm in fact["vms"]]
    ferry, anchor, result = [], [], None
    for repeat in range(sizes.repeats):
        progress(f"repetition {repeat + 1} of {sizes.repeats}")
        # One of each in turn, so load from elsewhere falls on both alike.
        anchor.append(time_once(lambda: sorted(every_vm, key=lambda vm: (-vm["memory"], -vm["vcpus"], vm["name"]))))
        started_plan = time.perf_counter()
        result = plan(facts, drain, {})
        ferry.append(time.perf_counter() - started_plan)
    rows = [Row(f"evacuation_plan, {hosts} hosts x {vms} VMs, {len(drain)} drained", "s", ferry, anchor,
                "Python's sorted() of the same VMs by size", "lower")]
    counts = {"hosts": hosts, "vms": vms, "drained": len(drain), "moves": len(result["moves"]),
              "waves": result["waves"], "unplaced": len(result["unplaced"]), "pinned": len(result["pinned"]),
              "ignored": len(result["ignored"])}
    notes = [f"plan: {counts['moves']} moves in {counts['waves']} waves (default budgets), {counts['unplaced']} unplaced, "
             f"{counts['pinned']} pinned, {counts['ignored']} ignored",
             f"load average before/after: {load_before} / {load_average()}"]
    report("placement", "Ferry evacuation planner benchmark", rows, args, started,
           {"notes": notes, "seconds": rows[0].ferry, "fleet": counts})
    return 0


if __name__ == "__main__":
    run(main)
