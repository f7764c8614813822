"""The ferry.hypervisor.ferry inventory plugin over real SSH against a lab of three hosts of its
own, the engine installed and a VM started on each by playbooks/site.yml: every host's VMs with
groups by host and state, reached both through the lab inventory's connection variables and
through its ssh_config; a stopped leftover of a running VM on another host; a play run on the
VMs it found; and one host cut off, reported and skipped while the others still come."""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml

from harness import BIN, Ansible, own_lab

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

HOSTS = ("h1", "h2", "h3")
PLUGIN = "ferry.hypervisor.ferry"


def selfcheck(host: str) -> str:
    return f"selfcheck-{host}"


@pytest.fixture(scope="module")
def lab3(lab_environment):
    """Ansible over a lab of three hosts, site.yml converged on it, and on h2 a stopped copy of
    h1's VM (as a move that left its source behind), on h3 a stopped VM of its own."""
    with own_lab(3) as lab:
        ansible = Ansible(lab, os.path.dirname(lab.dir))
        ansible.site().expect_ok()
        stopped = {"vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "cmdline": "hb=1000", "state": "stopped"}
        ansible.tasks([{"ferry.hypervisor.vm": dict(stopped, name=selfcheck("h1"))}], host="h2").expect_ok()
        ansible.tasks([{"ferry.hypervisor.vm": dict(stopped, name="spare")}], host="h3").expect_ok()
        yield ansible


def source(ansible, name: str, **options) -> str:
    path = os.path.join(ansible.workdir, name)
    with open(path, "w") as handle:
        yaml.safe_dump(dict({"plugin": PLUGIN, "timeout": 20}, **options), handle)
    return path


def plain(value):
    """A value of ``ansible-inventory --list`` without the marks of data that is never templated."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def listing(run) -> tuple[dict, dict]:
    """(hostvars, group -> its direct hosts) of ``ansible-inventory --list``."""
    run.expect_ok()
    data = plain(json.loads(run.output))
    hostvars = data.pop("_meta")["hostvars"]
    return hostvars, {group: sorted(value.get("hosts", [])) for group, value in data.items()}


def warnings(run) -> str:
    return " ".join(run.errors.split())


def test_inventory_lists_the_vms_of_all_hosts_with_groups_by_host_and_state(lab3):
    ansible = lab3
    vms = source(ansible, "lab.ferry.yml", hosts_from_group="hypervisors", snapshots=True,
                 keyed_groups=[{"key": "ferry_kernel", "prefix": "kernel"}])

    run = ansible.ansible_inventory(ansible.inventory, vms)

    hostvars, groups = listing(run)
    for host in HOSTS:
        vm = hostvars[selfcheck(host)]
        assert (vm["ferry_host"], vm["ferry_state"], vm["ferry_vcpus"], vm["ferry_memory"]) == (host, "running", 1, 64)
        assert vm["ferry_pid"] > 0 and vm["ferry_uptime"] >= 0 and vm["ferry_snapshots"] == []
        assert groups[f"ferry_host_{host}"] == sorted([selfcheck(host)] + (["spare"] if host == "h3" else []))
    assert groups["ferry_state_running"] == [selfcheck(host) for host in HOSTS]
    assert groups["ferry_state_stopped"] == ["spare"]
    assert groups["kernel_builtin_selfcheck"] == sorted([selfcheck(host) for host in HOSTS] + ["spare"])
    # The lab inventory's hypervisors are still there, beside the VMs.
    assert groups["hypervisors"] == list(HOSTS)
    # h1's VM is also on h2, stopped: the running copy is the inventory's, and the warning says so.
    assert hostvars[selfcheck("h1")]["ferry_duplicates"] == [{"host": "h2", "state": "stopped"}]
    assert (f"{PLUGIN}: VM selfcheck-h1 is on h1 (running), h2 (stopped); the inventory has the copy on h1 "
            "(running)") in warnings(run)
    assert "skipped" not in warnings(run)

    graph = ansible.ansible_inventory(ansible.inventory, vms, args=("--graph", "ferry_state_running")).expect_ok()
    assert [line.strip("|- ") for line in graph.output.splitlines()[1:]] == [selfcheck(host) for host in HOSTS]


def test_hosts_reached_through_the_ssh_config(lab3):
    ansible = lab3
    vms = source(ansible, "ssh-config.ferry.yml", hosts=list(HOSTS), ssh_config=ansible.lab.path("ssh_config"))

    hostvars, groups = listing(ansible.ansible_inventory(vms))

    assert sorted(hostvars) == sorted([selfcheck(host) for host in HOSTS] + ["spare"])
    assert all(hostvars[selfcheck(host)]["ferry_host"] == host for host in HOSTS)
    assert groups["ferry_vms"] == sorted(hostvars)


def test_a_play_on_the_vms_found_runs_on_their_hypervisors(lab3):
    ansible = lab3
    vms = source(ansible, "play.ferry.yml", hosts_from_group="hypervisors")
    playbook = os.path.join(ansible.workdir, "on-vms.yml")
    with open(playbook, "w") as handle:
        yaml.safe_dump([{"hosts": "ferry_state_running", "gather_facts": False, "tasks": [
            {"name": "Read the VM on its hypervisor", "ferry.hypervisor.vm_info": {"name": ["{{ inventory_hostname }}"]},
             "delegate_to": "{{ ferry_host }}", "register": "info"},
            {"name": "It runs where the inventory says", "ansible.builtin.assert": {"that": [
                "info.vms | length == 1", "info.vms[0].state == 'running'", "info.vms[0].pid == ferry_pid"]}}]}],
            handle)

    run = ansible.run([os.path.join(BIN, "ansible-playbook"), "-i", ansible.inventory, "-i", vms, playbook]).expect_ok()

    recap = run.recap()
    assert sorted(recap) == [selfcheck(host) for host in HOSTS]
    assert all(recap[name]["failed"] == 0 and recap[name]["ok"] == 2 for name in recap), run


def test_one_host_down_still_gives_the_others(lab3):
    ansible = lab3
    vms = source(ansible, "down.ferry.yml", hosts_from_group="hypervisors", timeout=5)
    ansible.lab.link("h3", down=True)
    try:
        started = time.monotonic()
        run = ansible.ansible_inventory(ansible.inventory, vms)
        seconds = time.monotonic() - started
    finally:
        ansible.lab.link("h3", up=True)

    hostvars, groups = listing(run)
    assert sorted(name for name in hostvars if "ferry_host" in hostvars[name]) == [selfcheck("h1"), selfcheck("h2")]
    assert "ferry_host_h3" not in groups and "spare" not in hostvars
    said = warnings(run)
    assert f"{PLUGIN}: skipped hypervisor h3: " in said, run.errors
    reason = said.split(f"{PLUGIN}: skipped hypervisor h3: ", 1)[1]
    assert reason.startswith(("no answer within 5 s (timeout)", "ssh: connect to host")), reason
    assert "skipped hypervisor h1" not in said and "skipped hypervisor h2" not in said
    # h3 is given up after its timeout while h1 and h2 answer meanwhile.
    assert seconds < 40, seconds

    # Back up, it comes back.
    hostvars = listing(ansible.ansible_inventory(ansible.inventory, vms))[0]
    assert hostvars[selfcheck("h3")]["ferry_host"] == "h3"
