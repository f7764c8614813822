"""The evacuation filters: they plan and apply through the planner, and bad input is one line
naming what is wrong and what is allowed."""

from __future__ import annotations

import copy
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.hypervisor.plugins.filter.evacuation import FilterModule

FILTERS = FilterModule().filters()


def host(**changes):
    return dict({"cpus": 4, "memory_total_mib": 8192, "memory_free_mib": 8192, "committed_memory_mib": 0,
                 "committed_vcpus": 0, "drained": None}, **changes)


def facts():
    web = {"name": "web", "state": "running", "memory": 1024, "vcpus": 1, "tags": ["group:front"]}
    return {"h1": {"host": host(), "vms": [web]}, "h2": {"host": host(), "vms": []}, "h3": None}


def test_a_plan_is_json_and_the_other_filters_take_it_back():
    plan = FILTERS["evacuation_plan"](facts(), ["h1"], {"parallel": 2})
    assert json.loads(json.dumps(plan)) == plan
    assert plan["options"]["parallel"] == 2 and plan["moves"][0]["to"] == "h2"
    assert FILTERS["evacuation_drift"](plan, facts()) == []
    assert FILTERS["evacuation_remaining"](plan, facts()) == plan["moves"]
    assert FILTERS["evacuation_table"](plan)[-1] == "1 move(s) in 1 wave(s) from h1; ok"
    assert FILTERS["return_plan"](plan, facts(), ["h1"])["left"] == [
        {"vm": "web", "host": "h1", "reason": "on its origin h1"}]


def test_options_default_when_not_given():
    assert FILTERS["evacuation_plan"](facts(), [])["options"]["memory_headroom_mib"] == 256


def changed_facts(path, value):
    """facts() with the value at ``path`` (keys and list positions) replaced."""
    result = facts()
    place = result
    for key in path[:-1]:
        place = place[key]
    place[path[-1]] = value
    return result


@pytest.mark.parametrize("facts_, drain, options, message", [
    (facts(), ["h1"], "fast", "evacuation_plan: options must be a dict, got str"),
    (facts(), ["h1"], {"paralel": 2}, "evacuation_plan: options: unknown option paralel; known: group_prefix, "
                                      "ignore_tag, memory_headroom_mib, parallel, per_group, per_host, pin_tag, vcpu_ratio"),
    (facts(), ["h1"], {"parallel": 0}, "evacuation_plan: options: parallel must be an integer of 1 or more, got 0"),
    (facts(), ["h1"], {"per_host": "1"}, "evacuation_plan: options: per_host must be an integer of 1 or more, got '1'"),
    (facts(), ["h1"], {"per_group": True}, "evacuation_plan: options: per_group must be an integer of 1 or more, got True"),
    (facts(), ["h1"], {"memory_headroom_mib": -1},
     "evacuation_plan: options: memory_headroom_mib must be an integer of 0 or more, got -1"),
    (facts(), ["h1"], {"vcpu_ratio": 0}, "evacuation_plan: options: vcpu_ratio must be a number above 0, got 0"),
    (facts(), ["h1"], {"group_prefix": ""}, "evacuation_plan: options: group_prefix must be a non-empty string, got ''"),
    ([], ["h1"], {}, "evacuation_plan: facts must be a dict by host, got list"),
    ({"h1": {"host": host()}}, ["h1"], {},
     "evacuation_plan: facts[h1] must be null or a dict with host (host_info) and vms (vm_info)"),
    (changed_facts(("h2", "host", "memory_free_mib"), None), ["h1"], {},
     "evacuation_plan: facts[h2].host.memory_free_mib must be an integer of 0 or more, got None"),
    (changed_facts(("h2", "host", "drained"), "yes"), ["h1"], {},
     "evacuation_plan: facts[h2].host.drained must be a dict or null, got 'yes'"),
    (changed_facts(("h2", "vms"), ["web"]), ["h1"], {},
     "evacuation_plan: facts[h2].vms: each VM must be a dict with a name and a state, got 'web'"),
    (changed_facts(("h1", "vms", 0, "memory"), 0), ["h1"], {},
     "evacuation_plan: facts[h1]: VM web: memory must be an integer of 1 or more, got 0"),
    (changed_facts(("h1", "vms", 0, "tags"), "group:db"), ["h1"], {},
     "evacuation_plan: facts[h1]: VM web: tags must be a list of strings, got 'group:db'"),
    (changed_facts(("h1", "vms", 0, "tags"), ["group:a", "group:b"]), ["h1"], {},
     "evacuation_plan: facts[h1]: VM web has 2 group tags (group:a, group:b); a VM is in one anti-affinity group"),
    (facts(), "h1", {}, "evacuation_plan: drain must be a list of inventory names, got 'h1'"),
    (facts(), ["h9"], {}, "evacuation_plan: drain: h9 has no entry in facts (give every hypervisor, null when not read)"),
])
def test_bad_input_to_the_plan_is_one_line(facts_, drain, options, message):
    with pytest.raises(AnsibleFilterError) as raised:
        FILTERS["evacuation_plan"](facts_, drain, options)
    assert str(raised.value) == message


def plan_with(**changes):
    plan = FILTERS["evacuation_plan"](facts(), ["h1"])
    plan.update(changes)
    return plan


@pytest.mark.parametrize("name", ["evacuation_drift", "evacuation_remaining", "return_plan"])
@pytest.mark.parametrize("plan, message", [
    ("plan.json", "expected an evacuation plan of version 1, got str"),
    ({"version": 2}, "expected an evacuation plan of version 1, got version 2"),
    (plan_with(moves=None), "the plan has no moves list"),
    (plan_with(waves="2"), "the plan has no waves count or no ok"),
    (plan_with(moves=[{"vm": "web"}]), "the plan's moves must each have vm, from, to, mode, memory_mib, vcpus, group, wave"),
    (plan_with(options={"parallel": -1}), "the plan's options: parallel must be an integer of 1 or more, got -1"),
])
def test_bad_plans_are_one_line(name, plan, message):
    with pytest.raises(AnsibleFilterError) as raised:
        FILTERS[name](copy.deepcopy(plan), facts())
    assert str(raised.value).startswith("%s: %s" % (name, message))


def test_the_filters_applying_a_plan_check_the_facts_too():
    with pytest.raises(AnsibleFilterError) as raised:
        FILTERS["evacuation_drift"](plan_with(), {"h1": "down"})
    assert str(raised.value) == (
        "evacuation_drift: facts[h1] must be null or a dict with host (host_info) and vms (vm_info)")


def test_the_table_checks_its_plan_and_return_plan_its_origins():
    with pytest.raises(AnsibleFilterError) as raised:
        FILTERS["evacuation_table"]({"version": 1})
    assert str(raised.value) == "evacuation_table: the plan has no drain list"
    with pytest.raises(AnsibleFilterError) as raised:
        FILTERS["return_plan"](plan_with(), facts(), "h1")
    assert str(raised.value) == "return_plan: origins must be a list of inventory names, got 'h1'"
