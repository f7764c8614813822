"""One lab of two hosts for the whole e2e session, the engine installed on it once by site.yml,
and an ``ansible`` fixture that drives the real ansible-playbook over SSH (see harness.py).

Like the engine's KVM and lab tests, these fail loudly where /dev/kvm or the lab's tools are
missing; FERRY_ALLOW_NO_KVM=1 or FERRY_ALLOW_NO_LAB=1 turns that into a skip.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from harness import ROOT, Ansible, own_lab


def environment_problem() -> tuple[str, str] | None:
    """(variable that turns the failure into a skip, what is missing), or None."""
    if os.geteuid() != 0:
        return "FERRY_ALLOW_NO_LAB", "the lab needs root"
    from ferry.kvm.fds import Kvm, KvmUnavailable
    try:
        Kvm().close()
    except KvmUnavailable as err:
        return "FERRY_ALLOW_NO_KVM", f"KVM is unusable: {err}"
    return None


@pytest.fixture(scope="session")
def lab_environment():
    """Fails (or skips, as the variable says) where a lab cannot run; links the collection."""
    problem = environment_problem()
    if problem:
        variable, reason = problem
        if os.environ.get(variable) == "1":
            pytest.skip(f"NO LAB: {reason}")
        pytest.fail(f"e2e tests cannot run: {reason} ({variable}=1 skips them instead)")
    subprocess.run([os.path.join(ROOT, "scripts", "link-collection.sh")], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def lab(lab_environment):
    with own_lab(2) as lab:
        yield lab


@pytest.fixture(scope="session")
def ansible(lab):
    return Ansible(lab, os.path.dirname(lab.dir))


@pytest.fixture(scope="module")
def own_ansible(lab_environment):
    """An ``ansible`` on a new lab of two hosts, without the engine, that only this test module uses."""
    with own_lab(2) as lab:
        yield Ansible(lab, os.path.dirname(lab.dir))


# Where the engine role installs and keeps things; each an empty bind mount on a new lab host.
ENGINE_PATHS = ("/opt/ferry", "/var/lib/ferry")


@pytest.fixture(scope="session")
def fresh_check_run(ansible):
    """site.yml --check --diff on the new lab, before the engine is installed (as the first check
    run of new hosts), and what it left in the engine's folders of each host (nothing, it must)."""
    run = ansible.site("--check", "--diff")
    left = {host["name"]: ansible.lab.exec(host["name"], ["find", *ENGINE_PATHS, "-mindepth", "1"],
                                           capture_output=True, text=True, timeout=30).stdout.split()
            for host in ansible.lab.hosts}
    return run, left


@pytest.fixture(scope="session")
def first_site_run(ansible, fresh_check_run):
    """site.yml on the new lab: installs the engine that every other e2e test uses."""
    return ansible.site()


@pytest.fixture
def engine_installed(first_site_run):
    first_site_run.expect_ok()
