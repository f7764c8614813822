"""The section registry: what a machine's saved state is made of, checked, decoded and applied."""

import ctypes
import io
import json
import os
from dataclasses import dataclass
from typing import ClassVar

import pytest

from ferry.devices.acpi_pm import AcpiPm
from ferry.devices.base import DeviceState
from ferry.devices.i8042 import I8042
from ferry.devices.rtc import Rtc
from ferry.devices.serial import Serial
from ferry.errors import FerryError
from ferry.kvm import abi, cpufeatures
from ferry.machine import state
from ferry.machine.sections import REGISTRY, Registry, SectionType
from ferry.machine.state import Section
from ferry.machine.vm import Machine

MSRS = [0x10, 0x174, 0xC0000080]
SCRATCH, RTC_INDEX, RTC_DATA, NVRAM_BYTE = 7, 0, 1, 0x40


class FakeVcpuFd:
    """A vCPU's KVM state as plain values: ``get_X`` reads what ``set_X`` last wrote."""

    def __init__(self, index: int):
        self.index = index
        self.held: dict = {}
        self.msrs: dict[int, int] = {}
        self.order: list[str] = []

    def __getattr__(self, attr):
        verb, _, key = attr.partition("_")
        if verb == "get":
            return lambda: self.held[key]
        if verb == "set":
            return lambda value: (self.order.append(key), self.held.__setitem__(key, value))
        raise AttributeError(attr)

    def get_msr(self, index):
        return self.msrs.get(index)

    def set_msrs(self, values):
        self.order.append("msrs")
        self.msrs.update(values)
        return len(values)

    def kvmclock_ctrl(self):
        pass


class FakeVm:
    def __init__(self):
        self.chips = {chip: abi.Irqchip(chip_id=chip) for chip in state.IRQCHIPS.values()}
        self.pit, self.clock = abi.PitState2(), abi.ClockData()

    def get_irqchip(self, chip):
        return self.chips[chip]

    def set_irqchip(self, chip):
        self.chips[chip.chip_id] = chip

    def get_pit2(self):
        return self.pit

    def set_pit2(self, pit):
        self.pit = pit

    def get_clock(self):
        return self.clock

    def set_clock(self, clock):
        self.clock = clock


@dataclass
class FakeVcpu:
    index: int
    fd: FakeVcpuFd


class FakeKvm:
    def msr_index_list(self):
        return MSRS


class FakeDevices:
    """The machine's real device models, wired to nothing."""

    def __init__(self):
        def nothing(*args):
            return None
        self.serial = Serial("serial.com1", irq=nothing, output=io.BytesIO())
        self.rtc = Rtc("rtc")
        self.all = [self.serial, I8042("i8042", on_reset=nothing), self.rtc,
                    AcpiPm("acpi.pm", sci=nothing, on_poweroff=nothing)]


def cpuid_table(*features: str):
    """A CPUID table with the named features set (and nothing else in the feature registers)."""
    table = abi.cpuid(len(cpufeatures.REGISTERS))()
    table.nent = len(cpufeatures.REGISTERS)
    for slot, ((function, index, register), bits) in enumerate(cpufeatures.REGISTERS.items()):
        entry = abi.CpuidEntry(function=function, index=index or 0)
        setattr(entry, register, sum(1 << bit for bit, name in bits.items() if name in features))
        table.entries[slot] = entry
    return table


HOST_FEATURES = ("fpu", "sse2", "avx", "avx2")


class FakeMachine:
    """What the registry touches of a machine, without KVM; the check of a saved CPUID
    against what the host offers is Machine's own."""

    check_offered = Machine.check_offered

    def __init__(self, vcpus: int, offered=HOST_FEATURES):
        self.kvm, self.vm, self.devices = FakeKvm(), FakeVm(), FakeDevices()
        self.vcpus = [FakeVcpu(index, FakeVcpuFd(index)) for index in range(vcpus)]
        self.cpu_offered = frozenset(offered)
        self.cpuid = [cpuid_table("fpu", "sse2") for _ in range(vcpus)]


def _random(cls):
    return cls.from_buffer_copy(os.urandom(ctypes.sizeof(cls)))


def running_machine(vcpus: int = 2) -> FakeMachine:
    """A machine whose every section holds something other than its defaults."""
    machine = FakeMachine(vcpus)
    for vcpu in machine.vcpus:
        for key, cls in {**state.VCPU_STRUCTS, "vcpu_events": abi.VcpuEvents}.items():
            vcpu.fd.held[key] = _random(cls)
        vcpu.fd.held["mp_state"] = vcpu.index + 1
        vcpu.fd.msrs = {0x10: 12345 + vcpu.index, 0xC0000080: 0x500}
    for chip in machine.vm.chips:
        machine.vm.chips[chip] = _random(abi.Irqchip)
        machine.vm.chips[chip].chip_id = chip
    machine.vm.pit, machine.vm.clock = _random(abi.PitState2), _random(abi.ClockData)
    machine.cpuid = [cpuid_table(*HOST_FEATURES) for _ in machine.vcpus]
    machine.devices.serial.io_write(SCRATCH, b"\x5a")
    machine.devices.rtc.io_write(RTC_INDEX, bytes([NVRAM_BYTE]))
    machine.devices.rtc.io_write(RTC_DATA, b"\x77")
    return machine


def pairs(sections):
    return [(s.name, s.version) for s in sections]


# --- what the registry holds ---

def test_the_registry_names_every_section_of_a_machine_in_the_saved_order():
    assert REGISTRY.names(2) == ["vcpu.0", "vcpu.1", "pic.master", "pic.slave", "ioapic", "pit", "clock",
                                 "serial.com1", "i8042", "rtc", "acpi.pm"]


def test_every_section_type_has_a_state_type_with_a_version():
    for kind in REGISTRY.types:
        assert kind.version >= 1 and kind.version == kind.state.VERSION, kind.name


# --- round trips ---

def test_every_registered_section_round_trips_through_capture_and_apply():
    source = running_machine()
    saved = REGISTRY.capture(source)
    assert [s.name for s in saved] == REGISTRY.names(2)
    target = FakeMachine(2)
    REGISTRY.apply(target, saved)
    again = {s.name: s for s in REGISTRY.capture(target)}
    for section in saved:
        if section.name != "clock":
            assert again[section.name] == section, section.name
    # The clock's value goes over; its realtime and host TSC belong to the old host.
    assert target.vm.clock.clock == source.vm.clock.clock and target.vm.clock.flags == 0
    assert target.devices.serial.io_read(SCRATCH, 1) == b"\x5a"
    target.devices.rtc.io_write(RTC_INDEX, bytes([NVRAM_BYTE]))
    assert target.devices.rtc.io_read(RTC_DATA, 1) == b"\x77"


def test_every_registered_section_decodes_to_the_bytes_it_came_from():
    for section in REGISTRY.capture(running_machine()):
        assert REGISTRY.decode(section, 2).to_bytes() == section.data, section.name


def test_a_vcpu_is_written_in_the_order_kvm_needs():
    target = FakeMachine(1)
    REGISTRY.apply(target, REGISTRY.capture(running_machine(1)))
    order = target.vcpus[0].fd.order
    assert order.index("sregs") < order.index("regs")
    assert order.index("lapic") < order.index("msrs") < order.index("vcpu_events")


# --- refusals: each is one line naming the section ---

def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def refused(pairs_, vcpus=2) -> str:
    with pytest.raises(FerryError) as error:
        REGISTRY.check(pairs_, vcpus)
    return one_line(error)


def full(vcpus=2, **versions):
    return [(name, versions.get(name.replace(".", "_"), 1)) for name in REGISTRY.names(vcpus)]


def test_the_sections_of_a_machine_pass():
    REGISTRY.check(full(), 2)


@pytest.mark.parametrize("name", ["gpu", "../../etc/passwd", "vcpu", "vcpu.", "vcpu.01", "vcpu.-1",
                                  "vcpu.x", "VCPU.0", "pic.master/..", "", "x" * 500, "serial.com1\n"])
def test_an_unknown_section_is_refused(name):
    message = refused(full() + [(name, 1)])
    assert "unknown to this engine" in message and message.startswith("section ")
    assert len(message) < 120


@pytest.mark.parametrize("name", [None, 7, ["vcpu.0"], {"a": 1}])
def test_a_name_that_is_not_text_is_refused(name):
    assert "unknown to this engine" in refused(full() + [(name, 1)])


def test_a_newer_version_is_refused_with_the_versions_allowed():
    assert refused(full(pit=2)) == "section pit: version 2 is newer than what this engine reads (versions 1)"
    assert "section vcpu.1: version 9 is newer" in refused(full(vcpu_1=9))
    assert "section serial.com1: version 2 is newer" in refused(full(serial_com1=2))


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0, None, 2**80])
def test_a_version_that_is_not_a_version_is_refused(version):
    message = refused(full(rtc=version))
    assert message.startswith("section rtc: version ") and "(versions 1)" in message


def test_a_missing_vcpu_section_is_refused():
    sections = [pair for pair in full() if pair[0] != "vcpu.1"]
    assert refused(sections).startswith("section vcpu.1: missing (a machine of 2 vCPUs has vcpu.0 to vcpu.1, pic.master")


def test_a_missing_device_section_is_refused():
    assert refused([pair for pair in full() if pair[0] != "acpi.pm"]).startswith("section acpi.pm: missing")


def test_a_section_for_a_vcpu_the_definition_lacks_is_refused():
    assert refused(full(3), vcpus=2) == "section vcpu.2: the machine has 2 vCPUs (vcpu.0 to vcpu.1)"
    assert refused([("vcpu.999999", 1)], vcpus=1) == "section vcpu.999999: the machine has 1 vCPUs (vcpu.0)"


def test_a_section_named_twice_is_refused():
    assert refused(full() + [("ioapic", 1)]) == "section ioapic: appears twice"


def test_nothing_is_applied_when_any_section_is_malformed():
    sections = [s if s.name != "acpi.pm" else Section("acpi.pm", 1, b'{"nope": 1}')
                for s in REGISTRY.capture(running_machine())]
    target = FakeMachine(2)
    with pytest.raises(ValueError, match="acpi.pm"):
        REGISTRY.apply(target, sections)
    assert all(not vcpu.fd.order for vcpu in target.vcpus)


@pytest.mark.parametrize("name, data", [
    ("vcpu.0", b"{}"), ("vcpu.0", b"[1]"), ("pit", b"\0" * 3), ("clock", b""), ("ioapic", b"\0" * 10**6)])
def test_malformed_vcpu_and_in_kernel_sections_are_refused_by_name(name, data):
    with pytest.raises(FerryError) as error:
        REGISTRY.decode(Section(name, 1, data), 1)
    assert one_line(error).startswith(f"section {name}: ")


def test_a_saved_cpuid_goes_with_the_vcpu_and_is_what_the_guest_sees_after():
    target = FakeMachine(1)
    REGISTRY.apply(target, REGISTRY.capture(running_machine(1)))
    assert cpufeatures.features(target.cpuid[0]) == frozenset(HOST_FEATURES)
    assert cpufeatures.features(target.vcpus[0].fd.held["cpuid"]) == frozenset(HOST_FEATURES)
    assert target.vcpus[0].fd.order[0] == "cpuid", "CPUID must precede the MSRs and XSAVE it governs"


def test_a_saved_cpuid_with_a_feature_this_host_lacks_is_refused_before_anything_is_written():
    target = FakeMachine(1, offered=("fpu", "sse2", "avx"))
    with pytest.raises(FerryError) as error:
        REGISTRY.apply(target, REGISTRY.capture(running_machine(1)))
    assert one_line(error) == "cpu: this host does not offer avx2, which the VM's CPU model has"
    assert target.vcpus[0].fd.order == []


def test_a_version_1_vcpu_section_keeps_the_cpuid_the_machine_was_built_with():
    saved = REGISTRY.capture(running_machine(1))
    values = json.loads(saved[0].data)
    del values["cpuid"]
    old = [Section("vcpu.0", 1, json.dumps(values).encode())] + saved[1:]
    target = FakeMachine(1)
    REGISTRY.apply(target, old)
    assert cpufeatures.features(target.cpuid[0]) == {"fpu", "sse2"} and "cpuid" not in target.vcpus[0].fd.held


@pytest.mark.parametrize("cpuid", [[], [[1, 0, 0, 0, 0, 0]], [[1, 0, 0, 0, 0, 0, 2**32]], "x", [[True] * 7]])
def test_a_malformed_saved_cpuid_is_refused_by_name(cpuid):
    values = json.loads(REGISTRY.capture(running_machine(1))[0].data)
    with pytest.raises(FerryError, match="section vcpu.0: (each )?cpuid"):
        REGISTRY.decode(Section("vcpu.0", 2, json.dumps(dict(values, cpuid=cpuid)).encode()), 1)


def test_the_vcpu_and_in_kernel_versions_are_read_back():
    section = REGISTRY.capture(running_machine(1))[0]
    with pytest.raises(ValueError, match="section vcpu.0: state version 3 is newer than this engine's 2"):
        REGISTRY.decode(Section("vcpu.0", 3, section.data), 1)
    with pytest.raises(ValueError, match="section pit: state version 5 is newer"):
        REGISTRY.decode(Section("pit", 5, bytes(ctypes.sizeof(abi.PitState2))), 1)


# --- upgrades ---

@dataclass
class LampState(DeviceState):
    """Version 1 had ``on`` (a bool); version 2 has ``brightness``."""
    VERSION: ClassVar[int] = 2
    brightness: int = 0

    @classmethod
    def upgrade(cls, version, values):
        return {"brightness": 100 if values.pop("on") else 0}


class LampPitState(state.PitState):
    """A PIT section of version 2, which appended four bytes that version 1 lacked."""
    VERSION = 2

    @classmethod
    def upgrade(cls, version, data):
        return data[:ctypes.sizeof(abi.PitState2)]


class Lamp:
    name = "lamp"

    def __init__(self):
        self.state = LampState()

    def save(self):
        return self.state

    def load(self, saved):
        self.state = saved


LAMP_REGISTRY = Registry([
    SectionType("lamp", LampState, lambda machine, name: machine.lamp.save(),
                lambda machine, name, saved: machine.lamp.load(saved)),
    SectionType("pit", LampPitState, lambda machine, name: LampPitState(machine.vm.get_pit2()),
                lambda machine, name, pit: machine.vm.set_pit2(pit.value)),
])


def test_an_upgrade_from_an_older_version_runs_on_decode_and_apply():
    machine = FakeMachine(0)
    machine.lamp = Lamp()
    old_pit = _random(abi.PitState2)
    LAMP_REGISTRY.apply(machine, [Section("lamp", 1, json.dumps({"on": True}).encode()),
                                  Section("pit", 1, bytes(old_pit) + b"\0" * 4)])
    assert machine.lamp.state == LampState(brightness=100)
    assert bytes(machine.vm.pit) == bytes(old_pit)
    assert [(s.name, s.version) for s in LAMP_REGISTRY.capture(machine)] == [("lamp", 2), ("pit", 2)]


class ClockFromThree(state.ClockState):
    """Version 3 of the clock section, readable from version 2 but not from 1."""
    VERSION = 3

    @classmethod
    def upgrade(cls, version, data):
        return data if version == 2 else super().upgrade(version, data)


def test_an_older_version_with_no_upgrade_is_refused():
    registry = Registry([SectionType("clock", ClockFromThree, None, None)])
    clock = bytes(abi.ClockData(clock=77))
    assert registry.decode(Section("clock", 2, clock), 0).value.clock == 77
    with pytest.raises(ValueError, match="ClockFromThree: no upgrade from version 1"):
        registry.decode(Section("clock", 1, clock), 0)
