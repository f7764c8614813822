"""CPU models: the guest sees exactly its definition's CPU (read back by the guest itself with
CPUID), a host that cannot give it refuses in one line, a host's hidden features are hidden,
and a snapshot keeps the CPU its guest saw, refused where the host does not offer it.

On kvm_pvm (software nested KVM) a ring-3 guest executes CPUID natively, whatever
KVM_SET_CPUID2 says (measured: leaves 1, 7, 0xD and 0x80000001): there the CPU a guest gets is
checked in what the engine gave KVM (``status``'s ``cpu_features``), and the guest's own
reading only where the host has hardware virtualization, on which KVM answers its CPUID."""

from __future__ import annotations

import re

import pytest

from ferry.kvm.cpufeatures import BASELINE, REGISTERS

pytestmark = pytest.mark.kvm

GUEST = "builtin:selfcheck"
CPUID_LINE = re.compile(rb"^CPUID((?: [0-9a-z.]+=[0-9a-f]{8})+)$", re.M)
# The guest's register names and where cpufeatures keeps each.
GUEST_REGISTERS = {"1.edx": (0x1, None, "edx"), "1.ecx": (0x1, None, "ecx"), "7.ebx": (0x7, 0, "ebx"),
                   "7.ecx": (0x7, 0, "ecx"), "7.edx": (0x7, 0, "edx"), "d.1.eax": (0xD, 1, "eax"),
                   "80000001.ecx": (0x80000001, None, "ecx"), "80000001.edx": (0x80000001, None, "edx")}
SOME = ["fpu", "pae", "sse", "sse2", "cx8", "lm", "avx", "avx2", "mmxext", "3dnowprefetch"]
# Features to hide or drop in a test, those this host offers first: any of them serves.
SPARE = ["gfni", "clwb", "mmxext", "3dnowprefetch", "sse4_2", "avx2", "umip"]


def controlled(ferry) -> set[str]:
    """The features whose CPUID bits this host's KVM really decides for a ring-3 guest."""
    if ferry.ok("host-info")["kvm"]["hardware_virtualization"]:
        return {name for bits in REGISTERS.values() for name in bits.values()}
    return set()


def seen_by_guest(ferry, name: str) -> set[str]:
    """The named features in the guest's own CPUID line (engine/docs/selfcheck-guest.md), of
    those the host's KVM controls."""
    ferry.wait_heartbeats(name, 1)  # the CPUID line comes whole before the first heartbeat
    line = CPUID_LINE.search(ferry.console(name))
    assert line, "the guest printed no CPUID line"
    values = dict(pair.split("=") for pair in line.group(1).decode().split())
    return {feature for register, where in GUEST_REGISTERS.items()
            for bit, feature in REGISTERS[where].items() if int(values[register], 16) >> bit & 1} & controlled(ferry)


def spare(features) -> str:
    return next(name for name in SPARE if name in features)


def start(ferry, tmp_path, name="vm1", **values):
    ferry.define(tmp_path, name=name, vcpus=1, memory=32, kernel=GUEST, cmdline="hb=200", **values)
    return ferry.run("--json", "start", name)


def offered(ferry) -> set[str]:
    return set(ferry.ok("host-info")["cpu"]["features"])


def test_host_gives_the_guest_all_the_host_offers(ferry, tmp_path):
    assert start(ferry, tmp_path).code == 0
    assert seen_by_guest(ferry, "vm1") == offered(ferry) & controlled(ferry)
    assert set(ferry.ok("status", "vm1")["cpu_features"]) == offered(ferry)


def test_baseline_gives_x86_64_v2_and_nothing_more_where_the_host_offers_it(ferry, tmp_path):
    result = start(ferry, tmp_path, cpu="baseline")
    lacking = sorted(BASELINE - offered(ferry) - {"hypervisor"})
    assert ferry.ok("host-info")["cpu"]["baseline"] is not lacking
    if lacking:  # kvm_pvm, for one, does not offer SSE3 and later in leaf 1
        assert result.code != 0 and f"cpu: this host does not offer {' '.join(lacking[:3])}" in result.err
        return
    assert result.code == 0, result.err
    assert seen_by_guest(ferry, "vm1") == set(BASELINE) & controlled(ferry)
    status = ferry.ok("status", "vm1")
    assert status["cpu"] == "baseline" and set(status["cpu_features"]) == set(BASELINE)


def test_a_list_gives_exactly_those_features(ferry, tmp_path):
    wanted = [name for name in SOME if name in offered(ferry)]
    assert start(ferry, tmp_path, cpu=wanted).code == 0
    assert seen_by_guest(ferry, "vm1") == (set(wanted) | {"hypervisor"}) & controlled(ferry)
    assert set(ferry.ok("status", "vm1")["cpu_features"]) == set(wanted) | {"hypervisor"}
    assert ferry.ok("status", "vm1")["cpu"] == sorted(wanted)


def test_a_feature_the_host_lacks_is_refused_in_one_line(ferry, tmp_path):
    lacking = sorted(set(n for bits in REGISTERS.values() for n in bits.values()) - offered(ferry))[0]
    result = start(ferry, tmp_path, cpu=["fpu", "sse2", lacking])
    assert result.code != 0 and "Traceback" not in result.err
    assert f"cpu: this host does not offer {lacking}, which the VM's CPU model has" in result.err
    assert ferry.ok("status", "vm1")["state"] != "running"


def test_hidden_features_are_neither_offered_nor_seen(ferry, tmp_path):
    hidden = sorted(offered(ferry) & set(SPARE))
    (ferry.state_dir / "host.yaml").write_text(f"cpu_hidden: [{', '.join(hidden)}]\n")
    info = ferry.ok("host-info")["cpu"]
    assert info["hidden"] == hidden and not set(hidden) & set(info["features"])
    assert start(ferry, tmp_path).code == 0
    assert not seen_by_guest(ferry, "vm1") & set(hidden)
    assert not set(ferry.ok("status", "vm1")["cpu_features"]) & set(hidden)


def test_a_snapshot_keeps_its_cpu_and_a_host_without_it_refuses_the_restore(ferry, tmp_path):
    assert start(ferry, tmp_path).code == 0
    ferry.wait_heartbeats("vm1", 2)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "s1")
    saw = set(ferry.ok("status", "vm1")["cpu_features"])
    feature = spare(saw)
    ferry.ok("stop", "vm1", "--force")
    # The host now hides a feature the snapshot's guest saw: the restore is refused, nothing runs.
    (ferry.state_dir / "host.yaml").write_text(f"cpu_hidden: [{feature}]\n")
    refused = ferry.run("restore", "vm1", "s1")
    assert refused.code != 0 and f"cpu: this host does not offer {feature}" in refused.err, refused.err
    assert ferry.ok("status", "vm1")["state"] == "stopped"
    # Where the host offers it again, the restored guest sees what it saw before.
    (ferry.state_dir / "host.yaml").write_text("cpu_hidden: []\n")
    ferry.ok("restore", "vm1", "s1")
    assert set(ferry.ok("status", "vm1")["cpu_features"]) == saw


@pytest.mark.parametrize("text, message", [
    ("cpu_hidden: [turbo]\n", "cpu_hidden: expected a list of CPU feature names"),
    ("cpu_hidden: avx2\n", "cpu_hidden: expected a list of CPU feature names"),
    ("color: red\n", "'color': unknown key, allowed keys are cpu_hidden"),
    ("[1, 2\n", "not valid YAML"),
    ("- a\n", "expected a mapping of cpu_hidden"),
])
def test_a_bad_host_yaml_is_one_line_naming_it(ferry, tmp_path, text, message):
    ferry.state_dir.mkdir(parents=True, exist_ok=True)
    (ferry.state_dir / "host.yaml").write_text(text)
    result = ferry.run("host-info")
    assert result.code != 0 and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1 and message in result.err and "host.yaml" in result.err
