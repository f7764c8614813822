"""The evacuation planner: where the VMs of drained hosts go, what stays and why, the waves,
and a plan applied later (drift, the moves left, the way back). Examples first, then the
promises over random fleets: no target over capacity, anti-affinity held, every wave within
its budgets, every movable VM placed when the targets have room, the same plan for the same fleet."""

from __future__ import annotations

import copy

from hypothesis import given, settings, strategies as st

from ansible_collections.ferry.hypervisor.plugins.plugin_utils.evacuation import (
    DEFAULTS, drift, plan, remaining, return_plan, schedule, table)


def options(**changes):
    return dict(DEFAULTS, **changes)


def host(cpus=8, total=16384, free=None, committed=0, vcpus=0, drained=None):
    free = total - committed if free is None else free
    return {"cpus": cpus, "memory_total_mib": total, "memory_free_mib": free, "committed_memory_mib": committed,
            "committed_vcpus": vcpus, "drained": drained}


def vm(name, memory=1024, vcpus=1, state="running", tags=()):
    return {"name": name, "memory": memory, "vcpus": vcpus, "state": state, "tags": list(tags)}


def fleet(**hosts):
    """facts from host=(host facts, [VMs]) or host=None (not read)."""
    return {name: None if spec is None else {"host": spec[0], "vms": list(spec[1])} for name, spec in hosts.items()}


def moved(result):
    return {move["vm"]: move["to"] for move in result["moves"]}


# --- where VMs go ---

def test_the_vms_of_a_drained_host_move_to_the_others_live_or_cold():
    facts = fleet(h1=(host(), [vm("web"), vm("db", state="stopped"), vm("cache", state="paused")]),
                  h2=(host(), []), h3=(host(), []))
    result = plan(facts, ["h1"], options())
    assert sorted((m["vm"], m["from"], m["mode"]) for m in result["moves"]) == [
        ("cache", "h1", "live"), ("db", "h1", "cold"), ("web", "h1", "live")]
    assert set(moved(result).values()) <= {"h2", "h3"}
    assert result["ok"] and result["blockers"] == [] and result["version"] == 1


def test_the_biggest_vm_goes_first_onto_the_roomiest_target():
    facts = fleet(h1=(host(), [vm("small", 512), vm("big", 4096)]),
                  h2=(host(total=8192), []), h3=(host(total=6144), []))
    result = plan(facts, ["h1"], options())
    assert moved(result) == {"big": "h2", "small": "h3"}
    assert result["targets"]["h2"] == {"memory_free_mib_before": 8192, "memory_free_mib_after": 4096,
                                       "vcpus_after": 1, "vcpus_max": 32}


def test_free_memory_is_the_lesser_of_available_and_uncommitted():
    # Linux says 8 GiB are available, but running VMs own all but 1 GiB of it.
    facts = fleet(h1=(host(), [vm("web", 2048)]), h2=(host(total=16384, free=8192, committed=15360), []))
    result = plan(facts, ["h1"], options(memory_headroom_mib=0))
    assert result["moves"] == [] and result["unplaced"][0]["reason"] == (
        "needs 2048 MiB and 1 vCPU; the most any target has left is 1024 MiB")


def test_a_vm_that_fits_nowhere_is_named_with_the_shortfall():
    facts = fleet(h1=(host(), [vm("huge", 2048, 2)]), h2=(host(total=1280), []))
    result = plan(facts, ["h1"], options())
    assert result["unplaced"] == [{"vm": "huge", "host": "h1", "memory_mib": 2048, "vcpus": 2,
                                   "reason": "needs 2048 MiB and 2 vCPUs; the most any target has left is 1024 MiB"}]
    assert not result["ok"] and result["blockers"] == [
        "huge on h1: needs 2048 MiB and 2 vCPUs; the most any target has left is 1024 MiB"]


def test_a_shortfall_of_vcpus_and_of_both_on_one_host():
    facts = fleet(h1=(host(), [vm("wide", 1024, 8)]), h2=(host(cpus=1), []), h3=(host(total=512, cpus=8), []))
    reason = plan(facts, ["h1"], options(vcpu_ratio=1.0))["unplaced"][0]["reason"]
    assert reason == "needs 1024 MiB and 8 vCPUs; the most any target has left is 16128 MiB and 8 vCPUs, but not on one host"
    facts = fleet(h1=(host(), [vm("wide", 1024, 8)]), h2=(host(cpus=2), []))
    assert plan(facts, ["h1"], options(vcpu_ratio=1.0))["unplaced"][0]["reason"] == (
        "needs 1024 MiB and 8 vCPUs; the most any target has left is 2 vCPUs")


def test_no_target_at_all():
    facts = fleet(h1=(host(), [vm("web")]), h2=(host(drained={"since": "now"}), []), h3=None)
    result = plan(facts, ["h1"], options())
    assert result["unplaced"][0]["reason"] == "no target: every other host is to be drained, drained, or did not answer"
    assert result["silent"] == ["h3"] and result["targets"] == {}


def test_headroom_is_kept_free_on_each_target():
    facts = fleet(h1=(host(), [vm("web", 1024)]), h2=(host(total=1024 + 256), []))
    assert moved(plan(facts, ["h1"], options())) == {"web": "h2"}
    assert moved(plan(facts, ["h1"], options(memory_headroom_mib=257))) == {}


def test_the_vcpu_ratio_caps_committed_vcpus_per_cpu():
    facts = fleet(h1=(host(), [vm("web", 512, 2)]), h2=(host(cpus=2, vcpus=1), []))
    assert moved(plan(facts, ["h1"], options(vcpu_ratio=1.0))) == {}
    assert moved(plan(facts, ["h1"], options(vcpu_ratio=1.5))) == {"web": "h2"}


def test_stopped_vms_count_against_the_target_as_running_ones_do():
    facts = fleet(h1=(host(), [vm("a", 1024, state="stopped"), vm("b", 1024, state="stopped")]),
                  h2=(host(total=1024 + 256 + 512), []))
    result = plan(facts, ["h1"], options())
    assert moved(result) == {"a": "h2"} and [entry["vm"] for entry in result["unplaced"]] == ["b"]
    assert result["moves"][0]["mode"] == "cold"


def test_a_group_is_never_twice_on_one_host_counting_vms_already_there():
    facts = fleet(h1=(host(), [vm("db1", tags=["group:db"]), vm("db2", tags=["group:db"]),
                               vm("db3", tags=["group:db"])]),
                  h2=(host(), [vm("db0", tags=["group:db"])]), h3=(host(), []), h4=(host(), []))
    result = plan(facts, ["h1"], options())
    assert sorted(moved(result).values()) == ["h3", "h4"]
    assert all(move["group"] == "db" for move in result["moves"])
    assert result["unplaced"][0]["reason"] == "its group db is on every target with room for it"


def test_pinned_vms_block_the_plan_and_ignored_ones_stay_listed():
    facts = fleet(h1=(host(), [vm("db", tags=["pinned"]), vm("scratch", tags=["evacuate-ignore"]), vm("web")]),
                  h2=(host(), []))
    result = plan(facts, ["h1"], options())
    assert result["pinned"] == [{"vm": "db", "host": "h1"}]
    assert result["ignored"] == [{"vm": "scratch", "host": "h1"}]
    assert moved(result) == {"web": "h2"}
    assert not result["ok"] and result["blockers"] == ["db on h1 is pinned (tag pinned)"]
    custom = plan(facts, ["h1"], options(pin_tag="evacuate-ignore", ignore_tag="pinned"))
    assert custom["pinned"] == [{"vm": "scratch", "host": "h1"}] and custom["ignored"] == [{"vm": "db", "host": "h1"}]


def test_silent_and_drained_hosts_are_not_targets_and_a_silent_host_to_drain_blocks():
    facts = fleet(h1=None, h2=(host(), [vm("web")]), h3=(host(drained={"since": "2026-12-01"}), []),
                  h4=(host(), []))
    result = plan(facts, ["h1", "h2"], options())
    assert moved(result) == {"web": "h4"} and result["silent"] == ["h1"] and list(result["targets"]) == ["h4"]
    assert result["blockers"] == ["h1: to be drained and did not answer"] and not result["ok"]


def test_a_name_defined_on_two_hosts_is_not_moved():
    facts = fleet(h1=(host(), [vm("web")]), h2=(host(), [vm("web")]), h3=(host(), []))
    assert plan(facts, ["h1"], options())["unplaced"][0]["reason"] == (
        "also defined on h2; a name on two hosts cannot be told apart")


def test_the_same_fleet_gives_the_same_plan():
    facts = fleet(h1=(host(), [vm("vm%d" % i, 512) for i in range(8)]), h2=(host(), []), h3=(host(), []))
    reordered = dict(reversed(list(copy.deepcopy(facts).items())))
    assert plan(facts, ["h1"], options()) == plan(reordered, ["h1"], options())


# --- waves ---

def move(name, source, target, group=None):
    return {"vm": name, "from": source, "to": target, "mode": "live", "memory_mib": 1, "vcpus": 1, "group": group}


def test_waves_keep_the_budgets():
    moves = [move("a", "h1", "h3"), move("b", "h1", "h4"), move("c", "h2", "h3"), move("d", "h2", "h4")]
    assert schedule(moves, options()) == 2
    assert {m["vm"]: m["wave"] for m in moves} == {"a": 1, "d": 1, "b": 2, "c": 2}
    moves = [move("a", "h1", "h3"), move("b", "h2", "h4")]
    assert schedule(moves, options(parallel=1)) == 2
    grouped = [move("a", "h1", "h3", "db"), move("b", "h2", "h4", "db"), move("c", "h5", "h6")]
    assert schedule(grouped, options()) == 2 and [m["wave"] for m in grouped] == [1, 1, 2]
    assert schedule(grouped, options(per_group=2)) == 1


# --- applying the plan later ---

def apply(facts, moves):
    """The fleet after ``moves``: each VM on its target, the hosts' commitments following."""
    after = copy.deepcopy(facts)
    for m in moves:
        source, target = after[m["from"]], after[m["to"]]
        entry = next(v for v in source["vms"] if v["name"] == m["vm"])
        source["vms"].remove(entry)
        target["vms"].append(entry)
        if entry["state"] != "stopped":
            for fact, sign in ((source["host"], -1), (target["host"], 1)):
                fact["committed_memory_mib"] += sign * entry["memory"]
                fact["memory_free_mib"] -= sign * entry["memory"]
                fact["committed_vcpus"] += sign * entry["vcpus"]
    return after


def two_moves():
    facts = fleet(h1=(host(), [vm("a", 2048), vm("b", 1024, state="stopped")]), h2=(host(), []), h3=(host(), []))
    return facts, plan(facts, ["h1"], options())


def test_a_fresh_plan_and_a_partly_applied_one_still_apply():
    facts, result = two_moves()
    assert drift(result, facts) == [] and remaining(result, facts) == result["moves"]
    first = [m for m in result["moves"] if m["wave"] == 1]
    partly = apply(facts, first)
    assert drift(result, partly) == []
    assert remaining(result, partly) == [m for m in result["moves"] if m["wave"] > 1]
    assert remaining(result, apply(facts, result["moves"])) == []


def test_remaining_moves_take_the_mode_of_the_vm_now():
    facts, result = two_moves()
    next(v for v in facts["h1"]["vms"] if v["name"] == "b")["state"] = "running"
    assert {m["vm"]: m["mode"] for m in remaining(result, facts)} == {"a": "live", "b": "live"}


def test_drift_names_a_vm_gone_or_moved_by_hand():
    facts, result = two_moves()
    gone = copy.deepcopy(facts)
    gone["h1"]["vms"] = [v for v in gone["h1"]["vms"] if v["name"] != "a"]
    assert drift(result, gone) == ["a: gone (no host that answered has it)"]
    planned = moved(result)["a"]
    elsewhere = "h3" if planned == "h2" else "h2"
    assert drift(result, apply(facts, [move("a", "h1", elsewhere)])) == [
        "a: on %s, the plan moves it from h1 to %s" % (elsewhere, planned)]


def test_drift_names_a_target_short_of_room_drained_or_silent():
    facts, result = two_moves()
    target = moved(result)["a"]
    full = copy.deepcopy(facts)
    full[target]["host"]["memory_free_mib"] = 1024
    assert drift(result, full) == ["%s: the plan sends it 2048 MiB and 1 vCPU; it has 768 MiB and 32 vCPUs left" % target]
    drained = copy.deepcopy(facts)
    drained[target]["host"]["drained"] = {"since": "now"}
    assert drift(result, drained) == ["%s: a target of the plan is drained now" % target]
    silent = dict(facts, **{target: None})
    assert drift(result, silent) == ["%s: a target of the plan did not answer" % target]


def test_drift_names_a_new_vm_on_a_source_a_silent_source_and_a_group_that_arrived():
    facts = fleet(h1=(host(), [vm("db1", tags=["group:db"])]), h2=(host(), []))
    result = plan(facts, ["h1"], options())
    later = copy.deepcopy(facts)
    later["h1"]["vms"].append(vm("new"))
    later["h2"]["vms"].append(vm("db0", tags=["group:db"]))
    assert drift(result, later) == ["h1: new is there and not in the plan",
                                    "h2: db1 of group db is there now; the plan sends it there too"]
    assert drift(result, dict(facts, h1=None)) == ["h1: to be drained and did not answer",
                                                   "db1: on no host that answered; h1 did not answer"]


def test_the_return_plan_moves_back_what_is_still_where_it_went():
    facts = fleet(h1=(host(), [vm("a"), vm("b"), vm("c", state="stopped")]), h2=(host(), []), h3=(host(), []))
    result = plan(facts, ["h1"], options())
    after = apply(facts, result["moves"])
    somewhere = moved(result)["b"]
    other = "h3" if somewhere == "h2" else "h2"
    after = apply(after, [move("b", somewhere, other)])
    back = return_plan(result, after)
    assert sorted((m["vm"], m["from"], m["to"], m["mode"]) for m in back["moves"]) == [
        ("a", moved(result)["a"], "h1", "live"), ("c", moved(result)["c"], "h1", "cold")]
    assert back["waves"] == 1 + (moved(result)["a"] == moved(result)["c"])
    assert back["left"] == [{"vm": "b", "host": other, "reason": "on %s, the plan moved it to %s" % (other, somewhere)}]
    assert return_plan(result, after, origins=["h9"])["moves"] == []


def test_no_return_onto_an_origin_still_drained():
    facts, result = two_moves()
    after = apply(facts, result["moves"])
    after["h1"]["host"]["drained"] = {"since": "now"}
    back = return_plan(result, after)
    assert back["moves"] == [] and {entry["reason"] for entry in back["left"]} == {"its origin h1 is still drained"}


def test_the_table_shows_moves_and_what_stays():
    facts = fleet(h1=(host(), [vm("web", 2048), vm("db", tags=["pinned"]), vm("tmp", tags=["evacuate-ignore"]),
                               vm("huge", 99999)]), h2=(host(), []), h3=None)
    lines = table(plan(facts, ["h1"], options()))
    assert lines[0].split() == ["VM", "FROM", "TO", "MODE", "MEMORY", "WAVE"]
    assert lines[1].split() == ["web", "h1", "h2", "live", "2048", "MiB", "1"]
    assert lines[2:] == ["ignored: tmp on h1", "pinned: db on h1 (blocks the plan)",
                         "unplaced: huge on h1: needs 99999 MiB and 1 vCPU; the most any target has left is 16128 MiB",
                         "silent: h3", "1 move(s) in 1 wave(s) from h1; not ok: 2 blocker(s)"]


# --- the promises, on random fleets ---

HOSTS = ("h1", "h2", "h3", "h4", "h5")
GROUPS = st.sampled_from([[], [], ["group:a"], ["group:b"], ["group:c"]])
STATES = st.sampled_from(["running", "running", "paused", "stopped"])


@st.composite
def vms(draw, prefix, extra_tags=True, groups=GROUPS):
    made = []
    for index in range(draw(st.integers(0, 6))):
        tags = list(draw(groups))
        if extra_tags:
            tags += draw(st.sampled_from([[], [], [], [], ["pinned"], ["evacuate-ignore"]]))
        made.append(vm("%s-%d" % (prefix, index), draw(st.integers(1, 8)) * 256, draw(st.integers(1, 4)),
                       draw(STATES), tags))
    return made


@st.composite
def random_fleets(draw):
    facts = {}
    for name in HOSTS:
        if draw(st.integers(0, 6)) == 0:
            facts[name] = None
            continue
        residents = draw(vms(name))
        running = [v for v in residents if v["state"] != "stopped"]
        committed = sum(v["memory"] for v in running)
        total = committed + draw(st.integers(0, 16)) * 512
        facts[name] = {"host": host(draw(st.integers(1, 4)), total, total - committed - draw(st.integers(0, 1024)),
                                    committed, sum(v["vcpus"] for v in running),
                                    {"since": "x"} if draw(st.integers(0, 5)) == 0 else None),
                       "vms": residents}
    drain = draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3, unique=True))
    budgets = {"parallel": draw(st.integers(1, 4)), "per_host": draw(st.integers(1, 2)),
               "per_group": draw(st.integers(1, 2)), "memory_headroom_mib": draw(st.sampled_from([0, 256])),
               "vcpu_ratio": draw(st.sampled_from([1.0, 2.5, 4.0]))}
    return facts, drain, options(**budgets)


def check_capacity(facts, result, opts):
    for name, fact in facts.items():
        arriving = [m for m in result["moves"] if m["to"] == name]
        if not arriving:
            continue
        h = fact["host"]
        free = min(h["memory_free_mib"], h["memory_total_mib"] - h["committed_memory_mib"])
        assert sum(m["memory_mib"] for m in arriving) <= free - opts["memory_headroom_mib"], (name, result)
        assert h["committed_vcpus"] + sum(m["vcpus"] for m in arriving) <= h["cpus"] * opts["vcpu_ratio"], (name, result)
        assert fact is not None and not h["drained"] and name not in result["drain"]


def check_anti_affinity(facts, result, opts):
    after = apply(facts, result["moves"])
    for m in result["moves"]:
        if m["group"] is not None:
            mates = [v for v in after[m["to"]]["vms"] if "group:" + m["group"] in v["tags"]]
            assert len(mates) == 1, (m, after[m["to"]]["vms"])


def check_waves(moves, opts):
    for wave in set(m["wave"] for m in moves):
        inside = [m for m in moves if m["wave"] == wave]
        assert len(inside) <= opts["parallel"]
        for key, limit in (("from", "per_host"), ("to", "per_host"), ("group", "per_group")):
            for value in set(m[key] for m in inside) - {None}:
                assert sum(1 for m in inside if m[key] == value) <= opts[limit], (key, value, inside)


@settings(max_examples=300, deadline=None)
@given(random_fleets())
def test_plans_on_random_fleets_keep_every_promise(fleet_):
    facts, drain, opts = fleet_
    result = plan(facts, drain, opts)
    check_capacity(facts, result, opts)
    check_anti_affinity(facts, result, opts)
    check_waves(result["moves"], opts)
    assert result["waves"] == max([m["wave"] for m in result["moves"]] or [0])
    on_sources = sorted(v["name"] for h in drain if facts[h] for v in facts[h]["vms"])
    accounted = sorted(e["vm"] for kind in ("moves", "ignored", "pinned", "unplaced") for e in result[kind])
    assert accounted == on_sources
    assert result["ok"] == (not result["pinned"] and not result["unplaced"] and
                            not any(facts[h] is None for h in drain))
    assert plan(dict(reversed(list(copy.deepcopy(facts).items()))), list(reversed(drain)), opts) == result
    unread = ["%s: to be drained and did not answer" % h for h in result["drain"] if facts[h] is None]
    assert drift(result, facts) == unread and remaining(result, facts) == result["moves"]
    done = apply(facts, result["moves"])
    assert drift(result, done) == unread and remaining(result, done) == []
    back = return_plan(result, done)
    assert len(back["moves"]) == sum(1 for m in result["moves"] if not facts[m["from"]]["host"]["drained"])
    check_waves(back["moves"], opts)


@st.composite
def roomy_fleets(draw):
    """Fleets whose targets each have room for every VM to move, with no grouped VM on them and
    at least as many targets as any group has members: every movable VM must be placed."""
    sources = {name: {"host": host(), "vms": draw(vms(name))} for name in ("s1", "s2")}
    movable = [v for fact in sources.values() for v in fact["vms"] if not {"pinned", "evacuate-ignore"} & set(v["tags"])]
    memory = sum(v["memory"] for v in movable) + 256
    vcpus = sum(v["vcpus"] for v in movable)
    biggest_group = max([sum(1 for v in movable if v["tags"][:1] == [g]) for g in ("group:a", "group:b", "group:c")])
    targets = {}
    for index in range(max(1, biggest_group, draw(st.integers(1, 3)))):
        residents = draw(vms("t%d" % index, extra_tags=False, groups=st.just([])))
        running = [v for v in residents if v["state"] != "stopped"]
        committed = sum(v["memory"] for v in running)
        used = sum(v["vcpus"] for v in running)
        targets["t%d" % index] = {"host": host(cpus=used + vcpus, total=committed + memory, committed=committed,
                                               vcpus=used), "vms": residents}
    return dict(sources, **targets)


@settings(max_examples=200, deadline=None)
@given(roomy_fleets())
def test_every_movable_vm_is_placed_when_the_targets_have_room(facts):
    result = plan(facts, ["s1", "s2"], options(vcpu_ratio=1.0))
    assert result["unplaced"] == [], result["unplaced"]
    assert result["ok"] == (not result["pinned"])
    check_capacity(facts, result, options(vcpu_ratio=1.0))
    check_anti_affinity(facts, result, options())
