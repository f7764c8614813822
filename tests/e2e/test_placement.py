"""Declared placement converges by migration: a VM that the inventory moves from h1 to h2 is
migrated live by playbooks/site.yml (check mode shows the move and changes nothing), its guest
goes on without a gap, the second run changes nothing, and no play ever starts a second copy:
not for a VM declared on two hosts, nor while a hypervisor that may run it does not answer."""

from __future__ import annotations

import os

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

NAME = "placed"
VM = {"name": NAME, "vcpus": 1, "memory": 128, "kernel": "builtin:selfcheck", "cmdline": "fill=40 rate=2000 hb=100"}


# The VM site.yml runs on h1 by default (test_site.py), declared as it is.
SELFCHECK_H1 = {"name": "selfcheck-h1", "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck",
                "cmdline": "fill=50 rate=1000 hb=1000"}


def site(ansible, tmp_path, *args, extra_hosts=None, **declared):
    """site.yml with a second inventory that declares ``ferry_vms`` per host (h1=[...], h2=[...])."""
    hosts = {host: {"ferry_vms": vms} for host, vms in declared.items()}
    hosts.update(extra_hosts or {})
    path = os.path.join(tmp_path, f"placement-{len(os.listdir(tmp_path))}.yml")
    with open(path, "w") as handle:
        yaml.safe_dump({"all": {"children": {"hypervisors": {"hosts": hosts}}}}, handle)
    return ansible.site("-i", path, *args)


def where(ansible, name=NAME):
    return {host: (vm or {}).get("state") for host in ("h1", "h2") for vm in [ansible.status(host, name)]}


def test_a_vm_moved_in_the_inventory_migrates_there_once(ansible, engine_installed, tmp_path):
    site(ansible, tmp_path, h1=[VM], h2=[]).expect_ok()
    assert where(ansible) == {"h1": "running", "h2": None}

    checked = site(ansible, tmp_path, "--check", "--diff", h1=[], h2=[VM]).expect_ok()
    if f"changed: [h1] => (item={NAME} to h2)" not in checked.output:
        checked.fail("check mode does not show the planned move")
    assert where(ansible) == {"h1": "running", "h2": None}, "check mode moved the VM"

    moved = site(ansible, tmp_path, h1=[], h2=[VM]).expect_ok()
    if f"changed: [h1] => (item={NAME} to h2)" not in moved.output:
        moved.fail("the move is not in the play's output")
    assert where(ansible) == {"h1": None, "h2": "running"}
    seen = ansible.beats("h2", NAME)
    assert seen == list(range(seen[0], seen[0] + len(seen))), "the heartbeat sequence has a gap"
    assert seen[0] > 10, "the guest on h2 counts from its boot: it started again instead of going on"

    again = site(ansible, tmp_path, h1=[], h2=[VM]).expect_ok()
    for host, counts in again.recap().items():
        if counts["changed"] != 0:
            again.fail(f"{host} changed on the second run")

    site(ansible, tmp_path, h1=[], h2=[dict(VM, state="absent")]).expect_ok()
    assert where(ansible) == {"h1": None, "h2": None}


def test_a_vm_declared_on_two_hosts_is_refused_and_started_nowhere(ansible, engine_installed, tmp_path):
    run = site(ansible, tmp_path, h1=[VM], h2=[VM])
    assert run.rc != 0, run
    if f"{NAME}: declared on h1 and h2; a VM runs on one host" not in run.output:
        run.fail("the refusal does not name the VM and both hosts")
    assert where(ansible) == {"h1": None, "h2": None}


def test_a_silent_hypervisor_holds_a_new_vm_back(ansible, engine_installed, tmp_path):
    # h9 is a hypervisor of the inventory outside this play (--limit) that refuses connections.
    down = {"h9": {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "root"}}
    run = site(ansible, tmp_path, "--limit", "h1,h2", extra_hosts=down, h1=[VM, SELFCHECK_H1], h2=[])
    assert run.rc != 0, run
    if f"{NAME}: h9 did not answer and may run it; not starting a second copy" not in run.output:
        run.fail("the held VM is not reported with the silent host")
    assert where(ansible) == {"h1": None, "h2": None}
    # Only the new VM waits: one that h1 already runs is still brought to its declared state.
    if "selfcheck-h1: running (1 vCPU, 64 MiB)" not in run.output:
        run.fail("h1's other VM was not converged")
