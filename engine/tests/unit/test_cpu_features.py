"""CPU models without KVM: the feature table, masking a CPUID table to a model, the definition's
``cpu`` key and the host's ``host.yaml``."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ferry.errors import DefinitionError
from ferry.kvm import abi, cpufeatures
from ferry.kvm.cpufeatures import BASELINE, KNOWN, REGISTERS
from ferry.store import definition, hostconfig


def full_table(extra_leaf=True):
    """Every feature register with every bit set, plus a leaf the table does not name."""
    keys = list(REGISTERS) + ([(0x4, 0, "eax"), (0xD, 0, "eax")] if extra_leaf else [])
    table = abi.cpuid(len(keys))()
    table.nent = len(keys)
    for slot, (function, index, _) in enumerate(keys):
        table.entries[slot] = abi.CpuidEntry(function=function, index=index or 0, eax=0xFFFFFFFF,
                                             ebx=0xFFFFFFFF, ecx=0xFFFFFFFF, edx=0xFFFFFFFF)
    return table


def entry(table, function, index=0):
    return next(table.entries[s] for s in range(table.nent)
                if table.entries[s].function == function and table.entries[s].index == index)


def test_the_table_names_each_bit_once():
    names = [name for bits in REGISTERS.values() for name in bits.values()]
    assert len(names) == len(set(names)) and BASELINE <= KNOWN


@given(st.sets(st.sampled_from(sorted(KNOWN))))
def test_a_masked_table_shows_exactly_the_kept_features(keep):
    masked = cpufeatures.mask(full_table(), frozenset(keep))
    assert cpufeatures.features(masked) == keep


def test_masking_leaves_other_leaves_alone_and_drops_xsave_state_of_hidden_features():
    masked = cpufeatures.mask(full_table(), frozenset({"sse2", "fpu"}))
    assert entry(masked, 0x4).eax == 0xFFFFFFFF  # cache topology: not a feature register
    assert entry(masked, 0xD).eax & 0b11100100 == 0  # no AVX, no AVX-512 state components
    assert entry(cpufeatures.mask(full_table(), frozenset({"avx"})), 0xD).eax & 0b100


def test_a_model_needs_what_the_host_offers():
    offered = frozenset(BASELINE | {"avx2"})
    assert cpufeatures.chosen("host", offered) == offered
    assert cpufeatures.chosen("baseline", offered) == BASELINE
    assert cpufeatures.chosen(("avx2", "sse2"), offered) == {"avx2", "sse2"}
    with pytest.raises(cpufeatures.MissingFeatures) as missing:
        cpufeatures.chosen(("avx512f", "avx2", "sha_ni"), offered)
    assert missing.value.args[0] == ["avx512f", "sha_ni"]


VALID = {"name": "vm1", "vcpus": 1, "memory": 32, "kernel": "builtin:selfcheck"}


@pytest.mark.parametrize("cpu, stored", [(None, "host"), ("host", "host"), ("baseline", "baseline"),
                                         (["sse2", "avx2", "sse2"], ("avx2", "sse2"))])
def test_the_definition_takes_a_model_or_a_list(cpu, stored):
    values = dict(VALID, cpu=cpu) if cpu is not None else VALID
    parsed = definition.validate(values)
    assert parsed.cpu == stored
    assert definition.validate(parsed.to_dict()) == parsed  # the stored form reads back the same


@pytest.mark.parametrize("cpu, message", [
    ("turbo", "cpu: 'turbo' is not a CPU model; use host, baseline or a list of feature names"),
    ([], "cpu: expected host, baseline or a list of 1 to 256 feature names"),
    (["avx2", "../../etc"], "cpu: '../../etc' is not a CPU feature this engine knows"),
    ([1], "cpu: 1 is not a CPU feature this engine knows"),
    (["sse2"] * 300, "cpu: expected host, baseline or a list of 1 to 256 feature names"),
    ({"model": "host"}, "cpu: expected host, baseline or a list"),
])
def test_a_bad_cpu_is_one_line_naming_it(cpu, message):
    with pytest.raises(DefinitionError) as error:
        definition.validate(dict(VALID, cpu=cpu))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_format_1_definition_loads_as_host(tmp_path):
    path = tmp_path / "vm.yaml"
    path.write_text("format: 1\nname: vm1\nvcpus: 1\nmemory: 32\nkernel: builtin:selfcheck\n")
    assert definition.load_file(path).cpu == "host"
    assert f"format: {definition.FORMAT}" in definition.dump(definition.load_file(path))


def test_a_host_without_host_yaml_hides_nothing_and_with_one_hides_its_list(tmp_path):
    assert hostconfig.load(tmp_path).cpu_hidden == frozenset()
    (tmp_path / "host.yaml").write_text("cpu_hidden: [avx2, avx512f]\n")
    assert hostconfig.load(tmp_path).cpu_hidden == {"avx2", "avx512f"}
    (tmp_path / "host.yaml").write_text("")
    assert hostconfig.load(tmp_path).cpu_hidden == frozenset()


def test_an_oversized_host_yaml_is_refused(tmp_path):
    (tmp_path / "host.yaml").write_text("#" * (hostconfig.MAX_FILE + 1))
    with pytest.raises(hostconfig.HostConfigError, match="larger than 64 KiB"):
        hostconfig.load(tmp_path)
