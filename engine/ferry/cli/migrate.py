"""``ferry migrate`` and ``ferry receive``."""

from __future__ import annotations

import sys
from pathlib import Path

from ..migration.transport import TlsFiles
from ..host import migrate
from ..host.api import Host
from .options import positive, ssh_of, ssh_options


def _tls(args) -> TlsFiles:
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)


def cmd_migrate(args):
    if args.json:
        progress = migrate.json_progress
    elif sys.stderr.isatty():
        progress = migrate.render_progress
    else:
        progress = lambda values: None  # noqa: E731
    report = migrate.migrate(Host(args.state_dir), args.name, args.to, args.token_file, args.mode,
                             args.max_downtime, args.timeout, args.bandwidth, args.transport, _tls(args),
                             ssh_of(args),
                             progress, args.link_timeout, args.resolve)
    if args.resolve:
        return report
    if args.plot:
        from ..migration.plot import plot_report
        report["plot"] = str(plot_report(report, args.plot))
    return report


def _render_report(report: dict) -> None:
    if report.get("resolved"):
        print(f"{report['name']}: the migration to {report['to']} was {report['outcome']}")
        return
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(f"{report['name']}: {report['mode']} migration to {report['to']} {report['outcome']} in "
          f"{report['total_ms']:.0f} ms, downtime {report['downtime_ms']:.1f} ms, "
          f"{len(report['rounds'])} rounds, {report['bytes_on_wire'] / 2**20:.1f} MiB on the wire"
          + (f", throttle {report['throttle']:.0%}" if report["throttle"] else ""))


def cmd_receive(args):
    return migrate.receive(Host(args.state_dir), args.name, args.listen, args.token_file, args.timeout,
                           _tls(args), args.detach, args.link_timeout)


def _render_arrival(result: dict) -> None:
    if "outcome" in result:
        print(f"{result['name']}: arrived, {result['state']}")
    else:
        print(f"{result['name']}: waiting on port {result['port']} (receiver pid {result['pid']})")


def _link_options(parser) -> None:
    parser.add_argument("--link-timeout", type=positive("seconds"), default=30.0, metavar="S",
                        help="a link that moves nothing for S seconds is taken as cut")
    _tls_options(parser)


def _tls_options(parser) -> None:
    parser.add_argument("--tls-cert", type=Path, help="certificate (PEM) for --transport tls")
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate the peer's certificate must chain to")


def register(sub, common) -> None:

    parser = sub.add_parser("migrate", parents=[common], help="move a VM to another host")
    parser.add_argument("name")
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the receiver ([IPV6]:PORT for IPv6)")
    parser.add_argument("--token-file", required=True, type=Path, help="the one-time token the receiver holds")
    parser.add_argument("--mode", choices=("live", "warm", "cold"), default="live",
                        help="live: copy while the guest runs (default); warm: pause, then copy; "
                             "cold: a stopped VM, only its definition moves")
    parser.add_argument("--max-downtime", type=positive("milliseconds"), default=300.0, metavar="MS",
                        help="the longest pause the guest may see (default 300); auto-converge slows "
                             "the guest until the rest fits")
    parser.add_argument("--timeout", type=positive("seconds"), default=3600.0, metavar="S",
                        help="give up after S seconds")
    parser.add_argument("--bandwidth", metavar="RATE", help="cap, bytes/s with K/M/G (default: no cap)")
    parser.add_argument("--transport", choices=("tcp", "tls", "ssh"), default="tcp",
                        help="tcp (default), tls (certificates), or ssh (a channel to the receiver's loopback)")
    parser.add_argument("--plot", type=Path, metavar="FILE", help="draw the rounds into a PNG")
    parser.add_argument("--resolve", action="store_true",
                        help="settle a migration left in doubt by asking the destination what happened")
    _link_options(parser)
    ssh_options(parser, "for --transport ssh: ")
    parser.set_defaults(func=cmd_migrate, render=_render_report)

    parser = sub.add_parser("receive", parents=[common], help="wait for a VM migrating to this host")
    parser.add_argument("name")
    parser.add_argument("--listen", required=True, metavar="ADDR:PORT", help="where to listen ([::]:PORT for all)")
    parser.add_argument("--token-file", required=True, type=Path, help="the one-time token (mode 0600)")
    parser.add_argument("--timeout", type=positive("seconds"), default=600.0, metavar="S", help="how long to wait")
    parser.add_argument("--detach", action="store_true", help="return once listening")
    _link_options(parser)
    parser.set_defaults(func=cmd_receive, render=_render_arrival)
