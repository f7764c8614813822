"""The ioctl table and struct sizes agree with the kernel's own header."""

import ctypes
import shutil
import subprocess

import pytest

from ferry.kvm import abi

STRUCTS = {
    "Regs": "struct kvm_regs", "Sregs": "struct kvm_sregs", "Fpu": "struct kvm_fpu",
    "LapicState": "struct kvm_lapic_state", "Irqchip": "struct kvm_irqchip",
    "PitState2": "struct kvm_pit_state2", "PitConfig": "struct kvm_pit_config",
    "ClockData": "struct kvm_clock_data", "VcpuEvents": "struct kvm_vcpu_events",
    "DebugRegs": "struct kvm_debugregs", "Xsave": "struct kvm_xsave", "Xcrs": "struct kvm_xcrs",
    "UserspaceMemoryRegion": "struct kvm_userspace_memory_region",
    "DirtyLog": "struct kvm_dirty_log", "IrqLevel": "struct kvm_irq_level",
    "CpuidEntry": "struct kvm_cpuid_entry2", "MsrEntry": "struct kvm_msr_entry",
    "EnableCap": "struct kvm_enable_cap",
}


@pytest.fixture(scope="module")
def header_values(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to read linux/kvm.h")
    lines = [f'printf("{name} %lu\\n", (unsigned long){name});' for name in abi.IOCTLS]
    lines += [f'printf("sizeof:{py} %zu\\n", sizeof({c}));' for py, c in STRUCTS.items()]
    lines.append('printf("offsetof:Run.exit %zu\\n", offsetof(struct kvm_run, io));')
    source = ("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\n"
              "int main(void){" + "\n".join(lines) + "return 0;}\n")
    folder = tmp_path_factory.mktemp("abi")
    (folder / "abi.c").write_text(source)
    subprocess.run(["gcc", "-o", str(folder / "abi"), str(folder / "abi.c")], check=True)
    output = subprocess.run([str(folder / "abi")], check=True, capture_output=True, text=True).stdout
    return dict(line.rsplit(" ", 1) for line in output.splitlines())


@pytest.mark.parametrize("name", sorted(abi.IOCTLS))
def test_ioctl_number_matches_header(header_values, name):
    assert abi.IOCTLS[name] == int(header_values[name]), name


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_size_matches_header(header_values, name):
    assert ctypes.sizeof(getattr(abi, name)) == int(header_values[f"sizeof:{name}"])


def test_run_exit_union_offset(header_values):
    assert abi.Run.exit.offset == int(header_values["offsetof:Run.exit"])
