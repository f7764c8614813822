"""Building a machine from a snapshot directory: nothing but the directory is needed.

Lazy (default): the memory file is mapped copy-on-write, so the guest runs
as soon as the device state is in and pages load as it touches them. Eager:
the used ranges are read into a fresh memfd first, so the VM no longer
depends on the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..machine import state
from ..machine.vm import DEVICE_STATES, Machine, MachineSpec
from ..memory import GuestMemory
from . import format as fmt
from . import compress, memio

VCPU_SECTION = re.compile(r"^vcpu\.\d+$")


def load(folder: Path, verify_memory: bool = True) -> tuple[dict, dict[str, state.Section]]:
    manifest = fmt.verify(folder) if verify_memory else fmt.read_manifest(folder)
    return manifest, fmt.read_sections(folder, manifest)


def _newest_version(name: str, vcpus: int) -> int:
    if VCPU_SECTION.match(name) and int(name.split(".")[1]) < vcpus:
        return state.VCPU_VERSION
    if name in state.VM_SECTIONS:
        return state.KVM_VM_VERSION
    if name in DEVICE_STATES:
        return DEVICE_STATES[name].VERSION
    raise fmt.SnapshotError(f"section {name}: unknown to this engine")


def check_sections(manifest: dict) -> None:
    """Refuse sections this engine does not know, or knows only in an older version."""
    vcpus = manifest["definition"]["vcpus"]
    for entry in manifest["sections"]:
        newest = _newest_version(entry["name"], vcpus)
        if entry["version"] > newest:
            raise fmt.SnapshotError(f"section {entry['name']}: version {entry['version']} is newer "
                                    f"than this engine's {newest}")


def _memory(folder: Path, manifest: dict, lazy: bool) -> GuestMemory:
    size = manifest["memory"]["size"]
    if manifest["memory"].get("compression") == "zstd":
        memory = GuestMemory(size)
        compress.load_into(memory.view, folder / manifest["memory"]["file"], size)
        return memory
    fd = os.open(folder / manifest["memory"]["file"], os.O_RDONLY | os.O_CLOEXEC)
    if lazy:
        return GuestMemory(size, fd=fd, private=True)
    try:
        memory = GuestMemory(size)
        for start, end in fmt.data_ranges(fd, size):
            memio.copy_into(memory.fd, fd, start, end)
        return memory
    finally:
        os.close(fd)


def build(folder: Path, console, spec: MachineSpec, lazy: bool = True,
          verify_memory: bool = True) -> tuple[Machine, dict]:
    """A paused machine holding the snapshot's state, ready to ``start``."""
    manifest, sections = load(folder, verify_memory)
    check_sections(manifest)
    machine = Machine(spec, console, memory=_memory(folder, manifest, lazy))
    try:
        state.apply(machine, sections)
    except BaseException:
        machine.close()
        raise
    return machine, manifest
