"""The one registry of the sections a machine's saved state is made of.

For every section (each vCPU's, KVM's in-kernel chips and clock, each device's)
the registry holds its name, its State type (whose ``VERSION`` is the version
this engine writes, and whose ``upgrade`` reads each older one), how it is
captured from a paused machine and how it is applied to a freshly built one.
Snapshots and migrations both save ``capture``, and both read back through
``check`` (the (name, version) pairs, before any byte is read), ``decode``
and ``apply``. The registry's order is the order of capture and of apply:
vCPUs first, then the in-kernel interrupt controllers and PIT (so LAPIC writes
do not disturb them), then the devices (so lines they re-assert land).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from ..errors import FerryError
from ..kvm import cpufeatures
from . import state
from .state import Section
from .vm import DEVICE_CLASSES

VCPU = "vcpu"
VCPU_NAME = re.compile(r"vcpu\.(0|[1-9][0-9]{0,5})")


class SectionError(FerryError):
    pass


@dataclass(frozen=True)
class SectionType:
    """One kind of section. ``capture(machine, name)`` returns its State;
    ``apply(machine, name, state)`` writes one back. A per-vCPU type (name ``vcpu``)
    stands for the sections ``vcpu.0`` to ``vcpu.N-1`` of a machine of N vCPUs."""

    name: str
    state: type
    capture: Callable
    apply: Callable

    @property
    def version(self) -> int:
        return self.state.VERSION

    def names(self, vcpus: int) -> list[str]:
        return [f"{VCPU}.{index}" for index in range(vcpus)] if self.name == VCPU else [self.name]


def _shown(value) -> str:
    """A name as it may be quoted in one line (it may come from a crafted file)."""
    if isinstance(value, str) and value.isprintable() and 0 < len(value) <= 64:
        return value
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Registry:
    def __init__(self, types: Iterable[SectionType]):
        self.types = tuple(types)
        self.by_name = {kind.name: kind for kind in self.types}

    def names(self, vcpus: int) -> list[str]:
        """Every section a machine of ``vcpus`` vCPUs has, in capture order."""
        return [name for kind in self.types for name in kind.names(vcpus)]

    def type_of(self, name: str, vcpus: int) -> SectionType:
        vcpu = VCPU_NAME.fullmatch(name) if isinstance(name, str) else None
        if vcpu and VCPU in self.by_name:
            if int(vcpu.group(1)) >= vcpus:
                raise SectionError(f"section {name}: the machine has {vcpus} vCPUs ({self._vcpu_range(vcpus)})")
            return self.by_name[VCPU]
        if not isinstance(name, str) or name == VCPU or name not in self.by_name:
            raise SectionError(f"section {_shown(name)}: unknown to this engine")
        return self.by_name[name]

    def check(self, pairs: Iterable[tuple[str, int]], vcpus: int) -> None:
        """Refuse, in one line naming the section, a set of (name, version) that is not
        exactly this machine's sections in versions this engine reads."""
        seen = set()
        for name, version in pairs:
            kind = self.type_of(name, vcpus)
            if name in seen:
                raise SectionError(f"section {name}: appears twice")
            seen.add(name)
            whole = type(version) is int  # not a bool, not a float
            if not whole or not 1 <= version <= kind.version:
                newer = whole and version > kind.version
                shown = version if whole else repr(version)[:40]
                raise SectionError(f"section {name}: version {shown} is "
                                   f"{'newer than' if newer else 'not'} what this engine reads "
                                   f"(versions {_versions(kind.version)})")
        missing = [name for name in self.names(vcpus) if name not in seen]
        if missing:
            raise SectionError(f"section {missing[0]}: missing (a machine of {vcpus} vCPUs has "
                               f"{self._summary(vcpus)})")

    def decode(self, section: Section, vcpus: int):
        """The section's State, upgraded from an older version; raises on anything malformed."""
        kind = self.type_of(section.name, vcpus)
        return kind.state.from_bytes(section.data, section.version, section.name)

    def capture(self, machine) -> list[Section]:
        """All sections of a paused machine."""
        return [Section(name, kind.version, kind.capture(machine, name).to_bytes())
                for kind in self.types for name in kind.names(len(machine.vcpus))]

    def apply(self, machine, sections: list[Section]) -> None:
        """Write ``sections`` into a freshly built machine: all checked and decoded before any is
        applied. A list as it arrived, so that a name sent twice is refused, not overwritten."""
        vcpus = len(machine.vcpus)
        self.check([(section.name, section.version) for section in sections], vcpus)
        states = {section.name: self.decode(section, vcpus) for section in sections}
        for kind in self.types:
            for name in kind.names(vcpus):
                kind.apply(machine, name, states[name])

    def _vcpu_range(self, vcpus: int) -> str:
        return f"{VCPU}.0 to {VCPU}.{vcpus - 1}" if vcpus > 1 else f"{VCPU}.0" if vcpus else "none"

    def _summary(self, vcpus: int) -> str:
        others = [kind.name for kind in self.types if kind.name != VCPU]
        return ", ".join(([self._vcpu_range(vcpus)] if VCPU in self.by_name else []) + others)


def _versions(newest: int) -> str:
    return "1" if newest == 1 else f"1 to {newest}"


# --- how each section is captured and applied ---

def _vcpu(machine, name: str):
    return machine.vcpus[int(name.split(".")[1])]


def _capture_vcpu(machine, name: str) -> state.VcpuState:
    vcpu = _vcpu(machine, name)
    return state.capture_vcpu(vcpu.fd, machine.kvm.msr_index_list(), machine.cpuid[vcpu.index])


def _apply_vcpu(machine, name: str, values: state.VcpuState) -> None:
    """The vCPU's saved state, its CPUID among it: refused, before anything is written, when
    this host does not offer every feature the guest saw where it was saved."""
    vcpu = _vcpu(machine, name)
    if values.cpuid is not None:
        machine.check_offered(cpufeatures.features(values.cpuid))
    state.apply_vcpu(vcpu.fd, values, name)
    if values.cpuid is not None:
        machine.cpuid[vcpu.index] = values.cpuid


def _capture_irqchip(machine, name: str) -> state.IrqchipState:
    return state.IrqchipState(machine.vm.get_irqchip(state.IRQCHIPS[name]))


def _apply_irqchip(machine, name: str, chip: state.IrqchipState) -> None:
    machine.vm.set_irqchip(chip.value)


def _device(machine, name: str):
    for device in machine.devices.all:
        if device.name == name:
            return device
    raise SectionError(f"section {name}: this machine has no such device")


DEVICE_STATES = {device.NAME: device.STATE for device in DEVICE_CLASSES}

REGISTRY = Registry([
    SectionType(VCPU, state.VcpuState, _capture_vcpu, _apply_vcpu),
    *(SectionType(name, state.IrqchipState, _capture_irqchip, _apply_irqchip) for name in state.IRQCHIPS),
    SectionType("pit", state.PitState, lambda machine, name: state.PitState(machine.vm.get_pit2()),
                lambda machine, name, pit: machine.vm.set_pit2(pit.value)),
    SectionType("clock", state.ClockState, lambda machine, name: state.ClockState(machine.vm.get_clock()),
                lambda machine, name, clock: state.set_clock(machine.vm, clock)),
    *(SectionType(name, kind, lambda machine, name: _device(machine, name).save(),
                  lambda machine, name, saved: _device(machine, name).load(saved))
      for name, kind in DEVICE_STATES.items()),
])
