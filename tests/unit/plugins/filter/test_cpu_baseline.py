"""The ferry.hypervisor.cpu_baseline filter: the features all hosts offer, from host_info."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.hypervisor.plugins.filter.cpu_baseline import FilterModule

cpu_baseline = FilterModule().filters()["cpu_baseline"]


def host(*features):
    return {"host": {"cpu": {"features": list(features)}}}


def test_the_common_features_of_all_hosts_sorted():
    assert cpu_baseline([host("sse2", "avx2", "fpu"), host("fpu", "sse2"), host("sse2", "fpu", "avx512f")]) == [
        "fpu", "sse2"]


def test_host_facts_serve_as_well_as_module_results():
    assert cpu_baseline([host("fpu")["host"], host("fpu", "sse2")]) == ["fpu"]


@pytest.mark.parametrize("hosts, message", [
    ([], "cpu_baseline: expected a list of at least one host_info result"),
    ("h1", "cpu_baseline: expected a list of at least one host_info result"),
    ([host("fpu"), {"host": {"cpu": {"flags": ["fpu"]}}}], "cpu_baseline: host 2 has no cpu.features"),
    ([host("fpu"), "h2"], "cpu_baseline: host 2 has no cpu.features"),
])
def test_bad_input_is_one_line(hosts, message):
    with pytest.raises(AnsibleFilterError) as raised:
        cpu_baseline(hosts)
    assert str(raised.value).startswith(message)
