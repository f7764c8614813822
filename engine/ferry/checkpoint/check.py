"""``ferry checkpoint check``: is every covered VM's newest checkpoint of each period fresh?

Nagios-style: exit 0 (OK), 1 (WARN), 2 (CRIT), 3 (UNKNOWN: the policy or a snapshot
cannot be read), one line per problem. ``--prometheus FILE`` writes the same readings
in node_exporter's textfile format (written whole, then renamed, so a scrape never
reads half a file).
"""

from __future__ import annotations

from datetime import datetime

from ..host.api import Host
from ..store import statedir
from .policy import Policy
from .run import checkpoints_of, covered

LEVELS = ("OK", "WARN", "CRIT", "UNKNOWN")


def check(host: Host, policy: Policy, now: datetime) -> dict:
    vms = [_check_vm(host, name, vm_policy, now) for name, vm_policy in covered(host, policy)]
    readings = [reading for vm in vms for reading in vm["periods"]]
    code = max([reading["code"] for reading in readings] + [vm["code"] for vm in vms] + [0])
    problems = [f"{LEVELS[r['code']]} {vm['name']} {r['period']}: {r['message']}"
                for vm in vms for r in vm["periods"] if r["code"]]
    problems += [f"UNKNOWN {vm['name']}: {vm['message']}" for vm in vms if vm["code"]]
    return {"status": LEVELS[code], "code": code, "now": now.isoformat(), "vms": vms, "problems": problems}


def _check_vm(host: Host, name: str, vm_policy, now: datetime) -> dict:
    checkpoints, summaries = checkpoints_of(host, name)
    damaged = [snap["id"] for snap in summaries if snap.get("error")]
    ours = {snap["id"]: snap for snap in summaries if not snap.get("error")}
    newest = max(checkpoints, key=lambda c: c.time, default=None)
    last = ours.get(newest.id, {}) if newest else {}
    result = {"name": name, "code": 3 if damaged else 0,
              "message": f"damaged snapshots: {', '.join(damaged)}" if damaged else "",
              "running": host.vmdir(name).process_alive(),
              "last_pause_ms": last.get("pause_ms"), "last_bytes": last.get("disk_bytes"), "periods": []}
    if not vm_policy["take"] or not result["running"]:
        return result  # nothing is being taken: its checkpoints age as they should
    for period in vm_policy.active_periods():
        result["periods"].append(_reading(vm_policy, period, [c for c in checkpoints if period in c.periods], now))
    return result


def _reading(vm_policy, period: str, of_period: list, now: datetime) -> dict:
    warn, crit = vm_policy.age_limit(period, "warn"), vm_policy.age_limit(period, "crit")
    reading = {"period": period, "count": len(of_period), "warn_s": warn, "crit_s": crit, "age_s": None}
    if not of_period:
        return {**reading, "code": 2, "message": "no checkpoint yet"}
    age = (now - max(c.time for c in of_period)).total_seconds()
    code = 2 if age >= crit else 1 if age >= warn else 0
    limit = f", {LEVELS[code].lower()} at {_span(crit if code == 2 else warn)}" if code else ""
    return {**reading, "age_s": age, "code": code, "message": f"newest checkpoint is {_span(age)} old{limit}"}


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d{hours % 24}h"


def render(report: dict) -> None:
    if not report["problems"]:
        periods = sum(len(vm["periods"]) for vm in report["vms"])
        print(f"OK: {len(report['vms'])} VMs, {periods} periods fresh")
        return
    print(f"{report['status']}: {len(report['problems'])} problem{'s' if len(report['problems']) > 1 else ''}")
    for line in report["problems"]:
        print(line)


METRICS = (
    ("ferry_checkpoint_age_seconds", "Age of the newest checkpoint of the period."),
    ("ferry_checkpoint_count", "Checkpoints of the period that the policy made."),
    ("ferry_checkpoint_status", "0 OK, 1 WARN, 2 CRIT, as ferry checkpoint check."),
    ("ferry_checkpoint_last_pause_ms", "Guest pause of the newest checkpoint."),
    ("ferry_checkpoint_last_bytes", "Disk bytes of the newest checkpoint."),
)


def prometheus_text(report: dict) -> str:
    samples = {metric: [] for metric, _ in METRICS}
    for vm in report["vms"]:
        vm_label = f'vm="{vm["name"]}"'  # VM names need no escaping
        for key, metric in (("last_pause_ms", "ferry_checkpoint_last_pause_ms"),
                            ("last_bytes", "ferry_checkpoint_last_bytes")):
            if vm[key] is not None:
                samples[metric].append(f"{metric}{{{vm_label}}} {vm[key]}")
        for reading in vm["periods"]:
            labels = f'{{{vm_label},period="{reading["period"]}"}}'
            if reading["age_s"] is not None:
                samples["ferry_checkpoint_age_seconds"].append(f"ferry_checkpoint_age_seconds{labels} "
                                                               f"{reading['age_s']:.0f}")
            samples["ferry_checkpoint_count"].append(f"ferry_checkpoint_count{labels} {reading['count']}")
            samples["ferry_checkpoint_status"].append(f"ferry_checkpoint_status{labels} {reading['code']}")
    lines = []
    for metric, text in METRICS:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge", *samples[metric]]
    return "\n".join(lines) + "\n"


def write_prometheus(report: dict, path) -> None:
    statedir.write_atomic(path, prometheus_text(report), mode=0o644, durable=False)
