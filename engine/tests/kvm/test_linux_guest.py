"""Opt-in (FERRY_SLOW_TESTS=1): the Linux guest from Debian's packages.

On hosts whose KVM runs guest ring 0 emulated (see the platform notes) its kernel
runs slowly and cannot reach userspace, so these tests check what it does reach:
its banner, and that a kernel saved in the middle of booting carries on after a
restore in a new process. On a hardware-virtualized host the README's full check
boots it to its /init ticks.
"""

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kvm, pytest.mark.slow]
GUEST = Path(__file__).resolve().parents[2] / "guests" / "linux"
BANNER = rb"Linux version \d"


@pytest.fixture(scope="module")
def linux_guest():
    out = GUEST / "out"
    subprocess.run(["bash", str(GUEST / "build.sh"), str(out)], check=True, timeout=1800)
    return out


def define_linux(ferry, tmp_path, out, name="linux"):
    cmdline = (out / "cmdline").read_text().strip()
    return ferry.define(tmp_path, name=name, vcpus=1, memory=256, kernel=str(out / "vmlinux"),
                        initrd=str(out / "initrd.img"), cmdline=cmdline)


def test_linux_kernel_starts_and_prints_its_banner(ferry, tmp_path, linux_guest):
    define_linux(ferry, tmp_path, linux_guest)
    ferry.ok("start", "linux")
    ferry.wait_console("linux", BANNER, timeout=900)
    ferry.wait_console("linux", rb"Command line: .*console=ttyS0", timeout=300)
    # The kernel reads the e820 map and the ACPI tables the engine wrote.
    ferry.wait_console("linux", rb"BIOS-e820: \[mem 0x0000000000100000-0x000000000fffffff\] usable", timeout=300)
    ferry.wait_console("linux", rb"ACPI: RSDP 0x00000000000E0000", timeout=600)


def test_linux_kernel_saved_while_booting_carries_on_after_restore(ferry, tmp_path, linux_guest):
    define_linux(ferry, tmp_path, linux_guest)
    ferry.ok("start", "linux")
    ferry.wait_console("linux", BANNER, timeout=900)
    ferry.ok("snapshot", "create", "linux", "--snapshot", "booting", "--exit", timeout=600)
    ferry.wait_state("linux", "stopped", timeout=120)
    before = ferry.console("linux")
    ferry.ok("restore", "linux", "booting", timeout=600)
    after = ferry.wait_console("linux", re.escape(before[-40:]) + rb"(?:.*\n){5}", timeout=900)
    assert after.startswith(before)
    assert ferry.ok("status", "linux")["state"] == "running"
