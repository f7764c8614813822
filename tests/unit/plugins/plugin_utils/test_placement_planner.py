"""The placement plan of playbooks/site.yml: moves, arrivals, holds and conflicts, and the
promise behind them: whatever the hosts declare, run, or fail to answer, following every
host's plan never leaves a VM running on two hosts."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from ansible_collections.ferry.hypervisor.plugins.plugin_utils.placement import plan

HOSTS = ("h1", "h2", "h3")


def seen(**hosts):
    """vm_info results: a host given as a dict of VM name -> state, or None (not read)."""
    return {host: None if vms is None else {"vms": [{"name": n, "state": s} for n, s in vms.items()]}
            for host, vms in hosts.items()}


def vm(name, state="running"):
    return {"name": name, "state": state}


def test_a_vm_declared_elsewhere_moves_live_there_and_arrives():
    declared = {"h1": [], "h2": [vm("web")]}
    observed = seen(h1={"web": "running"}, h2={})
    source, target = plan("h1", [], declared, observed), plan("h2", [vm("web")], declared, observed)
    assert source["moves"] == [{"name": "web", "to": "h2", "mode": "live"}] and source["arrivals"] == []
    assert target["arrivals"] == [{"name": "web", "from": "h1"}] and target["moves"] == []
    assert source["held"] == target["held"] == [] and source["conflicts"] == target["conflicts"] == []


def test_a_stopped_vm_moves_cold():
    declared = {"h1": [], "h2": [vm("db", "stopped")]}
    assert plan("h1", [], declared, seen(h1={"db": "stopped"}, h2={}))["moves"] == [
        {"name": "db", "to": "h2", "mode": "cold"}]


def test_a_vm_where_it_is_declared_needs_nothing():
    result = plan("h1", [vm("web")], {"h1": [vm("web")], "h2": []}, seen(h1={"web": "running"}, h2={}))
    assert result == {"moves": [], "arrivals": [], "held": [], "conflicts": [], "silent": []}


def test_declared_absent_attracts_nothing():
    declared = {"h1": [], "h2": [vm("web", "absent")]}
    observed = seen(h1={"web": "running"}, h2={})
    assert plan("h1", [], declared, observed)["moves"] == [] and plan("h2", declared["h2"], declared, observed)[
        "arrivals"] == []


def test_a_vm_declared_nowhere_stays_where_it_runs():
    assert plan("h1", [], {"h1": [], "h2": []}, seen(h1={"scratch": "running"}, h2={}))["moves"] == []


def test_declared_on_two_hosts_is_a_conflict_for_both():
    declared = {"h1": [vm("web")], "h2": [vm("web")]}
    observed = seen(h1={"web": "running"}, h2={})
    for host in ("h1", "h2"):
        result = plan(host, declared[host], declared, observed)
        assert result["conflicts"] == ["web: declared on h1 and h2; a VM runs on one host"]
        assert result["moves"] == result["arrivals"] == []


def test_defined_on_two_hosts_is_a_conflict():
    declared = {"h1": [], "h2": [vm("web")], "h3": []}
    observed = seen(h1={"web": "stopped"}, h2={}, h3={"web": "running"})
    result = plan("h2", [vm("web")], declared, observed)
    assert result["conflicts"] == ["web: defined on h1 and h3; remove the copies that should not be there"]
    assert plan("h1", [], declared, observed)["moves"] == []


def test_a_silent_host_holds_a_vm_defined_nowhere_known():
    declared = {"h1": [vm("new")], "h2": []}
    result = plan("h1", [vm("new")], declared, seen(h1={}, h2=None))
    assert result["silent"] == ["h2"]
    assert result["held"] == [{"name": "new", "reason": "h2 did not answer and may run it; not starting a second copy"}]


def test_a_silent_host_does_not_hold_a_vm_already_here():
    result = plan("h1", [vm("web")], {"h1": [vm("web")], "h2": []}, seen(h1={"web": "running"}, h2=None))
    assert result["held"] == []


def test_unreachable_and_failed_hosts_are_silent_but_a_host_without_the_engine_runs_nothing():
    observed = {"h1": {"vms": []}, "h2": {"unreachable": True, "msg": "ssh: timed out"},
                "h3": {"failed": True, "msg": "the engine said no"}, "h4": {"failed": True, "error_kind": "engine-missing"}}
    result = plan("h1", [vm("new")], {}, observed)
    assert result["silent"] == ["h2", "h3"] and result["held"][0]["name"] == "new"
    assert plan("h1", [vm("new")], {}, {"h1": {"vms": []}, "h4": observed["h4"]})["held"] == []


# --- the promise, over every combination hypothesis finds ---

STATE = st.sampled_from(["running", "stopped", "paused"])
DECLARED = st.sampled_from(["running", "stopped", "absent"])
NAMES = ("a", "b")


@st.composite
def fleets(draw):
    declared = {host: [vm(name, draw(DECLARED)) for name in NAMES if draw(st.booleans())] for host in HOSTS}
    observed = {}
    for host in HOSTS:
        if draw(st.integers(0, 5)) == 0:
            observed[host] = None  # did not answer
        else:
            observed[host] = {name: draw(STATE) for name in NAMES if draw(st.integers(0, 3)) == 0}
    return declared, observed


def follow(declared, observed):
    """Every answering host follows its plan as site.yml does; what runs where afterwards
    (a silent host keeps running what it ran)."""
    plans = {host: plan(host, declared[host], declared, seen(**observed)) for host in HOSTS if observed[host] is not None}
    after = {host: dict(vms or {}) for host, vms in observed.items()}
    failed = {host for host, p in plans.items() if p["conflicts"]}
    for host, p in plans.items():
        if host in failed:
            continue
        for move in p["moves"]:
            after[move["to"]][move["name"]] = after[host].pop(move["name"])
    for host, p in plans.items():
        if host in failed:
            continue
        # An arrival is brought up only once it is here: its source may have failed.
        held = {entry["name"] for entry in p["held"]} | {
            entry["name"] for entry in p["arrivals"] if entry["name"] not in after[host]}
        for entry in declared[host]:
            if entry["state"] == "absent":
                after[host].pop(entry["name"], None)
            elif entry["name"] not in held:
                after[host].setdefault(entry["name"], entry["state"])
    return after


@settings(max_examples=400, deadline=None)
@given(fleets())
def test_no_play_leaves_a_vm_defined_on_two_hosts(fleet):
    declared, observed = fleet
    before = {name: sum(1 for vms in observed.values() if vms and name in vms) for name in NAMES}
    after = follow(declared, observed)
    for name in NAMES:
        copies = sum(1 for vms in after.values() if name in vms)
        # A play never adds a copy: two afterwards only where there were two before.
        assert copies <= max(1, before[name]), (name, declared, observed, after)
