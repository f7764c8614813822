"""Building a machine from saved state: the one way, for a restore and for an incoming migration.

Saved state is a definition's shape (``MachineSpec``), guest memory already
holding the guest's RAM, and the sections. The machine is the one ``Machine``
builds for a boot, so the same devices sit at the same addresses; the
sections then go in through the registry. An incoming migration builds the
machine while memory still arrives and applies the sections only once the
source has paused, so the two steps are apart: ``SavedMachine`` then ``load``.
"""

from __future__ import annotations

from .. import layout
from ..errors import FerryError
from ..memory import GuestMemory
from . import state
from .sections import REGISTRY
from .state import Section
from .vm import Machine, MachineSpec


class SavedMachine:
    """A machine around saved memory, waiting for its sections; ``close`` drops it."""

    def __init__(self, spec: MachineSpec, console, memory: GuestMemory):
        if memory.size != spec.memory_mib * layout.MIB:
            raise FerryError(f"memory: {memory.size} bytes of saved memory, the definition says "
                             f"{spec.memory_mib} MiB")
        self.machine = Machine(spec, console, memory=memory)

    def load(self, sections: list[Section]) -> Machine:
        """The machine, paused and holding ``sections``, ready to ``start``."""
        REGISTRY.apply(self.machine, sections)
        state.notify_clock_jump([vcpu.fd for vcpu in self.machine.vcpus])
        return self.machine

    def close(self) -> None:
        self.machine.close()


def build_from_saved(spec: MachineSpec, console, memory: GuestMemory, sections: list[Section]) -> Machine:
    """A paused machine of ``spec`` holding ``memory`` and ``sections``; nothing is left open if it fails."""
    try:
        saved = SavedMachine(spec, console, memory)
    except BaseException:
        memory.close()
        raise
    try:
        return saved.load(sections)
    except BaseException:
        saved.close()
        raise
