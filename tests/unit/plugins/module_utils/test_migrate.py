"""The pre-flight of ferry.hypervisor.vm_migrate (what blocks a move, with both numbers) and the
receiver's end, against the fake ``ferry --json``."""

from __future__ import annotations

import os

import pytest

from ansible_collections.ferry.hypervisor.plugins.module_utils.migrate import (
    MEMORY_MARGIN_MIB, TokenFile, host_port, migrate_options, preflight)

VM = {"name": "web", "state": "running", "vcpus": 2, "memory": 1024}


def facts(free=8192, cpus=8, committed=2, flags=("avx2", "sse2"), protocol=2, version="0.1.0"):
    return {"memory_free_mib": free, "cpus": cpus, "committed_vcpus": committed,
            "cpu": {"flags": list(flags)}, "engine": {"version": version, "protocol": protocol}}


def check(vm=None, source=None, destination=None):
    return preflight(vm or VM, source or facts(), destination or facts(), ("h1", "h2"))


def test_a_move_that_fits_has_no_blockers_and_an_estimate():
    report = check()
    assert report["blockers"] == [] and report["warnings"] == []
    assert report["memory"] == {"needed_mib": 1024 + MEMORY_MARGIN_MIB, "available_mib": 8192}
    assert report["vcpus"] == {"needed": 2, "committed": 2, "cpus": 8} and report["estimated_seconds"] > 0


def test_too_little_memory_blocks_with_both_numbers():
    report = check(destination=facts(free=1000))
    assert report["blockers"] == [f"memory: h2 has 1000 MiB available, the VM needs {1024 + MEMORY_MARGIN_MIB} "
                                  f"MiB (1024 MiB and a margin of {MEMORY_MARGIN_MIB} MiB)"]


def test_a_stopped_vm_needs_no_memory_there():
    assert check(vm=dict(VM, state="stopped"), destination=facts(free=10))["blockers"] == []


def test_overcommitted_vcpus_warn_and_do_not_block():
    report = check(destination=facts(cpus=4, committed=3))
    assert report["blockers"] == [] and report["warnings"] == ["vcpus: h2 would run 5 vCPUs on 4 CPUs (overcommitted)"]


def test_an_engine_without_cpu_models_is_judged_by_the_linux_flags():
    report = check(source=facts(flags=("avx2", "avx512f", "sse2")))
    assert report["missing_cpu_features"] == ["avx512f"]
    assert report["blockers"][0].startswith("cpu: h2 does not offer CPU features the VM needs: avx512f")


def offering(*features, baseline=True, vendor="AuthenticAMD"):
    host = facts()
    host["cpu"].update(features=list(features), baseline=baseline, vendor=vendor)
    return host


def test_a_running_vm_needs_the_features_it_sees():
    vm = dict(VM, cpu="host", cpu_features=["avx2", "avx512f", "hypervisor", "sse2"])
    report = check(vm=vm, source=offering("avx2", "avx512f", "sse2"), destination=offering("avx2", "sse2"))
    assert report["missing_cpu_features"] == ["avx512f"]
    assert report["blockers"] == ["cpu: h2 does not offer CPU features the VM sees on h1: avx512f (define it with "
                                  "cpu: baseline, or the features both hosts have: the ferry.hypervisor.cpu_baseline "
                                  "filter)"]
    fits = dict(vm, cpu_features=["avx2", "hypervisor", "sse2"])
    assert check(vm=fits, source=offering("avx2", "avx512f", "sse2"), destination=offering("avx2", "sse2"))[
        "blockers"] == []


@pytest.mark.parametrize("cpu, offered, baseline, missing", [
    ("host", ("sse2",), False, []),                      # boots with what the destination has
    ("baseline", ("sse2",), True, []),
    ("baseline", ("sse2",), False, ["(the baseline model)"]),
    (["avx2", "sse2"], ("sse2",), True, ["avx2"]),
])
def test_a_stopped_vm_needs_its_model(cpu, offered, baseline, missing):
    vm = dict(VM, state="stopped", cpu=cpu, cpu_features=None)
    assert check(vm=vm, destination=offering(*offered, baseline=baseline))["missing_cpu_features"] == missing


def test_another_cpu_vendor_warns():
    report = check(source=offering("sse2", vendor="GenuineIntel"), destination=offering("sse2"))
    assert report["blockers"] == []
    assert report["warnings"] == ["cpu: h1's CPU is GenuineIntel, h2's is AuthenticAMD; a guest may not survive "
                                  "the change of vendor"]


def test_another_protocol_blocks_another_engine_version_warns():
    assert check(destination=facts(protocol=3))["blockers"] == ["engine protocol: h1 has 2, h2 has 3"]
    assert check(destination=facts(version="0.2.0"))["warnings"] == ["engine version: h1 has 0.1.0, h2 has 0.2.0"]


@pytest.mark.parametrize("address, expected", [("10.0.0.2", "10.0.0.2:7400"), ("fd00::2", "[fd00::2]:7400"),
                                               ("[fd00::2]", "[fd00::2]:7400"), ("h2.example", "h2.example:7400")])
def test_addresses(address, expected):
    assert host_port(address, 7400) == expected


def test_the_engines_flags_and_no_flag_for_what_is_unset():
    params = {"mode": "live", "transport": "tcp", "max_downtime": 50.0, "timeout": None, "bandwidth": "1G"}
    assert migrate_options(params) == ["--mode", "live", "--transport", "tcp", "--max-downtime", "50.0",
                                       "--bandwidth", "1G"]


def test_the_token_file_is_private_and_gone_afterwards():
    with TokenFile("ab" * 32) as path:
        assert os.stat(path).st_mode & 0o777 == 0o600
        with open(path) as handle:
            assert handle.read() == "ab" * 32
    assert not os.path.exists(path)


@pytest.fixture
def engine(venv, monkeypatch):
    from ansible_collections.ferry.hypervisor.plugins.module_utils import engine as engine_utils
    from ansible_collections.ferry.hypervisor.tests.unit.plugins.module_utils.fake_ferry import FakeFerry
    monkeypatch.setattr(engine_utils, "DEFAULT_VENV", venv)
    cli = FakeFerry()
    return cli, engine_utils.Engine(cli, None)


def test_an_end_in_check_mode_asks_the_engine_nothing(engine):
    from ansible_collections.ferry.hypervisor.plugins.module_utils.migrate import MigrationEnd
    cli, eng = engine
    params = {"name": "web", "step": "send", "token": "ab" * 32}
    assert MigrationEnd(eng, params, check_mode=True).apply() == {"changed": True}
    assert cli.commands == []


def test_an_end_without_the_action_plugins_token_is_refused(engine):
    from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError
    from ansible_collections.ferry.hypervisor.plugins.module_utils.migrate import MigrationEnd
    cli, eng = engine
    with pytest.raises(EngineError, match="^token: the one-time token is made by the vm_migrate action plugin"):
        MigrationEnd(eng, {"name": "web", "step": "receive", "token": None}).apply()
    assert cli.commands == []
