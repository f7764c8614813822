"""Restoring a checked snapshot (``reader.load``): nothing but the folder is needed.

The machine is built as for an incoming migration (``machine.build``), from
the snapshot's memory and sections.

Lazy (default): the memory file, or each chunk file at its offset, is mapped
copy-on-write, so the guest runs as soon as the device state is in and pages
load as it touches them. Eager (and a compressed image, or more chunk files
than a process may map): the used ranges are read into a fresh memfd first,
so the VM no longer depends on the files.
"""

from __future__ import annotations

from ..machine.build import build_from_saved
from ..machine.vm import Machine, MachineSpec
from ..memory import GuestMemory
from . import format as fmt
from . import reader


def _memory(snapshot: reader.Snapshot, lazy: bool, progress) -> GuestMemory:
    with reader.reopen_memory(snapshot) as image:
        if lazy and image.mappable:
            return image.map()
        memory = GuestMemory(snapshot.memory_size)
        try:
            image.load_into(memory, progress)
        except BaseException:
            memory.close()
            raise
        return memory


def build(snapshot: reader.Snapshot, console, spec: MachineSpec, lazy: bool = True, progress=None) -> Machine:
    """A paused machine holding the snapshot's state, ready to ``start``. ``spec`` must
    be the snapshot's own shape: each saved vCPU needs its vCPU, the memory its size.
    ``progress("load", done, total)`` hears an eager copy-in."""
    definition = snapshot.definition
    if (spec.vcpus, spec.memory_mib) != (definition.vcpus, definition.memory):
        raise fmt.SnapshotError(f"snapshot {snapshot.manifest['id']}: saved with {definition.vcpus} vCPUs and "
                                f"{definition.memory} MiB, cannot restore into {spec.vcpus} and {spec.memory_mib}")
    return build_from_saved(spec, console, _memory(snapshot, lazy, progress),
                            list(snapshot.sections.values()))
