"""``ferry lab``: up, status, down and link for a multi-host lab."""

from __future__ import annotations

import argparse
import sys

from .lab import Lab

DEFAULT_DIR = "./lab"


def register(subparsers, common) -> None:
    lab = subparsers.add_parser("lab", help="several hypervisor hosts on this machine, reached over SSH",
                                description="Several hypervisor hosts on this machine (network "
                                            "namespaces on a bridge, each with its own sshd).")
    actions = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    up = leaf(actions, "up", "create hosts h1..hN and start their sshd", cmd_up)
    up.add_argument("--hosts", type=int, default=2, metavar="N", help="number of hosts (default 2)")

    leaf(actions, "status", "hosts, addresses, sshd and processes per host", cmd_status)
    leaf(actions, "down", "stop everything in the lab and remove it (safe to repeat)", cmd_down)

    link = leaf(actions, "link", "shape, cut or restore one host's link", cmd_link)
    link.add_argument("host", help="host name, e.g. h2")
    link.add_argument("--rate", help="bandwidth, e.g. 100mbit")
    link.add_argument("--delay", help="one-way delay, e.g. 20ms (needs the netem qdisc)")
    link.add_argument("--down", action="store_true", help="cut the link")
    link.add_argument("--up", action="store_true", help="restore a cut link")
    link.add_argument("--clear", action="store_true", help="remove rate and delay shaping")


def leaf(actions, name: str, text: str, handler) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=text)
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"lab directory (default {DEFAULT_DIR})")
    parser.set_defaults(func=handler)
    return parser


def cmd_up(args) -> dict:
    result = Lab(args.dir).up(args.hosts)
    for warning in result["warnings"]:
        print(f"ferry: warning: {warning}", file=sys.stderr)
    args.render = render_up
    return result


def cmd_status(args) -> dict:
    args.render = render_status
    return Lab(args.dir).status()


def cmd_down(args) -> dict:
    args.render = lambda result: print(result["message"])
    return Lab(args.dir).down()


def cmd_link(args) -> dict:
    args.render = render_link
    return Lab(args.dir).link(args.host, rate=args.rate, delay=args.delay,
                              down=args.down, up=args.up, clear=args.clear)


def render_up(result: dict) -> None:
    print(f"lab up in {result['dir']} ({result['seconds_to_up']} s): "
          f"{result['subnet_ipv4']} {result['subnet_ipv6']} on bridge {result['bridge']}")
    table(["HOST", "IPV4", "IPV6", "NAMESPACE"],
          [[h["name"], h["ipv4"], h["ipv6"], h["ns"]] for h in result["hosts"]])
    print()
    print(f"inventory:  {result['inventory']}")
    print(f"ssh config: {result['ssh_config']}")
    print("try:")
    for line in result["usage"]:
        print(f"  {line}")


def render_status(result: dict) -> None:
    print(f"lab {result['state']} in {result['dir']}: {result['subnet_ipv4']} {result['subnet_ipv6']} "
          f"bridge {result['bridge']} ({'present' if result['bridge_present'] else 'MISSING'})")
    rows = []
    for host in result["hosts"]:
        link = {True: "up", False: "DOWN", None: "MISSING"}[host["link_up"]]
        shaping = " ".join(part for part in (host["rate"], host["delay"]) if part) or "-"
        rows.append([host["name"], host["ipv4"], host["ipv6"],
                     "alive" if host["sshd_alive"] else "DEAD", link, shaping, str(len(host["processes"]))])
    table(["HOST", "IPV4", "IPV6", "SSHD", "LINK", "SHAPING", "PROCS"], rows)
    for host in result["hosts"]:
        for proc in host["processes"]:
            print(f"  {host['name']} {proc['pid']:>7} {proc['cmd'][:100]}")


def render_link(result: dict) -> None:
    shaping = " ".join(f"{key} {result[key]}" for key in ("rate", "delay") if result[key]) or "no shaping"
    print(f"{result['host']}: link {'up' if result['up'] else 'down'}, {shaping}")


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
