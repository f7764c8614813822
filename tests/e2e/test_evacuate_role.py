"""The ferry.hypervisor.evacuate role through ansible-playbook on a lab of three hosts with real KVM:
check mode plans and moves nothing; a plan that cannot be carried out stops before any move; a plan
file applied after a VM was moved by hand is refused with the reason; h1 drained onto h2 and h3 with
one move per host at a time, every guest's heartbeat continuous, groups kept apart, h1 empty and
refusing arrivals; a second run changes nothing; undrain and return bring the VMs back; a target
cut off mid-move stops the evacuation with every VM running exactly once and the report saying
what moved."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from harness import Ansible, own_lab, task_results

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

VMS = [("evac-a", ["group:db"]), ("evac-b", ["group:db"]), ("evac-c", []), ("evac-d", [])]
NAMES = [name for name, tags in VMS]


def vm(name, tags, state="running"):
    return {"ferry.hypervisor.vm": {"name": name, "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck",
                                    "cmdline": "fill=20 rate=2000 hb=100", "tags": tags, "state": state}}


def evacuate(ansible, *args, **role_vars):
    """The role on the hypervisors; its plan and timeline go to the test's folder, not the checkout."""
    role_vars.setdefault("evacuate_plan_output", os.path.join(ansible.workdir, "plan-default.json"))
    role_vars.setdefault("evacuate_timeline", os.path.join(ansible.workdir, "timeline.png"))
    path = os.path.join(ansible.workdir, f"evacuate-{time.monotonic_ns()}.yml")
    with open(path, "w") as handle:
        json.dump([{"hosts": "hypervisors", "gather_facts": False,
                    "roles": [{"role": "ferry.hypervisor.evacuate", "vars": role_vars}]}], handle)
    return ansible.playbook(path, *args)


def where(ansible) -> dict:
    """VM name -> the hosts it is defined on."""
    found = {}
    for host in ("h1", "h2", "h3"):
        for entry in json.loads(ansible.ferry(host, "--json", "list").stdout):
            found.setdefault(entry["name"], []).append(host)
    return found


@pytest.fixture(scope="module")
def fleet(lab_environment):
    """A lab of three hosts of its own with the engine, four guests under write load on h1."""
    with own_lab(3) as lab:
        ansible = Ansible(lab, os.path.dirname(lab.dir))
        engine = os.path.join(ansible.workdir, "engine.yml")
        with open(engine, "w") as handle:
            json.dump([{"hosts": "hypervisors", "gather_facts": False,
                        "roles": [{"role": "ferry.hypervisor.engine"}]}], handle)
        ansible.playbook(engine).expect_ok()
        ansible.tasks([vm(name, tags) for name, tags in VMS]).expect_ok()
        yield ansible


def test_check_mode_plans_writes_the_plan_and_moves_nothing(fleet):
    output = os.path.join(fleet.workdir, "checked-plan.json")
    run = evacuate(fleet, "--check", evacuate_hosts=["h1"], evacuate_plan_output=output).expect_ok()
    plan = json.load(open(output))
    assert plan["ok"] and sorted(m["vm"] for m in plan["moves"]) == NAMES
    assert "VM" in run.output and "evac-a" in run.output and "WAVE" in run.output, run.output
    assert all(hosts == ["h1"] for name, hosts in where(fleet).items() if name.startswith("evac-"))
    assert json.loads(fleet.ferry("h1", "--json", "host-info").stdout)["drained"] is None


def test_a_vm_that_fits_nowhere_stops_the_plan_before_any_move(fleet):
    fleet.tasks([{"ferry.hypervisor.vm": {"name": "evac-huge", "vcpus": 1, "memory": 1024 * 1024,
                                          "kernel": "builtin:selfcheck", "state": "stopped"}}]).expect_ok()
    try:
        run = evacuate(fleet, evacuate_hosts=["h1"])
        assert run.rc != 0
        assert "evac-huge" in run.output and "needs 1048576 MiB" in run.output, run.output
        assert where(fleet)["evac-a"] == ["h1"], "a move started"
    finally:
        fleet.tasks([{"ferry.hypervisor.vm": {"name": "evac-huge", "state": "absent"}}]).expect_ok()


def test_a_plan_file_the_fleet_drifted_from_is_refused(fleet):
    output = os.path.join(fleet.workdir, "drift-plan.json")
    evacuate(fleet, evacuate_hosts=["h1"], evacuate_plan_only=True, evacuate_plan_output=output).expect_ok()
    plan = json.load(open(output))
    moved = next(m for m in plan["moves"] if m["to"] == "h3")
    by_hand = fleet.tasks([{"ferry.hypervisor.vm_migrate": {"name": moved["vm"], "to": "h2"}}])
    assert task_results(by_hand.expect_ok())[0]["moved"] is True
    try:
        refused = evacuate(fleet, evacuate_hosts=["h1"], evacuate_plan_file=output)
        assert refused.rc != 0
        assert f"{moved['vm']}: on h2, the plan moves it from h1 to h3" in refused.output, refused.output
        assert json.loads(fleet.ferry("h1", "--json", "host-info").stdout)["drained"] is None
    finally:
        fleet.tasks([{"ferry.hypervisor.vm_migrate": {"name": moved["vm"], "to": "h1"}}], host="h2").expect_ok()


def test_drain_h1_with_budgets_then_undrain_and_return(fleet):
    before = {name: fleet.beats("h1", name)[-1] for name in NAMES}
    output = os.path.join(fleet.workdir, "plan.json")
    run = evacuate(fleet, evacuate_hosts=["h1"], evacuate_plan_output=output, evacuate_max_downtime=200)
    run.expect_ok()
    placed = where(fleet)
    assert all(placed[name] != ["h1"] and len(placed[name]) == 1 for name in NAMES), placed
    assert placed["evac-a"] != placed["evac-b"], "two VMs of group db on one host"
    for name in NAMES:
        beats = [b for b in fleet.beats(placed[name][0], name) if b >= before[name]]
        assert beats == list(range(beats[0], beats[0] + len(beats))), f"{name}: heartbeat gap"
    plan = json.load(open(output))
    waves = {}
    for move in plan["moves"]:
        waves.setdefault(move["wave"], []).append(move)
    assert all(len({m["to"] for m in wave}) == len(wave) for wave in waves.values()), "two moves into one target"
    assert "VM" in run.output and "moved" in run.output, run.output
    drained = json.loads(fleet.ferry("h1", "--json", "host-info").stdout)["drained"]
    assert drained and "evacuate" in drained["reason"]
    timeline = os.path.join(fleet.workdir, "timeline.png")
    assert open(timeline, "rb").read(8) == b"\x89PNG\r\n\x1a\n", "no timeline picture"
    record = json.load(open(timeline + ".json"))
    assert sorted(m["vm"] for m in record if m["ok"]) == NAMES and all(m["ended"] >= m["started"] for m in record)

    again = evacuate(fleet, evacuate_hosts=["h1"]).expect_ok()
    assert all(counts["changed"] == 0 for counts in again.recap().values()), again.output

    back = evacuate(fleet, evacuate_hosts=["h1"], evacuate_plan_file=output, evacuate_undrain=True,
                    evacuate_return=True).expect_ok()
    assert back.recap()["h1"]["changed"] >= 1
    assert all(where(fleet)[name] == ["h1"] for name in NAMES), where(fleet)
    assert json.loads(fleet.ferry("h1", "--json", "host-info").stdout)["drained"] is None
    for name in NAMES:
        assert fleet.beats("h1", name), f"{name} stopped beating"


def receiving(ansible, host: str) -> bool:
    return ansible.exists(host, "/var/lib/ferry/incoming") and bool(
        ansible.lab.exec(host, ["ls", "/var/lib/ferry/incoming"], capture_output=True, text=True,
                         timeout=30).stdout.split())


def test_a_target_cut_off_mid_move_stops_new_moves_and_every_vm_runs_once(fleet):
    """Slow moves (a bandwidth cap); once h3 receives, its link goes down: that move fails, the
    one under way to h2 finishes, no move of a later wave starts, and no VM runs twice."""
    runs = []
    worker = threading.Thread(target=lambda: runs.append(evacuate(
        fleet, evacuate_hosts=["h1"], evacuate_parallel=2,
        evacuate_migrate_options={"bandwidth": "3M", "timeout": 120})))
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not receiving(fleet, "h3"):
        time.sleep(0.5)
    assert receiving(fleet, "h3"), "no move into h3 began"
    fleet.lab.link("h3", down=True)
    try:
        worker.join(600)
    finally:
        fleet.lab.link("h3", up=True)
    (run,) = runs
    assert run.rc != 0
    assert "did not move" in run.output and "not started" in run.output, run.output
    time.sleep(5)
    placed = where(fleet)
    assert all(len(placed[name]) == 1 for name in NAMES), f"a VM is defined twice or nowhere: {placed}"
    for name in NAMES:
        state = fleet.status(placed[name][0], name)["state"]
        assert state == "running", f"{name} is {state} on {placed[name][0]}"
    assert any(placed[name] == ["h1"] for name in NAMES), "every VM moved although h3 was cut off"
    # Bring them back for whatever runs next, and clear the mark.
    fleet.ferry("h1", "undrain")
    for name in NAMES:
        if placed[name] != ["h1"]:
            fleet.tasks([{"ferry.hypervisor.vm_migrate": {"name": name, "to": "h1"}}], host=placed[name][0]).expect_ok()
