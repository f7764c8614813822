"""The ferry.hypervisor.placement_plan filter: bad input is one line naming what is wrong."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.hypervisor.plugins.filter.placement import FilterModule

placement_plan = FilterModule().filters()["placement_plan"]


def test_the_filter_plans_this_host():
    result = placement_plan([], "h1", {"h2": [{"name": "web"}]}, {"h1": {"vms": [{"name": "web", "state": "running"}]}})
    assert result["moves"] == [{"name": "web", "to": "h2", "mode": "live"}]


@pytest.mark.parametrize("args, message", [
    (("web", "h1", {}, {}), "placement_plan: _input must be a list of VMs, got str"),
    (([{"vcpus": 1}], "h1", {}, {}), "placement_plan: _input: each VM must be a dict with a name"),
    (([], "h1", [], {}), "placement_plan: declared must be a dict by host, got list"),
    (([], "h1", {"h2": "web"}, {}), "placement_plan: declared[h2] must be a list of VMs, got str"),
    (([], "h1", {}, None), "placement_plan: seen must be a dict by host, got NoneType"),
])
def test_bad_input_names_what_is_wrong(args, message):
    with pytest.raises(AnsibleFilterError) as raised:
        placement_plan(*args)
    assert str(raised.value).startswith(message)
