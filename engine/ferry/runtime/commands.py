"""``ferry`` subcommands for one host's VMs (define, start, stop, status, ...)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import definition as defn
from .host import START_TIMEOUT, STOP_TIMEOUT, Host

DETACH_KEY = b"\x1d"  # Ctrl-]


def _host(args) -> Host:
    return Host(args.state_dir)


def _render_vm(vm: dict) -> None:
    line = f"{vm['name']}: {vm['state']} ({vm['vcpus']} vCPU, {vm['memory']} MiB)"
    print(line + (f" - {vm['error']}" if vm.get("error") else ""))


def _render_list(vms: list) -> None:
    if not vms:
        print("no VMs defined")
    for vm in vms:
        _render_vm(vm)


def cmd_define(args):
    return _host(args).define(defn.load_file(args.file).to_dict(), replace=args.replace)


def cmd_start(args):
    return _host(args).start(args.name, timeout=args.timeout, overcommit=args.overcommit)


def cmd_stop(args):
    return _host(args).stop(args.name, timeout=args.timeout)


def cmd_poweroff(args):
    return _host(args).poweroff(args.name)


def cmd_pause(args):
    return _host(args).pause(args.name)


def cmd_resume(args):
    return _host(args).resume(args.name)


def cmd_status(args):
    host = _host(args)
    return host.describe(host.existing(args.name))


def cmd_list(args):
    return _host(args).list()


def cmd_undefine(args):
    return _host(args).undefine(args.name)


def cmd_host_info(args):
    return _host(args).host_info()


def _render_host_info(info: dict) -> None:
    kvm = info["kvm"]
    print(f"{info['hostname']}: KVM {kvm.get('flavour', 'unavailable')}, {info['cpus']} CPUs, "
          f"{info['memory_free_mib']}/{info['memory_total_mib']} MiB free")
    _render_list(info["vms"])


def cmd_console(args):
    host = _host(args)
    vmdir = host.existing(args.name)
    interactive = sys.stdin.isatty() and not args.no_input
    with open(vmdir.console_log, "rb") as log:
        if not interactive:
            _follow(log, vmdir, args.follow)
            return None
        _interactive(host, args.name, log, vmdir)
    return None


def _follow(log, vmdir, follow: bool) -> None:
    while True:
        chunk = log.read(65536)
        if chunk:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        elif not follow or not vmdir.process_alive():
            return
        else:
            time.sleep(0.1)


def _interactive(host: Host, name: str, log, vmdir) -> None:
    import select
    import termios
    import tty

    print(f"connected to {name}'s console; Ctrl-] detaches", file=sys.stderr)
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        while vmdir.process_alive():
            chunk = log.read(65536)
            if chunk:
                os.write(1, chunk)
            ready, _, _ = select.select([0], [], [], 0.1)
            if ready:
                typed = os.read(0, 1024)
                if DETACH_KEY in typed:
                    return
                host.console_input(name, typed)
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def register(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="state directory (default $FERRY_STATE_DIR or /var/lib/ferry)")

    def command(name, func, help, render=_render_vm, with_name=True):
        parser = sub.add_parser(name, parents=[common], help=help, description=help)
        if with_name:
            parser.add_argument("name")
        parser.set_defaults(func=func, render=render)
        return parser

    define = command("define", cmd_define, "define a VM from a YAML file", with_name=False)
    define.add_argument("file")
    define.add_argument("--replace", action="store_true", help="replace an existing definition")
    start = command("start", cmd_start, "start a VM and wait until it runs")
    start.add_argument("--timeout", type=float, default=START_TIMEOUT, metavar="S",
                       help=f"give up after S seconds (default {START_TIMEOUT:.0f})")
    start.add_argument("--overcommit", action="store_true",
                       help="start even if the VMs' memory exceeds this host's")
    command("stop", cmd_stop, "press the power button; power off after --timeout").add_argument(
        "--timeout", type=float, default=STOP_TIMEOUT)
    command("poweroff", cmd_poweroff, "power a VM off at once")
    command("pause", cmd_pause, "pause a VM's vCPUs")
    command("resume", cmd_resume, "resume a paused VM")
    command("status", cmd_status, "show a VM's definition and state")
    command("list", cmd_list, "list the VMs on this host", render=_render_list, with_name=False)
    command("undefine", cmd_undefine, "remove a stopped VM and its folder",
            render=lambda r: print(f"{r['name']}: removed"))
    console = command("console", cmd_console, "show a VM's console (Ctrl-] detaches)", render=None)
    console.add_argument("--follow", "-f", action="store_true", help="keep following while the VM runs")
    console.add_argument("--no-input", action="store_true", help="only show output")
    command("host-info", cmd_host_info, "KVM, CPUs, memory and VMs of this host",
            render=_render_host_info, with_name=False)
