"""ferry.hypervisor.vm_snapshot, vm_info and host_info through ansible-playbook over real SSH to a
lab host with real KVM: a snapshot taken once, listed, restored as a clone that goes on from the
saved heartbeat, restored in place, deleted; check mode and diff mode; facts for placement."""

from __future__ import annotations


import pytest

from harness import task_results

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

HOST = "h1"
NAME = "mod-snap"
CLONE = "mod-snap-clone"
VM = {"name": NAME, "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "cmdline": "fill=5 hb=100"}


def snap(**params) -> dict:
    return {"ferry.hypervisor.vm_snapshot": dict({"name": NAME}, **params), "ignore_errors": True}


def test_snapshot_lifecycle_from_a_play(ansible, engine_installed):
    run = ansible.tasks([
        {"ferry.hypervisor.vm": dict(VM, state="running")},
        {"ansible.builtin.pause": {"seconds": 1}},
        snap(snapshot="s1", tags=["e2e"]),
        snap(snapshot="s1", tags=["e2e"]),
        {"ferry.hypervisor.vm_info": {"name": [NAME]}},
        {"ferry.hypervisor.host_info": {}},
    ], "--diff")
    taken, again, info, facts = task_results(run.expect_ok())[2:]
    assert taken["changed"] is True and again["changed"] is False, (taken, again)
    assert taken["snapshot"]["id"] == "s1" and taken["snapshot"]["tags"] == ["e2e"]
    assert taken["snapshot"]["pause_ms"] > 0 and taken["snapshot"]["disk_bytes"] > 0
    assert "-  \"snapshots\": []" in run.output or '"snapshots": []' in run.output, "no diff shown"
    vm = info["vms"][0]
    assert [s["id"] for s in vm["snapshots"]] == ["s1"] and 0 <= vm["last_snapshot_age"] < 120
    host = facts["host"]
    assert host["kvm"]["available"] and host["cpu"]["flags"] and host["committed_memory_mib"] >= 64
    assert any(entry["name"] == NAME and entry["state"] == "running" for entry in host["vms"])
    saved_at = ansible.beats(HOST, NAME)[-1]

    # Check mode predicts the clone and changes nothing on the host.
    checked = ansible.tasks([snap(snapshot="s1", state="restored", **{"as": CLONE})], "--check")
    assert task_results(checked.expect_ok())[0]["changed"] is True
    assert ansible.status(HOST, CLONE) is None, "check mode started a clone"

    run = ansible.tasks([
        snap(snapshot="s1", state="restored", **{"as": CLONE}),
        snap(snapshot="s1", state="restored", **{"as": CLONE}),
        snap(snapshot="s1", state="restored"),
        snap(snapshot="s1", state="restored", replace=True),
    ])
    cloned, cloned_again, refused, replaced = task_results(run)
    assert cloned["changed"] is True and cloned["vm"]["restored_from"] == {"vm": NAME, "snapshot": "s1"}
    assert cloned_again["changed"] is False, cloned_again
    assert refused["failed"] is True and "set replace=true" in refused["msg"], refused
    assert replaced["changed"] is True and replaced["vm"]["state"] == "running"
    # The clone went on from the saved heartbeat, not from its boot.
    clone_beats = ansible.beats(HOST, CLONE)
    assert clone_beats and 5 <= min(clone_beats) <= saved_at, (clone_beats[:3], saved_at)

    run = ansible.tasks([
        snap(snapshot="s1", state="absent"),
        snap(snapshot="s1", state="absent"),
        snap(snapshot="s1", state="restored"),
        {"ferry.hypervisor.vm": {"name": CLONE, "state": "absent"}},
        {"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}},
    ])
    deleted, deleted_again, gone = task_results(run)[:3]
    assert (deleted["changed"], deleted_again["changed"]) == (True, False)
    assert gone["failed"] is True and gone["msg"] == f"{NAME}: no snapshot 's1'", gone
    assert ansible.status(HOST, NAME) is None and ansible.status(HOST, CLONE) is None


def test_a_stopped_vm_is_refused_in_check_mode_and_for_real(ansible, engine_installed):
    name = "mod-snap-off"
    ansible.tasks([{"ferry.hypervisor.vm": dict(VM, name=name, state="stopped")}]).expect_ok()
    message = f"{name}: the VM is not running; a snapshot saves a running VM"
    for args in (("--check",), ()):
        result = task_results(ansible.tasks([snap(name=name, snapshot="s1")], *args))[0]
        assert result["failed"] is True and result["msg"] == message, (args, result)
    ansible.tasks([{"ferry.hypervisor.vm": {"name": name, "state": "absent"}}]).expect_ok()
