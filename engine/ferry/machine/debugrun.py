"""Run a kernel in the foreground with COM1 on stdout: for guest and engine development.

    python -m ferry.machine.debugrun KERNEL [--memory MiB] [--vcpus N] [--cmdline S] [--seconds S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .vcpu import install_kick_handler
from .vm import Machine, MachineSpec


class _Stdout:
    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def flush(self) -> None:
        sys.stdout.buffer.flush()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry.machine.debugrun")
    parser.add_argument("kernel", type=Path)
    parser.add_argument("--memory", type=int, default=64, help="MiB")
    parser.add_argument("--vcpus", type=int, default=1)
    parser.add_argument("--cmdline", default="")
    parser.add_argument("--initrd", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    install_kick_handler()
    machine = Machine(MachineSpec("debug", args.vcpus, args.memory, args.kernel, args.initrd,
                                  args.cmdline), _Stdout())
    machine.boot()
    machine.start()
    try:
        event = machine.events.get(timeout=args.seconds)
        print(f"\n[debugrun] {event.kind.value}: {event.message}")
    except Exception:
        print(f"\n[debugrun] still running after {args.seconds} s; exits handled: "
              f"{[v.exits for v in machine.vcpus]}")
    machine.stop()
    machine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
