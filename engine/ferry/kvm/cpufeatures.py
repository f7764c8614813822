"""CPU features by name (Linux's /proc/cpuinfo names) and where CPUID keeps each.

A VM's CPU model is a set of these names: ``host`` (all that KVM can give a guest on
this host), ``baseline`` (x86-64-v2, which every 64-bit x86 server of the last decade
has), or an explicit list. ``mask`` turns a host's supported CPUID into exactly the
chosen set: in the feature registers below, every bit that is not a chosen feature is
cleared (named or not), so a guest sees nothing more than its model, whatever host it
runs on. Registers outside the table (topology, cache and XSAVE sizes, the brand) are
left as the host reports them.
"""

from __future__ import annotations

from . import abi

# (function, index, register) -> {bit: name}; index None for leaves without subleaves.
REGISTERS = {
    (0x1, None, "edx"): {
        0: "fpu", 1: "vme", 2: "de", 3: "pse", 4: "tsc", 5: "msr", 6: "pae", 7: "mce", 8: "cx8",
        9: "apic", 11: "sep", 12: "mtrr", 13: "pge", 14: "mca", 15: "cmov", 16: "pat", 17: "pse36",
        19: "clflush", 23: "mmx", 24: "fxsr", 25: "sse", 26: "sse2", 27: "ss", 28: "ht"},
    (0x1, None, "ecx"): {
        0: "pni", 1: "pclmulqdq", 3: "monitor", 9: "ssse3", 12: "fma", 13: "cx16", 17: "pcid",
        19: "sse4_1", 20: "sse4_2", 21: "x2apic", 22: "movbe", 23: "popcnt", 24: "tsc_deadline_timer",
        25: "aes", 26: "xsave", 28: "avx", 29: "f16c", 30: "rdrand", 31: "hypervisor"},
    (0x7, 0, "ebx"): {
        0: "fsgsbase", 1: "tsc_adjust", 3: "bmi1", 4: "hle", 5: "avx2", 7: "smep", 8: "bmi2", 9: "erms",
        10: "invpcid", 11: "rtm", 16: "avx512f", 17: "avx512dq", 18: "rdseed", 19: "adx", 20: "smap",
        21: "avx512ifma", 23: "clflushopt", 24: "clwb", 26: "avx512pf", 27: "avx512er", 28: "avx512cd",
        29: "sha_ni", 30: "avx512bw", 31: "avx512vl"},
    (0x7, 0, "ecx"): {
        1: "avx512vbmi", 2: "umip", 3: "pku", 6: "avx512_vbmi2", 8: "gfni", 9: "vaes", 10: "vpclmulqdq",
        11: "avx512_vnni", 12: "avx512_bitalg", 14: "avx512_vpopcntdq", 22: "rdpid"},
    (0x7, 0, "edx"): {
        2: "avx512_4vnniw", 3: "avx512_4fmaps", 4: "fsrm", 10: "md_clear", 14: "serialize",
        26: "spec_ctrl", 27: "intel_stibp", 29: "arch_capabilities", 31: "ssbd"},
    (0xD, 1, "eax"): {0: "xsaveopt", 1: "xsavec", 2: "xgetbv1", 3: "xsaves"},
    (0x80000001, None, "ecx"): {
        0: "lahf_lm", 5: "abm", 6: "sse4a", 7: "misalignsse", 8: "3dnowprefetch", 11: "xop",
        16: "fma4", 21: "tbm"},
    (0x80000001, None, "edx"): {11: "syscall", 20: "nx", 22: "mmxext", 26: "pdpe1gb", 27: "rdtscp", 29: "lm"},
}
KNOWN = frozenset(name for bits in REGISTERS.values() for name in bits.values())

# x86-64-v2, and what KVM gives every guest itself (the local APIC modes, the
# hypervisor bit), so a baseline guest runs on any host this engine supports.
BASELINE = frozenset("""
    fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2
    syscall nx lm pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm x2apic hypervisor
""".split())

# XSAVE state components (CPUID 0xD.0 EAX, the XCR0 bits) and the feature that owns each:
# a guest without AVX must not be told that XCR0 can enable the AVX state.
XSAVE_COMPONENTS = {2: "avx", 5: "avx512f", 6: "avx512f", 7: "avx512f"}

MODELS = ("host", "baseline")


def _matches(entry, function: int, index) -> bool:
    return entry.function == function and (index is None or entry.index == index)


def features(table) -> frozenset:
    """The named features a CPUID table (``struct kvm_cpuid2``) has."""
    found = set()
    for slot in range(table.nent):
        entry = table.entries[slot]
        for (function, index, register), bits in REGISTERS.items():
            if _matches(entry, function, index):
                value = getattr(entry, register)
                found.update(name for bit, name in bits.items() if value >> bit & 1)
    return frozenset(found)


class MissingFeatures(Exception):
    """The host cannot give a VM part of its CPU model."""


def chosen(model, offered: frozenset) -> frozenset:
    """The features of the CPU model ``model`` on a host that offers ``offered``."""
    wanted = offered if model == "host" else BASELINE if model == "baseline" else frozenset(model)
    missing = sorted(wanted - offered - {"hypervisor"})
    if missing:
        raise MissingFeatures(missing)
    return wanted


def presented(supported, model, keep: frozenset):
    """The CPUID table a VM of ``model`` sees, showing ``keep`` (its ``chosen`` features) of
    what KVM ``supported``: the host's table itself for ``host`` when nothing is hidden."""
    if model == "host" and keep == features(supported):
        return supported
    return mask(supported, keep)


def mask(table, keep: frozenset):
    """A copy of ``table`` showing exactly the features in ``keep`` (which it must have)."""
    copy = type(table)()
    copy.nent = table.nent
    for slot in range(table.nent):
        entry = abi.CpuidEntry.from_buffer_copy(table.entries[slot])
        for (function, index, register), bits in REGISTERS.items():
            if _matches(entry, function, index):
                value = getattr(entry, register)
                setattr(entry, register, value & sum(1 << bit for bit, name in bits.items() if name in keep))
        if entry.function == 0xD and entry.index == 0:
            entry.eax &= ~sum(1 << bit for bit, name in XSAVE_COMPONENTS.items() if name not in keep)
        copy.entries[slot] = entry
    return copy
