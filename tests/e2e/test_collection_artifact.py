"""The collection as a user gets it: ansible-galaxy collection build makes a tarball with the
license and the changelog and without the checkout's own files; installed with ansible-galaxy
into an empty collections path (the only one Ansible is given, so the checkout's link is not
used), it installs the engine on two bare lab hosts with its role, builds the engine's wheel
from its own copy of the sources, and runs a VM, takes a snapshot and moves the VM live."""

from __future__ import annotations

import json
import os
import shutil
import tarfile

import pytest

from harness import BIN, FERRY, ROOT, task_results

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

NAME = "from-tarball"
VM = {"name": NAME, "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "cmdline": "fill=5 hb=100"}
SHIPPED = ("LICENSE", "CHANGELOG.rst", "README.md", "MANIFEST.json", "meta/runtime.yml", "changelogs/changelog.yaml",
           "plugins/modules/vm.py", "plugins/modules/vm_snapshot.py", "plugins/modules/vm_migrate.py",
           "roles/engine/tasks/main.yml", "engine/pyproject.toml", "engine/guests/selfcheck/Makefile")
# The checkout's own files and what tools leave in it; the folders are made for the build when
# missing, so that leaving them out is seen to happen.
LEFT_OUT = ("ansible.cfg", "scripts/", ".ansible/", "tests/output/", ".venv/", "lab/", ".ci/", "collections/", ".git")
MADE_FOR_THE_BUILD = (".ansible", "tests/output", "lab")


@pytest.fixture(scope="module")
def artifact(own_ansible):
    """The tarball ansible-galaxy builds from the checkout, and the paths in it."""
    made = [path for path in MADE_FOR_THE_BUILD if not os.path.exists(os.path.join(ROOT, path))]
    for path in made:
        os.makedirs(os.path.join(ROOT, path))
        open(os.path.join(ROOT, path, "left-by-a-tool"), "w").close()
    try:
        out = os.path.join(own_ansible.workdir, "dist")
        own_ansible.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", out,
                         ROOT]).expect_ok()
    finally:
        for path in made:
            shutil.rmtree(os.path.join(ROOT, path))
    (tarball,) = [os.path.join(out, name) for name in os.listdir(out)]
    with tarfile.open(tarball) as archive:
        return tarball, [member.name + ("/" if member.isdir() else "") for member in archive.getmembers()]


@pytest.fixture(scope="module")
def installed(own_ansible, artifact):
    """The environment of a user whose Ansible knows only the collection installed from the tarball."""
    collections = os.path.join(own_ansible.workdir, "collections")
    config = os.path.join(own_ansible.workdir, "ansible.cfg")
    with open(config, "w") as handle:
        handle.write(f"[defaults]\ncollections_path = {collections}\n[ssh_connection]\npipelining = true\n")
    env = {"ANSIBLE_CONFIG": config, "ANSIBLE_COLLECTIONS_PATH": collections}
    own_ansible.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", artifact[0], "-p", collections],
                    **env).expect_ok()
    return collections, env


def test_the_tarball_ships_the_license_and_changelog_and_none_of_the_checkout(artifact):
    paths = artifact[1]

    assert [path for path in SHIPPED if path not in paths] == []
    assert [path for path in paths if path.startswith(LEFT_OUT)] == []
    assert [path for path in paths if "__pycache__" in path or path.endswith((".pyc", ".tar.gz"))] == []
    with tarfile.open(artifact[0]) as archive:
        license_text = archive.extractfile("LICENSE").read().decode()
    assert license_text.split()[:6] == ["GNU", "GENERAL", "PUBLIC", "LICENSE", "Version", "3,"], license_text[:200]


def test_the_installed_collection_runs_the_role_a_vm_a_snapshot_and_a_live_move(own_ansible, installed):
    collections, env = installed
    where = own_ansible.run([os.path.join(BIN, "ansible-galaxy"), "collection", "list", "ferry.hypervisor",
                             "--format", "json"], **env).expect_ok()
    assert list(json.loads(where.output)) == [os.path.join(collections, "ansible_collections")], where.output

    # The role builds the engine's wheel from the installed copy's sources: a build cache of this
    # test's own, so that no wheel the checkout built earlier is taken instead.
    playbook = os.path.join(own_ansible.workdir, "engine.yml")
    with open(playbook, "w") as handle:
        json.dump([{"name": "Install the engine", "hosts": "hypervisors", "gather_facts": False,
                    "roles": [{"role": "ferry.hypervisor.engine",
                               "vars": {"engine_build_cache": os.path.join(own_ansible.workdir, "wheels")}}]}],
                  handle)
    run = own_ansible.playbook(playbook, **env).expect_ok()
    recap = run.recap()
    assert set(recap) == {"h1", "h2"}, run
    for host in ("h1", "h2"):
        assert recap[host]["failed"] == 0 and recap[host]["changed"] > 0, run
        assert own_ansible.exists(host, FERRY), f"no engine on {host}"
    built = [name for name in os.listdir(os.path.join(own_ansible.workdir, "wheels"))
             if os.path.isfile(os.path.join(own_ansible.workdir, "wheels", name, "wheelhouse.json"))]
    assert len(built) == 1, built

    run = own_ansible.tasks([
        {"ferry.hypervisor.vm": dict(VM, state="running")},
        {"ferry.hypervisor.vm_snapshot": {"name": NAME, "snapshot": "before-move"}},
        {"ferry.hypervisor.vm_migrate": {"name": NAME, "to": "h2"}},
    ], host="h1", **env)
    started, snapshot, moved = task_results(run.expect_ok())
    assert started["changed"] is True and started["vm"]["state"] == "running", started
    assert snapshot["changed"] is True and snapshot["snapshot"]["id"] == "before-move", snapshot
    assert moved["moved"] is True and moved["report"]["outcome"] == "committed", moved
    assert own_ansible.status("h1", NAME) is None, "the VM is still defined on the source"
    assert own_ansible.status("h2", NAME)["state"] == "running"
