"""``ferry checkpoint run|check``: scheduled checkpoints by a policy file."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from ..checkpoint import policy as policies
from ..host.api import Host

DEFAULT_POLICY = Path("/etc/ferry/checkpoints.yaml")


def utc_time(text: str) -> datetime:
    """An argparse type: an ISO 8601 time; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time like 2026-12-04T18:00:00Z") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _now(args) -> datetime:
    return args.now or datetime.now(timezone.utc)


def cmd_run(args):
    from ..checkpoint import run
    report = run.run(Host(args.state_dir), policies.load(args.policy), _now(args), args.dry_run)
    args.exit_status = 0 if report["ok"] else 1
    return report


def _render_run(report: dict) -> None:
    verb = "would take" if report["dry_run"] else "took"
    for vm in report["vms"]:
        if vm["took"]:
            print(f"{vm['name']}: {verb} {vm['took']['id']} ({', '.join(vm['took']['periods'])})")
        if vm["skipped"]:
            print(f"{vm['name']}: skipped: {vm['skipped']}")
        for snapshot_id in vm["pruned"]:
            print(f"{vm['name']}: {'would prune' if report['dry_run'] else 'pruned'} {snapshot_id}")
        for warning in vm["warnings"]:
            print(f"{vm['name']}: warning: {warning}")
        if vm["error"]:
            print(f"{vm['name']}: FAILED: {vm['error']}")
    if not report["vms"]:
        print(f"no VM here is covered by {report['policy']}")


def cmd_check(args):
    from ..checkpoint import check
    try:
        report = check.check(Host(args.state_dir), policies.load(args.policy), _now(args))
    except policies.PolicyError as err:
        report = {"status": "UNKNOWN", "code": 3, "vms": [], "problems": [f"UNKNOWN {err}"]}
    if args.prometheus and report["code"] != 3:
        check.write_prometheus(report, args.prometheus)
    args.exit_status = report["code"]
    return report


def _render_check(report: dict) -> None:
    from ..checkpoint.check import render
    render(report)


def register(sub, common) -> None:
    group = sub.add_parser("checkpoint", help="scheduled checkpoints by a policy: take, prune, check")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    options = argparse.ArgumentParser(add_help=False, parents=[common])
    options.add_argument("--policy", type=Path, default=DEFAULT_POLICY,
                         help=f"the policy file (YAML; default {DEFAULT_POLICY})")
    options.add_argument("--now", type=utc_time, metavar="ISO-TIME", help="act as if it were this time (UTC)")

    run = actions.add_parser("run", parents=[options], help="take the checkpoints that are due, then prune")
    run.add_argument("--dry-run", action="store_true", help="print what would be taken and pruned, change nothing")
    run.set_defaults(func=cmd_run, render=_render_run)

    check = actions.add_parser("check", parents=[options],
                               help="is each VM's newest checkpoint fresh? (exit 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN)")
    check.add_argument("--prometheus", type=Path, metavar="FILE",
                       help="also write the readings for node_exporter's textfile collector")
    check.set_defaults(func=cmd_check, render=_render_check)
