"""``ferry`` subcommands for one host's VMs (define, start, stop, status, ...)."""

from __future__ import annotations

import json
import os
import re
import sys
import time

from ..errors import NotFound
from ..store import definition as defn
from ..host.api import START_TIMEOUT, STOP_TIMEOUT, Host
from .table import print_table

DETACH_KEY = b"\x1d"  # Ctrl-]
BARE_NEWLINE = re.compile(rb"(?<!\r)\n")


def _host(args) -> Host:
    return Host(args.state_dir)


def _render_vm(vm: dict) -> None:
    line = f"{vm['name']}: {vm['state']} ({vm['vcpus']} vCPU, {vm['memory']} MiB)"
    if vm.get("forced"):
        line += " - powered off: the guest ignored the power button"
    print(line + (f" - {vm['error']}" if vm.get("error") else ""))


LIST_TITLES = ("NAME", "STATE", "VCPUS", "MEMORY", "PID", "UPTIME", "ERROR")


def _render_list(vms: list) -> None:
    print_table(LIST_TITLES, [[vm["name"], vm["state"], vm["vcpus"], f"{vm['memory']} MiB", vm.get("pid") or "-",
                               _uptime(vm.get("started_at")), vm.get("error") or ""] for vm in vms])


def _uptime(started_at) -> str:
    if not started_at:
        return "-"
    seconds = int(max(time.time() - started_at, 0))
    days, rest = divmod(seconds, 86400)
    return (f"{days}d " if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))


def cmd_define(args):
    definition = defn.load_file(args.file)
    if args.check:
        # Only the definition's own rules: whether it fits the VM as it is now is for the caller.
        return definition.to_dict()
    return _host(args).define(definition.to_dict(), replace=args.replace)


def cmd_start(args):
    return _host(args).start(args.name, timeout=args.timeout, overcommit=args.overcommit)


def cmd_stop(args):
    return _host(args).stop(args.name, timeout=args.timeout, force=args.force)


def cmd_poweroff(args):
    return _host(args).poweroff(args.name, timeout=args.timeout)


def cmd_pause(args):
    return _host(args).pause(args.name)


def cmd_resume(args):
    return _host(args).resume(args.name)


def cmd_status(args):
    host = _host(args)
    return host.describe(host.existing(args.name))


def cmd_list(args):
    vms = Host(args.state_dir, must_exist=True).list()
    return [vm for vm in vms if not args.state or vm["state"] in args.state]


def cmd_undefine(args):
    return _host(args).undefine(args.name, with_snapshots=args.with_snapshots)


def cmd_migrated(args):
    host = Host(args.state_dir, must_exist=True)
    if args.action == "prune":
        return host.prune_migrated(args.older_than)
    return host.migrated()


def _render_migrated(entries: list) -> None:
    if not entries:
        print("no folders of migrated VMs")
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["left_at"]))
        print(f"{entry['name']:<20} left {when} to {entry['to'] or '?':<22} "
              f"{entry['bytes'] / 2**20:8.1f} MiB  {entry['folder']}")


def cmd_host_info(args):
    return _host(args).host_info()


def cmd_drain(args):
    return _host(args).drain(args.reason)


def cmd_undrain(args):
    return _host(args).undrain()


def _render_drain(result: dict) -> None:
    mark = result["drained"]
    if mark:
        print("drained: this host takes no arriving or new VM" + (f" ({mark['reason']})" if mark["reason"] else ""))
    else:
        print("undrained" if result["was_drained"] else "not drained; nothing to do")


def _render_host_info(info: dict) -> None:
    kvm = info["kvm"]
    print(f"{info['hostname']}: KVM {kvm.get('flavour', 'unavailable')}, {info['cpus']} CPUs, "
          f"{info['memory_free_mib']}/{info['memory_total_mib']} MiB free"
          + (", DRAINED" + (f" ({info['drained']['reason']})" if info["drained"].get("reason") else "")
             if info.get("drained") else ""))
    _render_list(info["vms"])


def cmd_console(args):
    host = _host(args)
    vmdir = host.existing(args.name)
    # Under --json the console is data: JSON lines, never the raw bytes, never typed into.
    interactive = sys.stdin.isatty() and not args.no_input and not args.json
    if not vmdir.console_log.exists():
        if not vmdir.process_alive():
            raise NotFound(f"{args.name}: no console output yet (the VM was never started)")
        vmdir.console_log.touch(mode=0o600)
    log = ConsoleLog(vmdir.console_log, None if args.all else args.lines)
    try:
        if interactive:
            _interactive(host, args.name, log, vmdir)
        else:
            _follow(log, vmdir, args.follow, JsonLines() if args.json else RawBytes())
    finally:
        log.close()
    return None


class ConsoleLog:
    """Reads a VM's console log from its last ``lines`` lines (all with None) on, and
    carries on into the new file when the VM process rotates it."""

    TAIL_BYTES = 256 * 1024

    def __init__(self, path, lines: int | None):
        self.path = path
        self.handle = open(path, "rb")
        if lines is not None:
            self._seek_to_last(lines)

    def _seek_to_last(self, lines: int) -> None:
        end = self.handle.seek(0, os.SEEK_END)
        start = max(end - self.TAIL_BYTES, 0)
        self.handle.seek(start)
        tail = self.handle.read()
        cut = len(tail)
        # As tail -n: a last line still being written counts as one of them.
        for _ in range(lines + 1 if tail.endswith(b"\n") else lines):
            cut = tail.rfind(b"\n", 0, cut)
            if cut < 0:
                break
        self.handle.seek(start + cut + 1 if cut >= 0 else start)

    def read(self) -> bytes:
        chunk = self.handle.read(65536)
        if not chunk and self._rotated():
            self.handle.close()
            self.handle = open(self.path, "rb")
            chunk = self.handle.read(65536)
        return chunk

    def _rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self.handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def close(self) -> None:
        self.handle.close()


class RawBytes:
    """The console as the guest wrote it."""

    def write(self, chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    def end(self) -> None:
        pass


class JsonLines:
    """The console as JSON lines: ``{"line": TEXT}`` for each line the guest ended, and at
    the end ``{"line": TEXT, "partial": true}`` for one it had not ended yet. Bytes that are
    not UTF-8 are kept as backslash escapes, a carriage return before the newline dropped."""

    def __init__(self):
        self.pending = b""

    def write(self, chunk: bytes) -> None:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            self._print({"line": self._text(line.removesuffix(b"\r"))})

    def end(self) -> None:
        if self.pending:
            self._print({"line": self._text(self.pending), "partial": True})
            self.pending = b""

    @staticmethod
    def _text(raw: bytes) -> str:
        return raw.decode("utf-8", errors="backslashreplace")

    @staticmethod
    def _print(record: dict) -> None:
        print(json.dumps(record, sort_keys=True), flush=True)


def _follow(log: ConsoleLog, vmdir, follow: bool, out) -> None:
    while True:
        chunk = log.read()
        if chunk:
            out.write(chunk)
        elif not follow or not vmdir.process_alive():
            out.end()
            return
        else:
            time.sleep(0.1)


def _interactive(host: Host, name: str, log: ConsoleLog, vmdir) -> None:
    import select
    import termios
    import tty

    print(f"connected to {name}'s console; Ctrl-] detaches", file=sys.stderr)
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        while vmdir.process_alive():
            chunk = log.read()
            if chunk:
                # Raw mode does not add the carriage return a guest's bare newline needs.
                os.write(1, BARE_NEWLINE.sub(b"\r\n", chunk))
            ready, _, _ = select.select([0], [], [], 0.1)
            if ready:
                typed = os.read(0, 1024)
                if DETACH_KEY in typed:
                    return
                host.console_input(name, typed)
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def register(sub, common) -> None:

    def command(name, func, help, render=_render_vm, with_name=True):
        parser = sub.add_parser(name, parents=[common], help=help, description=help)
        if with_name:
            parser.add_argument("name")
        parser.set_defaults(func=func, render=render)
        return parser

    define = command("define", cmd_define, "define a VM from a YAML file", with_name=False)
    define.add_argument("file", help="the definition (YAML or JSON); - reads it from standard input")
    define.add_argument("--replace", action="store_true", help="replace an existing definition")
    define.add_argument("--check", action="store_true",
                        help="only validate it: print the definition as it would be stored, write nothing")
    start = command("start", cmd_start, "start a VM and wait until it runs")
    start.add_argument("--timeout", type=float, default=START_TIMEOUT, metavar="S",
                       help=f"give up after S seconds (default {START_TIMEOUT:.0f})")
    start.add_argument("--overcommit", action="store_true",
                       help="start even if the VMs' memory exceeds this host's")
    stop = command("stop", cmd_stop, "press the power button and wait for the guest to power off")
    stop.add_argument("--timeout", type=float, default=STOP_TIMEOUT, metavar="S",
                      help=f"how long the guest may take, in seconds (default {STOP_TIMEOUT:.0f})")
    stop.add_argument("--force", action="store_true", help="power it off if it is still up after --timeout")
    poweroff = command("poweroff", cmd_poweroff, "power a VM off at once")
    poweroff.add_argument("--timeout", type=float, default=STOP_TIMEOUT, metavar="S",
                          help=f"how long its process may take to end, in seconds (default {STOP_TIMEOUT:.0f})")
    command("pause", cmd_pause, "pause a VM's vCPUs")
    command("resume", cmd_resume, "resume a paused VM")
    command("status", cmd_status, "show a VM's definition and state")
    listing = command("list", cmd_list, "list the VMs on this host", render=_render_list, with_name=False)
    listing.add_argument("--state", action="append", metavar="STATE",
                         choices=("running", "paused", "stopped", "crashed"),
                         help="only VMs in this state (repeatable)")
    undefine = command("undefine", cmd_undefine, "remove a stopped VM and its folder",
                       render=lambda r: print(f"{r['name']}: removed"))
    undefine.add_argument("--with-snapshots", action="store_true", help="delete its snapshots too")
    console = command("console", cmd_console, "show a VM's console (Ctrl-] detaches); with --json, JSON lines",
                      render=None)
    console.set_defaults(streams=True)
    console.add_argument("--follow", "-f", action="store_true", help="keep following while the VM runs")
    console.add_argument("--no-input", action="store_true", help="only show output")
    console.add_argument("--lines", "-n", type=int, default=20, metavar="N",
                         help="start with the last N lines (default 20)")
    console.add_argument("--all", action="store_true", help="start from the first line the log holds")
    migrated = command("migrated", cmd_migrated, "list (or prune) what is kept of VMs that migrated away",
                       render=_render_migrated, with_name=False)
    migrated.add_argument("action", nargs="?", choices=("list", "prune"), default="list")
    migrated.add_argument("--older-than", type=float, default=0.0, metavar="DAYS",
                          help="prune only folders left more than DAYS ago (default: all)")
    command("host-info", cmd_host_info, "KVM, CPUs, memory and VMs of this host",
            render=_render_host_info, with_name=False)
    drain = command("drain", cmd_drain, "mark this host drained: it takes no arriving or new VM",
                    render=_render_drain, with_name=False)
    drain.add_argument("--reason", default="", help="why (shown by host-info and in refusals)")
    command("undrain", cmd_undrain, "clear the drain mark", render=_render_drain, with_name=False)
