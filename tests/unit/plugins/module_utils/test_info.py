"""vm_info and host_info against the fake ``ferry --json`` (whose answers the snapshot contract
test keeps true to the real engine): the facts, the filter by name, and the snapshot age."""

from __future__ import annotations

import json
import time

import pytest

from ansible_collections.ferry.hypervisor.plugins.module_utils import engine as engine_utils
from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import Engine, EngineError
from ansible_collections.ferry.hypervisor.plugins.module_utils.info import HostInfo, VmInfo, created_epoch
from ansible_collections.ferry.hypervisor.tests.unit.plugins.module_utils.fake_ferry import NAME, FakeFerry


@pytest.fixture(autouse=True)
def engine_venv(venv, monkeypatch):
    monkeypatch.setattr(engine_utils, "DEFAULT_VENV", venv)


@pytest.fixture
def host(tmp_path):
    """Two VMs, one running with a snapshot, one stopped."""
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    definition = {"vcpus": 2, "memory": 64, "kernel": str(kernel), "cmdline": ""}
    cli = FakeFerry()
    for name in (NAME, "idle"):
        cli.answer("define", [], ["-"], json.dumps(dict(definition, name=name)))
    cli.answer("start", [NAME], [], None)
    cli.answer("snapshot create", [NAME], ["--snapshot", "s1"], None)
    cli.calls = []
    return cli


def info(cli, **params):
    values = {"name": [], "snapshots": True, "state_dir": None, "engine_venv": None}
    values.update(params)
    return VmInfo(Engine(cli, None), values).apply()


def test_every_vm_with_its_snapshots_and_their_age(host):
    cli = host
    result = info(cli)
    assert result["changed"] is False and cli.calls == []
    vms = {vm["name"]: vm for vm in result["vms"]}
    assert sorted(vms) == ["idle", NAME]
    assert [s["id"] for s in vms[NAME]["snapshots"]] == ["s1"] and vms["idle"]["snapshots"] == []
    age = time.time() - created_epoch(vms[NAME]["snapshots"][0]["created"])
    assert vms[NAME]["last_snapshot_age"] == pytest.approx(age, abs=5)
    assert vms["idle"]["last_snapshot_age"] is None and vms[NAME]["migration"] is None


def test_only_the_named_vms_and_an_unknown_name_is_named(host):
    cli = host
    assert [vm["name"] for vm in info(cli, name=["idle"])["vms"]] == ["idle"]
    with pytest.raises(EngineError, match=r"^name: no VM named 'nope', '\.\./x' on this host$"):
        info(cli, name=["idle", "nope", "../x"])


def test_without_snapshots_one_call_for_all(host):
    cli = host
    result = info(cli, snapshots=False)
    assert all(vm["snapshots"] is None and vm["last_snapshot_age"] is None for vm in result["vms"])
    assert [command[0][2] for command in cli.commands[-1:]] == ["list"]


@pytest.mark.parametrize("text, epoch", [
    ("1970-01-01T00:01:00Z", 60.0), ("1970-01-01T00:00:01.5Z", 1.5),
    ("yesterday", None), ("1970-01-01T00:00:01", None), (None, None), ("1970-13-01T00:00:00Z", None),
])
def test_engine_timestamps(text, epoch):
    assert created_epoch(text) == epoch


def test_host_facts_with_what_is_committed(host):
    cli = host
    facts = HostInfo(Engine(cli, None), {}).apply()["host"]
    assert (facts["committed_vcpus"], facts["committed_memory_mib"]) == (2, 64)
    assert facts["cpu"]["flags"] and [vm["name"] for vm in facts["vms"]] == ["idle", NAME]
