"""playbooks/site.yml against a two-host lab over real SSH: converges, is idempotent, and its
check and diff modes predict a change without making it, also on new hosts without the engine."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

HOSTS = ("h1", "h2")
CHANGED_CMDLINE = "fill=50 rate=1000 hb=500"


def selfcheck(host: str) -> str:
    return f"selfcheck-{host}"


def test_check_mode_on_new_hosts_predicts_and_installs_nothing(fresh_check_run):
    run, left = fresh_check_run
    run.expect_ok()
    recap = run.recap()
    assert set(recap) == set(HOSTS), run
    for host in HOSTS:
        assert recap[host]["failed"] == 0 and recap[host]["changed"] > 0, run
        assert left[host] == [], f"check mode left {left[host]} on {host}"
    # Each host's VM task predicts the new VM, says why it could not ask the engine, and diffs it.
    warning = ("the Ferry engine is not installed here yet; assuming the ferry.hypervisor.engine role "
               "installs it")
    # (Ansible shows a warning repeated by several hosts once.)
    if warning not in " ".join((run.output + run.errors).split()):
        run.fail("the VM tasks did not warn that the engine is not installed yet")
    for line in ('-    "state": "absent"', '+    "kernel": "builtin:selfcheck",', '+    "state": "running"'):
        if line not in run.output:
            run.fail(f"the diff lacks {line!r}")
    for host in HOSTS:
        if f"{selfcheck(host)}: running (1 vCPU, 64 MiB)" not in run.output:
            run.fail(f"the summary lacks the predicted {selfcheck(host)}")


def test_site_converges(ansible, first_site_run):
    first_site_run.expect_ok()
    recap = first_site_run.recap()
    assert set(recap) == set(HOSTS), first_site_run
    for host in HOSTS:
        assert recap[host]["failed"] == 0 and recap[host]["unreachable"] == 0, first_site_run
        assert recap[host]["changed"] > 0, first_site_run
        vm = ansible.status(host, selfcheck(host))
        assert vm is not None, f"{selfcheck(host)} is not defined on {host}"
        assert (vm["state"], vm["vcpus"], vm["memory"], vm["kernel"]) == ("running", 1, 64, "builtin:selfcheck")
        assert f"{selfcheck(host)}: running (1 vCPU, 64 MiB)" in first_site_run.output


def test_second_run_changes_nothing(ansible, engine_installed):
    run = ansible.site().expect_ok()
    recap = run.recap()
    assert set(recap) == set(HOSTS), run
    for host in HOSTS:
        if recap[host]["changed"] != 0:
            run.fail(f"{host} changed on the second run")


def test_check_mode_predicts_a_changed_definition_and_changes_nothing(ansible, engine_installed):
    before = {host: ansible.status(host, selfcheck(host)) for host in HOSTS}
    vms = [{"name": "selfcheck-{{ inventory_hostname }}", "vcpus": 1, "memory": 64,
            "kernel": "builtin:selfcheck", "cmdline": CHANGED_CMDLINE}]

    run = ansible.site("--check", "--diff", "-e", json.dumps({"ferry_vms": vms})).expect_ok()

    recap = run.recap()
    for host in HOSTS:
        if recap[host]["changed"] != 1:
            run.fail(f"{host}: expected only the VM task to change")
        after = ansible.status(host, selfcheck(host))
        assert after == before[host], f"check mode changed {selfcheck(host)} on {host}"
        assert after["cmdline"] != CHANGED_CMDLINE
    # --diff shows the stored definition against the one the task would store.
    for line in ("--- before", "+++ after", '-    "cmdline": "fill=50 rate=1000 hb=1000",',
                 f'+    "cmdline": "{CHANGED_CMDLINE}",'):
        if line not in run.output:
            run.fail(f"the diff lacks {line!r}")
