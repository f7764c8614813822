"""The machine: KVM VM, guest RAM, devices and vCPU threads, wired in one place.

``Machine`` builds the same machine for a fresh boot (``boot``) and for saved
state (``build.py`` loads the sections instead of booting, for a restore and
an incoming migration), so every path gets exactly the same devices at the
same addresses.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import layout
from ..boot import cpu, elf
from ..devices.acpi_pm import AcpiPm
from ..devices.bus import MmioBus, PortIoBus
from ..devices.i8042 import I8042
from ..devices.rtc import Rtc
from ..devices.serial import Serial
from ..errors import FerryError
from ..kvm import abi, cpufeatures
from ..kvm.fds import Kvm
from ..memory import GuestMemory
from .vcpu import THROTTLE_SLICE, GuestEvent, RunState, Vcpu

TSS_ADDRESS = 0xFFFBD000  # three pages KVM needs on VMX hosts, inside the MMIO window
COM1, COM1_IRQ = 0x3F8, 4
I8042_PORT, RTC_PORT, ACPI_PM_PORT, SCI_IRQ = 0x60, 0x70, 0x600, 9
PAUSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class MachineSpec:
    name: str
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path | None = None
    cmdline: str = ""
    cpu: str | tuple = "host"           # the CPU model: host, baseline or feature names
    cpu_hidden: frozenset = frozenset()  # features the host never offers (its host.yaml)


def missing_features(names) -> str:
    shown = " ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"cpu: this host does not offer {shown}, which the VM's CPU model has"


@dataclass
class Event:
    kind: GuestEvent
    message: str
    by_host: bool = False  # host-side stops stay out of the guest's console


# The devices every machine has; each saves its state as the section its class names.
DEVICE_CLASSES = (Serial, I8042, Rtc, AcpiPm)


@dataclass
class Devices:
    serial: Serial
    i8042: I8042
    rtc: Rtc
    acpi_pm: AcpiPm
    all: list = field(default_factory=list)


class Machine:
    def __init__(self, spec: MachineSpec, console, rtc: Rtc | None = None, kvm: Kvm | None = None,
                 memory: GuestMemory | None = None):
        self.spec = spec
        self.kvm = kvm or Kvm()
        self.events: queue.Queue[Event] = queue.Queue()
        self.vm = self.kvm.create_vm()
        self.vm.set_tss_addr(TSS_ADDRESS)
        # The irqchip and PIT must exist before any vCPU is created.
        self.vm.create_irqchip()
        self.vm.create_pit2()
        self.memory = memory or GuestMemory(spec.memory_mib * layout.MIB)
        self.register_memory()
        self.io_bus, self.mmio_bus = PortIoBus(), MmioBus()
        self.devices = self._build_devices(console, rtc)
        self._throttler: threading.Thread | None = None
        self.vcpus = [Vcpu(self.vm.create_vcpu(i), self.io_bus, self.mmio_bus, self._on_event)
                      for i in range(spec.vcpus)]
        try:
            self._set_cpuid()
        except BaseException:  # a CPU model this host cannot give: nothing stays open
            self._close_kvm()
            if memory is None:
                self.memory.close()  # memory handed in stays its owner's to close
            raise

    # --- wiring ---

    def register_memory(self, flags: int = 0) -> None:
        """(Re-)register every RAM slot; ``flags`` turns dirty logging on or off."""
        for slot, region in enumerate(self.memory.regions):
            self.vm.set_user_memory_region(slot, region.gpa, region.size,
                                           self.memory.host_address(region), flags)

    def _irq(self, line: int):
        return lambda level: self.vm.irq_line(line, level)

    def _build_devices(self, console, rtc: Rtc | None) -> Devices:
        serial = Serial(irq=self._irq(COM1_IRQ), output=console)
        i8042 = I8042(on_reset=lambda: self._on_event(GuestEvent.RESET, "guest reset through the i8042"))
        rtc = rtc or Rtc()
        acpi_pm = AcpiPm(sci=self._irq(SCI_IRQ),
                         on_poweroff=lambda: self._on_event(GuestEvent.POWEROFF, "guest powered off through ACPI"))
        self.io_bus.register(COM1, 8, serial)
        self.io_bus.register(I8042_PORT, 5, i8042)
        self.io_bus.register(RTC_PORT, 2, rtc)
        self.io_bus.register(ACPI_PM_PORT, 8, acpi_pm)
        return Devices(serial, i8042, rtc, acpi_pm, [serial, i8042, rtc, acpi_pm])

    def _set_cpuid(self) -> None:
        """Every vCPU's CPUID: exactly the definition's CPU model, refused if this host lacks
        part of it. ``self.cpuid`` keeps each table, for the vCPU sections of saved state."""
        supported = self.kvm.supported_cpuid()
        self.cpu_offered = cpufeatures.features(supported) - self.spec.cpu_hidden
        table = cpufeatures.presented(supported, self.spec.cpu, self.check_offered(self.spec.cpu))
        self.cpuid = [cpu.vcpu_cpuid(table, vcpu.index, len(self.vcpus)) for vcpu in self.vcpus]
        for vcpu, vcpu_table in zip(self.vcpus, self.cpuid):
            vcpu.fd.set_cpuid(vcpu_table)

    def check_offered(self, model) -> frozenset:
        """The features of ``model`` (a CPU model, or the features of a saved CPUID) if this
        host offers them all; FerryError in one line if not."""
        try:
            return cpufeatures.chosen(model, self.cpu_offered)
        except cpufeatures.MissingFeatures as err:
            raise FerryError(missing_features(err.args[0])) from None

    @property
    def cpu_features(self) -> list[str]:
        """The named features the guest sees."""
        return sorted(cpufeatures.features(self.cpuid[0]))

    # --- boot ---

    def boot(self) -> None:
        from ..boot.acpi import write_acpi_tables
        from ..boot.linux import is_linux

        cpu.write_boot_gdt(self.memory)
        cpu.write_identity_tables(self.memory)
        rsdp = write_acpi_tables(self.memory, len(self.vcpus))
        if is_linux(self.spec.kernel):
            self._boot_linux()
        else:
            self._boot_elf(rsdp)

    def _boot_linux(self) -> None:
        from ..boot.e820 import e820_map
        from ..boot.linux import load_linux

        entry = load_linux(self.memory, self.spec.kernel, self.spec.initrd, self.spec.cmdline,
                           e820_map(self.memory))
        # Linux wakes the other CPUs itself (INIT/SIPI), so only the BSP gets an entry state.
        self._enter(self.vcpus[0], entry.rip, rsi=entry.boot_params_addr)
        for vcpu in self.vcpus:
            self._init_lapic(vcpu)

    def _boot_elf(self, rsdp: int) -> None:
        if self.spec.initrd:
            raise FerryError(f"initrd: only Linux kernels take an initrd, {self.spec.kernel} is a plain ELF")
        image = elf.load_elf(self.memory, self.spec.kernel)
        info = elf.write_boot_info(self.memory, len(self.vcpus), self.spec.cmdline, rsdp)
        for vcpu in self.vcpus:
            stack_top = layout.AP_STACKS + (vcpu.index + 1) * layout.AP_STACK_SIZE
            self._enter(vcpu, image.entry, rdi=info, rsi=vcpu.index, rsp=stack_top)
            self._init_lapic(vcpu)
            vcpu.fd.set_mp_state(abi.MP_STATE_RUNNABLE)

    def _enter(self, vcpu: Vcpu, rip: int, rdi: int = 0, rsi: int = 0, rsp: int = 0) -> None:
        vcpu.fd.set_sregs(cpu.long_mode_sregs(vcpu.fd.get_sregs()))
        vcpu.fd.set_regs(abi.Regs(rip=rip, rdi=rdi, rsi=rsi, rsp=rsp, rflags=0x2))
        vcpu.fd.set_fpu(cpu.initial_fpu())
        vcpu.fd.set_msrs({abi.MSR_IA32_MISC_ENABLE: abi.MISC_ENABLE_FAST_STRING})

    def _init_lapic(self, vcpu: Vcpu) -> None:
        vcpu.fd.set_lapic(cpu.set_lapic_lints(vcpu.fd.get_lapic(), bootstrap=vcpu.index == 0))

    # --- running ---

    def start(self, paused: bool = False) -> None:
        for vcpu in self.vcpus:
            vcpu.start(paused=paused)

    def pause(self, timeout: float = PAUSE_TIMEOUT) -> None:
        self._request(RunState.PAUSED, (RunState.PAUSED, RunState.STOPPED), timeout)

    def resume(self) -> None:
        for vcpu in self.vcpus:
            vcpu.request(RunState.RUNNING)

    def stop(self, timeout: float = PAUSE_TIMEOUT) -> None:
        self._request(RunState.STOPPED, (RunState.STOPPED,), timeout)
        for vcpu in self.vcpus:
            vcpu.join(timeout)

    def _request(self, wanted: RunState, reached: tuple[RunState, ...], timeout: float) -> None:
        for vcpu in self.vcpus:
            vcpu.request(wanted)
        late = [v.index for v in self.vcpus if not v.wait_for(reached, timeout)]
        if late:
            raise FerryError(f"vCPUs {late} did not leave the guest within {timeout:.0f} s")

    @property
    def state(self) -> RunState:
        states = {vcpu.state for vcpu in self.vcpus}
        for state in (RunState.RUNNING, RunState.PAUSED, RunState.CREATED):
            if state in states:
                return state
        return RunState.STOPPED

    def set_throttle(self, share: float) -> None:
        """Keep vCPUs out of the guest ``share`` of the time (0 stops throttling)."""
        share = min(max(share, 0.0), 0.99)
        for vcpu in self.vcpus:
            vcpu.throttle = share
        if share and (self._throttler is None or not self._throttler.is_alive()):
            self._throttler = threading.Thread(target=self._throttle_loop, name="throttle", daemon=True)
            self._throttler.start()

    def _throttle_loop(self) -> None:
        while any(v.throttle for v in self.vcpus) and self.state is not RunState.STOPPED:
            time.sleep(THROTTLE_SLICE)
            for vcpu in self.vcpus:
                if vcpu.state is RunState.RUNNING:
                    vcpu.kick()

    def press_power_button(self) -> None:
        self.devices.acpi_pm.press_power_button()

    def _on_event(self, kind: GuestEvent, message: str) -> None:
        for vcpu in self.vcpus:
            vcpu.request(RunState.STOPPED)
        self.events.put(Event(kind, message))

    def close(self) -> None:
        self._close_kvm()
        self.memory.close()

    def _close_kvm(self) -> None:
        for vcpu in self.vcpus:
            vcpu.fd.close()
        self.vm.close()
