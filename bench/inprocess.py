"""Every part of the engine the benchmarks call from their own process, in one place.

The benchmarks drive Ferry through its command line. Only what the command line
cannot show is measured in-process: a vCPU's exit count and the bare KVM_RUN round
trip (bench/engine.py), and a restore from building the machine to its first
KVM_RUN, and a verify, without a Python start-up in front (bench/snapshot.py).
When the engine's internals move, this file is the one to follow them; the smoke
runs in the test suite fail when it has fallen behind.
"""

from __future__ import annotations

import time
from pathlib import Path

# Imported here, not when first used, so no timed span pays for an import.
from ferry.kvm import abi
from ferry.machine.vcpu import install_kick_handler as _install_kick_handler
from ferry.machine.vm import Machine, MachineSpec
from ferry.control import protocol as control
from ferry.store import snapshots
from ferry.vmprocess.process import spec_of
from ferry.snapshot import restore


def install_kick_handler() -> None:
    """The signal handler the engine's vCPU threads need, installed once per process."""
    _install_kick_handler()


def control_request(socket: Path, op: str) -> dict:
    """One request to a VM process's control socket (its status carries ``exits``)."""
    return control.request(socket, op, timeout=10)


# --- bench/engine.py: exits ---

def exit_machine(elf: Path, console):
    """A booted, not yet started, 1-vCPU 64 MiB machine that runs ``elf``."""
    machine = Machine(MachineSpec("bench-exits", 1, 64, elf), console)
    machine.boot()
    return machine


def kvm_run_call(machine) -> tuple[int, int]:
    """(vCPU 0's fd, the KVM_RUN request number): all a bare loop passes to ``ioctl``."""
    return machine.vcpus[0].fd.fd, abi.IOCTLS["KVM_RUN"]


def left_on_port_io(machine) -> str | None:
    """None if vCPU 0's last exit was port I/O, else what it was."""
    reason = machine.vcpus[0].fd.run_state.exit_reason
    return None if reason == abi.EXIT_IO else f"exit reason {reason}"


def exits(machine) -> int:
    """Exits vCPU 0 has taken in the engine's run loop."""
    return machine.vcpus[0].exits


# --- bench/snapshot.py: restore and verify ---

def restore_machine(folder: Path, console, lazy: bool):
    """A paused machine built from the snapshot in ``folder``, as the VM process builds it
    for ``ferry restore`` once the command has verified the memory (so no digests here)."""
    snapshot = snapshots.load(folder, verify_memory=False)
    state_dir = folder.parents[3]  # STATE_DIR/vms/NAME/snapshots/ID: its host's settings apply
    return restore.build(snapshot, console, spec_of(snapshot.definition, state_dir), lazy=lazy)


def verify_snapshot(folder: Path) -> None:
    """Every checksum of the snapshot, as ``ferry snapshot verify`` and ``ferry restore``
    check them (the reader, and the memory image's digests behind it)."""
    snapshots.load(folder, verify_memory=True)


def stamp_first_run(machine, stamps: list) -> None:
    """Note the moment any vCPU first calls KVM_RUN: each vCPU's ``run`` is wrapped on
    the instance, so the engine's code is not touched."""
    for vcpu in machine.vcpus:
        def run(original=vcpu.fd.run):
            if not stamps:
                stamps.append(time.perf_counter())
            return original()
        vcpu.fd.run = run
