"""What a placement decision needs to know about this host."""

from __future__ import annotations

import os


def meminfo_mib() -> dict[str, int]:
    """/proc/meminfo in MiB."""
    values = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) // 1024
    return values


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The first CPU's vendor, model name and feature flags, as Linux reports them."""
    fields = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor's block ends here
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return {"vendor": fields.get("vendor_id"), "model": fields.get("model name"),
            "flags": sorted(set(fields.get("flags", "").split()))}


def _kvm() -> tuple[dict, frozenset]:
    """KVM's kind, and the named CPU features it can give a guest (none without KVM)."""
    from ..kvm import abi, cpufeatures
    from ..kvm.fds import Kvm, KvmUnavailable  # here: every host command imports this module

    try:
        kvm = Kvm()
    except KvmUnavailable as err:
        return {"available": False, "error": str(err)}, frozenset()
    try:
        return ({"available": True, "flavour": kvm.flavour,
                 "hardware_virtualization": kvm.flavour in ("intel", "amd"),
                 "max_vcpus": kvm.check_extension(abi.CAP_MAX_VCPUS)},
                cpufeatures.features(kvm.supported_cpuid()))
    finally:
        kvm.close()


def guest_cpu(supported: frozenset, hidden: frozenset) -> dict:
    """What this host offers a VM's CPU: the features (those KVM supports, less the hidden ones)
    and whether the baseline model runs here."""
    from ..kvm.cpufeatures import BASELINE

    offered = supported - hidden
    return {"features": sorted(offered), "hidden": sorted(hidden),
            "baseline": BASELINE - {"hypervisor"} <= offered}


def host_info(host) -> dict:
    from .. import __version__
    from ..migration.protocol import VERSION  # what a migration between two hosts needs in common
    from ..store import drain, hostconfig
    memory = meminfo_mib()
    vms = [{key: vm[key] for key in ("name", "vcpus", "memory", "state", "tags")} for vm in host.list()]
    running = [vm for vm in vms if vm["state"] in ("running", "paused")]
    kvm, supported = _kvm()
    return {
        "hostname": os.uname().nodename,
        "engine": {"version": __version__, "protocol": VERSION},
        "kvm": kvm,
        "cpus": os.cpu_count(),
        "cpu": dict(cpu_model(), **guest_cpu(supported, hostconfig.load(host.root).cpu_hidden)),
        "memory_total_mib": memory["MemTotal"],
        "memory_free_mib": memory.get("MemAvailable", memory["MemFree"]),
        "state_dir": str(host.root),
        "vms": vms,
        "committed_vcpus": sum(vm["vcpus"] for vm in running),
        "committed_memory_mib": sum(vm["memory"] for vm in running),
        "drained": drain.read(host.root),
    }
