"""ferry.hypervisor.vm_migrate through ansible-playbook over real SSH: a live move h1 -> h2 of the
self-checking guest under write load, with progress lines on the controller, the heartbeat going
on at the destination without a gap or CORRUPT, exactly one copy afterwards, a second run that
changes nothing, the move back; check mode that only runs the pre-flight; refusals in one line."""

from __future__ import annotations

import re

import pytest

from harness import task_results

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

NAME = "mod-move"
VM = {"name": NAME, "vcpus": 1, "memory": 128, "kernel": "builtin:selfcheck", "cmdline": "fill=40 rate=2000 hb=100"}


def move(**params) -> dict:
    return {"ferry.hypervisor.vm_migrate": dict({"name": NAME}, **params), "ignore_errors": True}


def beats(ansible, host: str) -> list[int]:
    log = ansible.read(host, f"/var/lib/ferry/vms/{NAME}/console.log")
    assert "CORRUPT" not in log, f"the guest found corrupt memory on {host}"
    return [int(match) for match in re.findall(r"^HB cpu=0 seq=(\d+) .* OK$", log, re.M)]


def test_a_live_move_there_and_back(ansible, engine_installed):
    ansible.tasks([{"ferry.hypervisor.vm": dict(VM, state="running")}]).expect_ok()

    checked = ansible.tasks([move(to="h2")], "--check", "--diff")
    (preflight,) = task_results(checked.expect_ok())
    assert preflight["changed"] is True and preflight["moved"] is False, preflight
    assert preflight["preflight"]["blockers"] == [] and preflight["preflight"]["memory"]["needed_mib"] >= 128
    assert ansible.status("h1", NAME)["state"] == "running" and ansible.status("h2", NAME) is None

    # A bandwidth cap makes the move last a few seconds, long enough for progress lines.
    run = ansible.tasks([move(to="h2", max_downtime=100, bandwidth="12M"), move(to="h2")])
    moved, again = task_results(run.expect_ok())
    assert moved["changed"] is True and moved["moved"] is True, moved
    report = moved["report"]
    assert report["outcome"] == "committed" and report["total_ms"] > 0 and report["downtime_ms"] > 0, report
    assert moved["vm"]["state"] == "running"
    assert again["changed"] is False and again["moved"] is False, again
    assert f"{NAME}: preparing the receiver on h2" in run.output, run.output
    if not re.search(rf"{NAME}: \S+ round \d+, +\d+% of \d+ MiB, \d+ MiB/s", run.output):
        run.fail("no progress line while the move ran")
    assert ansible.status("h1", NAME) is None, "the VM is still defined on the source"
    assert ansible.status("h2", NAME)["state"] == "running"
    seen = beats(ansible, "h2")
    assert seen == list(range(seen[0], seen[0] + len(seen))), "the heartbeat sequence has a gap"

    back = ansible.tasks([move(to="h1")], host="h2")
    assert task_results(back.expect_ok())[0]["moved"] is True
    assert ansible.status("h2", NAME) is None and ansible.status("h1", NAME)["state"] == "running"
    ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}]).expect_ok()


@pytest.mark.parametrize("params, message", [
    ({"to": "h1"}, "to: h1 is the host the task runs on; run it against the source"),
    ({"to": "nowhere"}, "to: 'nowhere' is not a host of the inventory"),
    ({"to": "h2", "name": "no-such-vm"}, "name: no VM named 'no-such-vm' on h1 or h2"),
    ({"to": "h2", "mode": "teleport"}, "value of mode must be one of: live, warm, cold, got: teleport"),
])
def test_refusals_name_the_option_and_move_nothing(ansible, engine_installed, params, message):
    result = task_results(ansible.tasks([move(**params)]))[0]
    assert result["failed"] is True and message in result["msg"] and "\n" not in result["msg"], result
