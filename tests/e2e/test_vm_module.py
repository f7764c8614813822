"""ferry.hypervisor.vm through ansible-playbook over real SSH: the run-state lifecycle, VMs that
outlive the SSH connection, refusals, check mode, removal, and messages for bad parameters."""

from __future__ import annotations

import time

import pytest

from harness import task_results

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

HOST = "h1"
NAME = "mod-life"
VM = {"name": NAME, "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "cmdline": "fill=5 hb=200"}
# A new SSH connection for every task, closed when the task ends.
NO_SHARED_SSH = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no"}


def vm_task(**params) -> dict:
    return {"ferry.hypervisor.vm": params, "ignore_errors": True}


def wait_for_more_heartbeats(ansible, host: str, name: str, seen: int, limit: float = 15.0) -> int:
    deadline = time.monotonic() + limit
    count = len(ansible.beats(host, name))
    while count < seen + 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        count = len(ansible.beats(host, name))
    return count


def test_lifecycle_from_start_to_removal(ansible, engine_installed):
    run = ansible.tasks([vm_task(state="running", **VM), vm_task(state="running", **VM)], **NO_SHARED_SSH)
    started, again = task_results(run.expect_ok())
    assert started["changed"] is True and started["vm"]["state"] == "running", started
    assert again["changed"] is False and not again.get("failed"), again
    assert again["vm"]["pid"] == started["vm"]["pid"]

    # The playbook and each of its SSH connections have ended; the VM goes on.
    seen = len(ansible.beats(HOST, NAME))
    assert wait_for_more_heartbeats(ansible, HOST, NAME, seen) >= seen + 3, "the VM stopped beating after SSH closed"
    assert ansible.status(HOST, NAME)["pid"] == started["vm"]["pid"]

    run = ansible.tasks([
        vm_task(name=NAME, state="running", memory=128),
        vm_task(name=NAME, state="paused"),
        vm_task(name=NAME, state="stopped", stop_timeout=1),
        vm_task(name=NAME, state="stopped", stop_timeout=1),
    ], **NO_SHARED_SSH)
    resize, paused, stopped, stopped_again = task_results(run)
    assert resize["failed"] is True and resize["changed"] is False, resize
    assert resize["msg"].startswith(f"memory: cannot change while VM '{NAME}' is running (memory 64 -> 128)"), resize
    assert "stop it first" in resize["msg"]
    assert (paused["changed"], paused["vm"]["state"]) == (True, "paused"), paused
    assert (stopped["changed"], stopped["vm"]["state"]) == (True, "stopped"), stopped
    assert stopped_again["changed"] is False, stopped_again
    assert ansible.status(HOST, NAME)["state"] == "stopped"

    checked = ansible.tasks([vm_task(name=NAME, state="absent")], "--check")
    assert task_results(checked)[0]["changed"] is True, checked.output
    assert ansible.status(HOST, NAME)["state"] == "stopped", "check mode removed the VM"

    folder = f"/var/lib/ferry/vms/{NAME}"
    assert ansible.exists(HOST, folder)
    run = ansible.tasks([vm_task(name=NAME, state="absent"), vm_task(name=NAME, state="absent")])
    removed, again = task_results(run)
    assert removed["changed"] is True and removed["vm"] == {"name": NAME, "state": "absent"}, removed
    assert again["changed"] is False, again
    assert ansible.status(HOST, NAME) is None
    assert not ansible.exists(HOST, folder), f"{folder} is still there"


def test_bad_parameters_fail_naming_the_parameter(ansible, engine_installed):
    name = "mod-bad"
    run = ansible.tasks([
        vm_task(name=name, state="running", vcpus=1, memory=64, kernel="builtin:selfcheck", colour="blue"),
        vm_task(name=name, state="running", vcpus=1, memory="lots", kernel="builtin:selfcheck"),
        vm_task(name=name, state="running", vcpus=1, memory=64),
        vm_task(name=name, state="running", vcpus=1, memory=63, kernel="builtin:selfcheck"),
        vm_task(name=name, state="running", vcpus=1, memory=64, kernel="builtin:selfcheck",
                engine_venv="/nonexistent"),
    ])
    unknown, text, no_kernel, odd_memory, no_engine = task_results(run)
    assert all(result["failed"] for result in (unknown, text, no_kernel, odd_memory, no_engine)), run
    assert "Unsupported parameters for (ferry.hypervisor.vm) module: colour" in unknown["msg"]
    assert "'memory'" in text["msg"] and "int" in text["msg"], text["msg"]
    assert no_kernel["msg"] == (f"kernel: required to create VM '{name}', which is not defined on this host "
                                "(missing: kernel)")
    assert odd_memory["msg"] == "memory: 63 MiB must be a multiple of 2 MiB"
    assert no_engine["msg"].startswith("the Ferry engine is not installed on this host"), no_engine["msg"]
    assert no_engine["msg"].endswith("run the ferry.hypervisor.engine role")
    assert ansible.status(HOST, name) is None
