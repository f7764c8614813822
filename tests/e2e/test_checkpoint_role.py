"""The ferry.hypervisor.checkpoint role through ansible-playbook over real SSH to a lab host with
real KVM and the lab host's own cron daemon: the policy and schedule installed, a second run
changing nothing, cron taking a ``frequently`` checkpoint within its interval, a bad policy
refused with the engine's line, check mode on a host without the engine, and absent."""

from __future__ import annotations

import json
import os
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

HOST = "h2"
NAME = "ckpt-role"
VM = {"name": NAME, "vcpus": 1, "memory": 32, "kernel": "builtin:selfcheck", "cmdline": "fill=5 hb=200",
      "state": "running"}
CRON_FILE = "/etc/cron.d/ferry-checkpoint"
POLICY_FILE = "/etc/ferry/checkpoints.yaml"
# Due once a month and once a year: a second run within the test never finds a new slot.
RARE = {"vms": {NAME: {"monthly": 2, "yearly": 1}}}


def play(ansible, policy, *args, **role_vars):
    """The role on HOST (after the VM is up), as an operator's playbook would apply it."""
    path = os.path.join(ansible.workdir, f"checkpoint-{time.monotonic_ns()}.yml")
    vars_ = {"checkpoint_policy": policy, **role_vars}
    with open(path, "w") as handle:
        json.dump([{"hosts": HOST, "gather_facts": False,
                    "pre_tasks": [{"name": "The VM", "ferry.hypervisor.vm": VM}],
                    "roles": [{"role": "ferry.hypervisor.checkpoint", "vars": vars_}]}], handle)
    return ansible.playbook(path, *args)


def checkpoints(ansible):
    listing = json.loads(ansible.ferry(HOST, "--json", "snapshot", "list", NAME).stdout)
    return [snap["id"] for snap in listing if snap["origin"]["kind"] == "checkpoint"]


@pytest.fixture
def clean(ansible, engine_installed):
    yield
    play(ansible, {}, "-e", "checkpoint_state=absent")
    ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}], host=HOST)


def test_the_role_installs_policy_and_schedule_and_a_second_run_changes_nothing(ansible, clean):
    first = play(ansible, RARE, "--diff").expect_ok()
    assert first.recap()[HOST]["changed"] >= 3, first.output  # policy, cron entry, the first checkpoint
    assert "took ckpt-" in first.output
    assert checkpoints(ansible) and len(checkpoints(ansible)) == 1
    cron = ansible.read(HOST, CRON_FILE)
    assert "*/15 * * * * root /opt/ferry/venv/bin/ferry checkpoint run --policy /etc/ferry/checkpoints.yaml" in cron
    assert "yearly: 1" in ansible.read(HOST, POLICY_FILE)

    again = play(ansible, RARE).expect_ok()
    assert again.recap()[HOST]["changed"] == 0, again.output
    checked = play(ansible, RARE, "--check").expect_ok()
    assert checked.recap()[HOST]["changed"] == 0, checked.output

    # A new policy: check mode shows it would change, and changes nothing.
    more = {"vms": {NAME: {"monthly": 2, "yearly": 1, "daily": 3}}}
    predicted = play(ansible, more, "--check", "--diff").expect_ok()
    assert predicted.recap()[HOST]["changed"] >= 1 and "+    daily: 3" in predicted.output, predicted.output
    assert "daily: 3" not in ansible.read(HOST, POLICY_FILE) and len(checkpoints(ansible)) == 1


def test_cron_takes_a_frequently_checkpoint_within_its_interval(ansible, clean):
    play(ansible, {"vms": {NAME: {"frequently": 3, "frequent_minutes": 1}}}).expect_ok()
    assert "* * * * * root" in ansible.read(HOST, CRON_FILE) or "*/1 * * * * root" in ansible.read(HOST, CRON_FILE)
    by_role = checkpoints(ansible)
    deadline = time.monotonic() + 150  # the next minute, plus cron's own second or two, plus the save
    while time.monotonic() < deadline and not set(checkpoints(ansible)) - set(by_role):
        time.sleep(3)
    taken = set(checkpoints(ansible)) - set(by_role)
    assert taken, f"cron took no checkpoint in 150 s; log: {ansible.read(HOST, '/var/lib/ferry/checkpoint.log')}"
    assert f"{NAME}: took ckpt-" in ansible.read(HOST, "/var/lib/ferry/checkpoint.log")
    assert ansible.beats(HOST, NAME), "the guest stopped beating"


def test_a_bad_policy_fails_with_the_engines_line_and_the_old_one_stays(ansible, clean):
    play(ansible, RARE).expect_ok()
    bad = play(ansible, {"vms": {NAME: {"dayly": 7}}})
    assert bad.rc != 0
    assert "'dayly' is not a policy key" in bad.output, bad.output
    assert "yearly: 1" in ansible.read(HOST, POLICY_FILE)


def test_check_mode_on_a_host_without_the_engine_predicts_and_writes_nothing(ansible, engine_installed):
    run = play(ansible, RARE, "--check", "-e", "checkpoint_engine_venv=/opt/ferry/none",
               "-e", "checkpoint_policy_file=/etc/ferry/fresh/checkpoints.yaml")
    run.expect_ok()
    assert not ansible.exists(HOST, "/etc/ferry/fresh")
    ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}], host=HOST)


def test_replication_to_another_host_and_the_vm_back_from_its_replica(ansible, clean):
    """The role's run sends the checkpoint to h1 over the source's own ssh (the lab's ssh config);
    when h2's VM is gone, h1 restores it from the replica and the guest goes on from there."""
    run = play(ansible, RARE, "-e", "checkpoint_replicate_to=h1",
               "-e", "checkpoint_replicate_ssh_config={{ ferry_lab_dir }}/ssh_config").expect_ok()
    assert "replicated to " in run.output, run.output
    assert "--replicate-to" in ansible.read(HOST, CRON_FILE)
    (taken,) = checkpoints(ansible)
    replicas = json.loads(ansible.ferry("h1", "--json", "checkpoint", "replicas", NAME).stdout)
    assert [r["id"] for r in replicas] == [taken]
    assert ansible.status("h1", NAME) is None, "a replica must not define the VM on its host"
    beats_before = ansible.beats(HOST, NAME)
    ansible.ferry(HOST, "poweroff", NAME)
    restored = ansible.ferry("h1", "--json", "restore", NAME, taken)
    assert restored.returncode == 0, restored.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(ansible.beats("h1", NAME)) < 3:
        time.sleep(1)
    after = ansible.beats("h1", NAME)
    assert after and after[0] <= beats_before[-1], (after[:3], beats_before[-1])
    assert after == list(range(after[0], after[0] + len(after))), "the heartbeat sequence has a gap"
    ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}], host="h1")


def test_absent_removes_the_schedule_and_keeps_the_checkpoints(ansible, clean):
    play(ansible, RARE).expect_ok()
    kept = checkpoints(ansible)
    removed = play(ansible, {}, "-e", "checkpoint_state=absent").expect_ok()
    assert removed.recap()[HOST]["changed"] >= 1
    assert not ansible.exists(HOST, CRON_FILE) and not ansible.exists(HOST, POLICY_FILE)
    assert checkpoints(ansible) == kept
    assert play(ansible, {}, "-e", "checkpoint_state=absent").expect_ok().recap()[HOST]["changed"] == 0
