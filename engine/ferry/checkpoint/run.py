"""``ferry checkpoint run``: take what is due for every VM the policy covers, then prune.

One run at a time per state directory (a schedule that fires while the last run is
still saving is refused, not queued); a dry run takes no lock. A VM whose take fails does not stop the others;
a prune that fails is a warning. The clock is a parameter, so tests pass ``--now``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from datetime import datetime

from ..errors import Conflict, FerryError
from ..host import snapshots
from ..host.api import Host
from ..store import statedir
from . import plan
from .policy import Policy, VmPolicy

LOCK = "checkpoint.lock"


def lock_runs(host: Host) -> int:
    """Hold the run lock (released when the process ends); refuse a second run."""
    host.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = statedir.open_private(host.root / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict("checkpoint: another checkpoint run is under way on this host") from None
    return fd


def covered(host: Host, policy: Policy) -> list[tuple[str, VmPolicy]]:
    """The VMs of this host the policy covers, with their settings."""
    found = []
    for name in host.names():
        vm_policy = policy.for_vm(name, host.vmdir(name).load_definition().tags)
        if vm_policy is not None:
            found.append((name, vm_policy))
    return found


def checkpoints_of(host: Host, name: str) -> tuple[list[plan.Checkpoint], list[dict]]:
    """The VM's policy-made checkpoints (as the plan sees them) and all its snapshots' summaries.
    A checkpoint that is the newest some replica holds is held: the base of the next send."""
    summaries = snapshots.list_snapshots(host, name)
    protected = host.vmdir(name).protected_ids()
    held = set(host.vmdir(name).replica_bases().values())
    found = []
    for snap in summaries:
        if snap.get("error"):
            continue  # a damaged snapshot's origin is unknown: never pruned by a policy
        checkpoint = plan.from_origin(snap["id"], snap["origin"], snap["id"] in protected, snap["id"] in held)
        if checkpoint is not None:
            found.append(checkpoint)
    return found, summaries


def run(host: Host, policy: Policy, now: datetime, dry_run: bool = False, replicate_to=None) -> dict:
    """A dry run changes nothing, so it needs no lock and runs beside a scheduled one.
    ``replicate_to`` (a ``send.Target``): after its takes and prunes, each VM's checkpoints
    the target lacks are sent there (syncoid after sanoid, in one scheduled run)."""
    fd = None if dry_run else lock_runs(host)
    try:
        vms = [_run_vm(host, name, vm_policy, now, dry_run) for name, vm_policy in covered(host, policy)]
        if replicate_to is not None:
            for vm in vms:
                _replicate(host, vm, replicate_to, dry_run)
    finally:
        if fd is not None:
            os.close(fd)
    return {"now": now.strftime(plan.STAMP), "dry_run": dry_run, "policy": policy.source, "vms": vms,
            "ok": not any(vm["error"] or vm.get("replication_error") for vm in vms)}


def _replicate(host: Host, vm: dict, target, dry_run: bool) -> None:
    """Send what the target lacks of one VM; a failure is this VM's, the others still go."""
    from . import send
    if not vm["kept"]:
        return  # nothing the policy made yet
    if dry_run:
        vm["replicated"] = {"to": target.host, "dry_run": True}
        return
    try:
        report = send.send(host, vm["name"], None, target)
    except FerryError as err:
        vm["replication_error"] = f"replicate to {target.host}: {err}"
        return
    vm["replicated"] = {key: report[key] for key in ("to", "id", "bytes_on_wire", "seconds")}
    vm["replicated"]["checkpoints"] = len(report["checkpoints"])


def _run_vm(host: Host, name: str, vm_policy: VmPolicy, now: datetime, dry_run: bool) -> dict:
    result = {"name": name, "took": None, "skipped": None, "pruned": [], "warnings": [], "error": None, "kept": 0}
    try:
        existing, _ = checkpoints_of(host, name)
        result["kept"] = len(existing)
        periods = plan.due_periods(vm_policy, existing, now)
        if periods:
            taken = _take(host, name, vm_policy, now, periods, dry_run, result)
            if taken is not None:
                existing.append(taken)
        for checkpoint in plan.to_prune(vm_policy, existing):
            _prune(host, name, checkpoint, dry_run, result)
        result["kept"] = len(existing) - len(result["pruned"])  # the policy's checkpoints left
    except FerryError as err:
        result["error"] = str(err)
    return result


def _take(host: Host, name: str, vm_policy: VmPolicy, now: datetime, periods: list[str], dry_run: bool,
          result: dict) -> plan.Checkpoint | None:
    """Take the checkpoint for ``periods``; None if it was skipped (the reason in ``result``)."""
    snapshot_id = plan.checkpoint_id(now, periods)
    result["took"] = {"id": snapshot_id, "periods": periods}
    reason = _why_not(host, name, vm_policy)
    if reason is None and not dry_run:
        reason = _hook(vm_policy, "pre", name, snapshot_id, periods)
    if reason is not None:
        result.update(took=None, skipped=reason)
        return None
    if not dry_run:
        try:
            summary = snapshots.create(host, name, snapshot_id, live=vm_policy["live"],
                                       compress=vm_policy["compress"],
                                       origin=plan.origin(now, periods, vm_policy.source))
        except FerryError as err:
            result["took"] = None
            _hook(vm_policy, "post", name, snapshot_id, periods, status="failed")
            raise FerryError(f"{name}: checkpoint {snapshot_id} failed: {err}") from None
        result["took"].update(pause_ms=summary.get("pause_ms"), disk_bytes=summary.get("disk_bytes"))
        failed = _hook(vm_policy, "post", name, snapshot_id, periods, status="ok")
        if failed:
            result["warnings"].append(failed)
    return plan.Checkpoint(snapshot_id, now, frozenset(periods))


def _why_not(host: Host, name: str, vm_policy: VmPolicy) -> str | None:
    """Why no checkpoint can be taken now (the VM is not running, the disk is short), or None."""
    if not host.vmdir(name).process_alive():
        return "not running: a checkpoint saves a running VM"
    guard = vm_policy["min_free"]
    if guard is None:
        return None
    stats = os.statvfs(host.root)
    free, total = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
    needed = guard.get("bytes") or total * guard["percent"] / 100
    if free < needed:
        return f"min_free: {free / 2**30:.1f} GiB free in {host.root}, the policy wants {needed / 2**30:.1f} GiB"
    return None


def _hook(vm_policy: VmPolicy, which: str, name: str, snapshot_id: str, periods: list[str],
          status: str | None = None) -> str | None:
    """Run the pre or post hook; what went wrong, in one line, or None."""
    command = vm_policy[f"{which}_hook"]
    if not command:
        return None
    env = {**os.environ, "FERRY_VM": name, "FERRY_SNAPSHOT": snapshot_id, "FERRY_PERIODS": " ".join(periods),
           "FERRY_PERIOD": periods[0], "FERRY_HOOK": which}
    if status:
        env["FERRY_STATUS"] = status
    try:
        done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True,
                              timeout=vm_policy["hook_timeout"], check=False)
    except subprocess.TimeoutExpired:
        return f"{which}_hook: did not finish within {vm_policy['hook_timeout']} s"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"{which}_hook: exit {done.returncode}" + (f": {lines[-1][:200]}" if lines else "")
    return None


def _prune(host: Host, name: str, checkpoint: plan.Checkpoint, dry_run: bool, result: dict) -> None:
    if dry_run:
        result["pruned"].append(checkpoint.id)
        return
    try:
        snapshots.delete(host, name, checkpoint.id)
    except FerryError as err:
        result["warnings"].append(f"prune {checkpoint.id}: {err}")
        return
    result["pruned"].append(checkpoint.id)
