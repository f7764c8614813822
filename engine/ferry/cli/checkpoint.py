"""``ferry checkpoint run|check|send|receive|replicas``: scheduled checkpoints by a policy file,
and their replication to other hosts."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from ..checkpoint import policy as policies
from ..host.api import Host
from .options import positive, ssh_of, ssh_options
from .table import print_table

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
    report = run.run(Host(args.state_dir), policies.load(args.policy), _now(args), args.dry_run,
                     _replica_target(args))
    args.exit_status = 0 if report["ok"] else 1
    return report


def _replica_target(args):
    if not args.replicate_to:
        return None
    from ..checkpoint import send
    return send.Target(args.replicate_to, ssh_of(args), args.remote_ferry, args.remote_state_dir, args.remote_policy,
                       args.link_timeout)


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
        if vm.get("replicated") and not report["dry_run"]:
            sent = vm["replicated"]
            print(f"{vm['name']}: replicated to {sent['to']}: {sent['checkpoints']} checkpoints, "
                  f"{sent['bytes_on_wire'] / 2**20:.1f} MiB in {sent['seconds']:.1f} s")
        elif vm.get("replicated"):
            print(f"{vm['name']}: would replicate to {vm['replicated']['to']}")
        if vm.get("replication_error"):
            print(f"{vm['name']}: FAILED: {vm['replication_error']}")
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


def cmd_send(args):
    from ..checkpoint import send
    target = send.Target(args.to, ssh_of(args), args.remote_ferry, args.remote_state_dir, args.remote_policy,
                         args.link_timeout)
    return send.send(Host(args.state_dir), args.name, args.id, target, args.bandwidth)


def _render_send(report: dict) -> None:
    for sent in report["checkpoints"]:
        moved = sent["chunks_sent"] * 2
        print(f"{report['name']} {sent['id']} -> {report['to']}: {sent['chunks_sent']} chunks sent ({moved} MiB), "
              f"{sent['chunks_linked']} linked, {sent['chunks_kept']} kept from a cut send, "
              f"{sent['bytes'] / 2**20:.1f} MiB on the wire in {sent['seconds']:.2f} s"
              + (f"; pruned there: {', '.join(sent['pruned'])}" if sent["pruned"] else ""))
        for warning in sent["warnings"]:
            print(f"{report['name']} {sent['id']}: warning: {warning}")
    if not report["checkpoints"]:
        print(f"{report['name']}: {report['to']} already holds {report['id']}")


def cmd_receive(args):
    import os
    import sys
    from ..checkpoint import receive, wire
    from ..migration.transport import Channel, StdioLink
    # The protocol owns stdout: anything else printed goes to stderr, which ssh passes on.
    link = StdioLink(sys.stdin.fileno(), os.dup(sys.stdout.fileno()))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    channel = Channel(link, False, wire.TO_TARGET, args.link_timeout)
    try:
        receive.serve(Host(args.state_dir), channel, args.policy)
    finally:
        channel.close()


def cmd_replicas(args):
    from ..host import snapshots
    return snapshots.list_replicas(Host(args.state_dir), args.name)


def _render_replicas(replicas: list) -> None:
    from .snapshots import LIST_TITLES, row
    print_table(("VM",) + LIST_TITLES, [[snap["vm"], *row(snap)] for snap in replicas])


def target_options(parser, when: str = "") -> None:
    """How a replication target is reached and its engine run: checkpoint send's, and run's."""
    parser.add_argument("--remote-ferry", metavar="PATH", help=f"{when}ferry on the target (default: this ferry's path)")
    parser.add_argument("--remote-state-dir", metavar="DIR", help=f"{when}the target's state directory")
    parser.add_argument("--remote-policy", metavar="FILE",
                        help=f"{when}the policy the target prunes its replicas by (default: its {DEFAULT_POLICY})")
    parser.add_argument("--link-timeout", type=positive("seconds"), default=30.0, metavar="S",
                        help=f"{when}a link that moves nothing for S seconds is taken as cut")
    ssh_options(parser, when)


def register(sub, common) -> None:
    group = sub.add_parser("checkpoint", help="scheduled checkpoints by a policy: take, prune, check")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    options = argparse.ArgumentParser(add_help=False, parents=[common])
    options.add_argument("--policy", type=Path, default=DEFAULT_POLICY,
                         help=f"the policy file (YAML; default {DEFAULT_POLICY})")
    options.add_argument("--now", type=utc_time, metavar="ISO-TIME", help="act as if it were this time (UTC)")

    run = actions.add_parser("run", parents=[options], help="take the checkpoints that are due, then prune")
    run.add_argument("--dry-run", action="store_true", help="print what would be taken and pruned, change nothing")
    run.add_argument("--replicate-to", metavar="HOST",
                     help="then send each VM's checkpoints this ssh destination lacks (as checkpoint send)")
    target_options(run, "with --replicate-to: ")
    run.set_defaults(func=cmd_run, render=_render_run)

    check = actions.add_parser("check", parents=[options],
                               help="is each VM's newest checkpoint fresh? (exit 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN)")
    check.add_argument("--prometheus", type=Path, metavar="FILE",
                       help="also write the readings for node_exporter's textfile collector")
    check.set_defaults(func=cmd_check, render=_render_check)

    send = actions.add_parser("send", parents=[common],
                              help="send the checkpoints another host lacks of a VM (its replicas there)")
    send.add_argument("name")
    send.add_argument("id", nargs="?", help="send up to this checkpoint (default: the VM's newest snapshot)")
    send.add_argument("--to", required=True, metavar="HOST", help="the ssh destination ([user@]host, or a Host alias)")
    send.add_argument("--bandwidth", metavar="RATE", help="cap, bytes/s with K/M/G (default: no cap)")
    target_options(send)
    send.set_defaults(func=cmd_send, render=_render_send)

    receive = actions.add_parser("receive", parents=[common],
                                 help="the target's end of checkpoint send (run by it through ssh)")
    receive.add_argument("--stdio", action="store_true", required=True,
                         help="speak the replication protocol on stdin and stdout")
    receive.add_argument("--policy", type=Path, default=DEFAULT_POLICY,
                         help=f"prune the replicas by this policy (default {DEFAULT_POLICY}; none there: no prune)")
    receive.add_argument("--link-timeout", type=positive("seconds"), default=30.0, metavar="S",
                         help="a sender that moves nothing for S seconds is taken as gone")
    receive.set_defaults(func=cmd_receive, streams=True)

    replicas = actions.add_parser("replicas", parents=[common], help="list the replicas other hosts sent here")
    replicas.add_argument("name", nargs="?")
    replicas.set_defaults(func=cmd_replicas, render=_render_replicas)
