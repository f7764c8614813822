"""The pre-flight of ferry.hypervisor.vm_migrate (what blocks a move, with both numbers) and the
receiver's end, against the fake ``ferry --json``."""

from __future__ import annotations

import os

import pytest

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError
from ansible_collections.ferry.hypervisor.plugins.module_utils.migrate import (
    MEMORY_MARGIN_MIB, MigrationEnd, TokenFile, bad_ssh_option, host_port, migrate_options, preflight, ssh_settings)

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


def test_a_drained_destination_blocks_with_its_reason():
    report = check(destination=dict(facts(), drained={"since": 1.0, "reason": "kernel upgrade"}))
    assert report["blockers"] == ["drained: h2 is drained (kernel upgrade) and takes no arriving VM "
                                  "(ferry undrain there ends that)"]
    assert check(destination=dict(facts(), drained=None))["blockers"] == []


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


TLS_FILES = {"tls_cert": "/etc/ferry/tls/host.pem", "tls_key": "/etc/ferry/tls/host.key",
             "tls_ca": "/etc/ferry/tls/ca.pem"}
TLS_FLAGS = ["--tls-cert=/etc/ferry/tls/host.pem", "--tls-key=/etc/ferry/tls/host.key",
             "--tls-ca=/etc/ferry/tls/ca.pem"]


SSH_MOVE = {"mode": "live", "transport": "ssh", "max_downtime": None, "timeout": None, "bandwidth": None}


def test_over_ssh_only_what_is_set_becomes_a_flag():
    assert migrate_options(dict(SSH_MOVE, ssh_user=None, ssh_port=None, ssh_config=None, ssh_options=None)) == [
        "--mode", "live", "--transport", "ssh"]


def test_over_ssh_the_login_config_and_options_become_flags_a_dash_cannot_turn_into_flags():
    params = dict(SSH_MOVE, ssh_user="-ops", ssh_port=2222, ssh_config="/root/.ssh/migrate.conf",
                  ssh_options=["ProxyJump=bastion", "-oProxyCommand=x"])
    assert migrate_options(params) == ["--mode", "live", "--transport", "ssh", "--ssh-user=-ops", "--ssh-port=2222",
                                       "--ssh-config=/root/.ssh/migrate.conf", "--ssh-option=ProxyJump=bastion",
                                       "--ssh-option=-oProxyCommand=x"]


def test_ssh_flags_only_with_transport_ssh():
    params = dict(SSH_MOVE, transport="tcp", ssh_user="ops", ssh_options=["ProxyJump=bastion"])
    assert migrate_options(params) == ["--mode", "live", "--transport", "tcp"]


@pytest.mark.parametrize("task, inventory, expected", [
    ({}, {"ansible_host": "10.0.0.2"}, (None, None)),
    ({}, {"ansible_user": "ops", "ansible_port": 2222}, ("ops", 2222)),
    ({"ssh_user": "root", "ssh_port": 22}, {"ansible_user": "ops", "ansible_port": 2222}, ("root", 22)),
])
def test_the_ssh_login_is_the_tasks_else_the_destinations_inventory_else_ssh_configs(task, inventory, expected):
    params = dict({"ssh_user": None, "ssh_port": None, "ssh_config": "/etc/ferry/ssh_config",
                   "ssh_options": ["ProxyJump=bastion"]}, **task)
    assert ssh_settings(params, inventory) == {"ssh_user": expected[0], "ssh_port": expected[1],
                                               "ssh_config": "/etc/ferry/ssh_config",
                                               "ssh_options": ["ProxyJump=bastion"]}


@pytest.mark.parametrize("option", ["ProxyJump", "=bastion", "ProxyJump=", "-oProxyJump=x", "User=a\nProxyCommand=x"])
def test_an_ssh_option_that_is_not_key_value_is_one_line_naming_the_option(option):
    message = bad_ssh_option(["ConnectTimeout=5", option])
    assert message == "ssh_options: %r is not KEY=VALUE (an ssh_config keyword, then a value on one line)" % option
    assert "\n" not in message


def test_good_ssh_options_pass():
    assert bad_ssh_option(None) is None
    assert bad_ssh_option(["ProxyJump=root@bastion:2222", "ProxyCommand=ssh -W %h:%p jump"]) is None


class RecordingEngine(object):
    """The two engine calls an end makes, recorded."""

    def __init__(self):
        self.calls = []

    def receive(self, name, listen, token_file, timeout, extra=()):
        self.calls.append(("receive", name, listen, timeout) + ((list(extra),) if extra else ()))
        return {"port": 7400}

    def migrate(self, name, to, token_file, options):
        self.calls.append(("migrate", name, to, options))
        return {"outcome": "committed"}


@pytest.mark.parametrize("transport, listen", [("ssh", "127.0.0.1:7400"), ("tcp", "[::]:7400"), ("tls", "[::]:7400")])
def test_the_receiver_listens_on_the_loopback_only_over_ssh(transport, listen):
    eng = RecordingEngine()
    params = dict(TLS_FILES, name="web", step="receive", token="ab" * 32, transport=transport, port=7400, timeout=60)
    MigrationEnd(eng, params).apply()
    assert eng.calls[0][:4] == ("receive", "web", listen, 120)


def test_the_source_over_ssh_is_given_the_destinations_address_and_login():
    eng = RecordingEngine()
    params = dict(SSH_MOVE, name="web", step="send", token="ab" * 32, address="h2-via-bastion", port=7400,
                  **ssh_settings({"ssh_user": None, "ssh_port": None, "ssh_config": None, "ssh_options": None},
                                 {"ansible_user": "ops", "ansible_port": 2222}))
    assert MigrationEnd(eng, params).apply() == {"changed": True, "report": {"outcome": "committed"}}
    assert eng.calls == [("migrate", "web", "h2-via-bastion:7400",
                          ["--mode", "live", "--transport", "ssh", "--ssh-user=ops", "--ssh-port=2222"])]


def test_over_tls_both_ends_get_their_certificate_key_and_the_ca():
    eng = RecordingEngine()
    receive = dict(TLS_FILES, name="web", step="receive", token="ab" * 32, transport="tls", port=7400, timeout=60)
    MigrationEnd(eng, receive).apply()
    send = dict(SSH_MOVE, transport="tls", name="web", step="send", token="ab" * 32, address="10.0.0.2", port=7400,
                **TLS_FILES)
    MigrationEnd(eng, send).apply()
    assert eng.calls == [("receive", "web", "[::]:7400", 120, TLS_FLAGS),
                         ("migrate", "web", "10.0.0.2:7400", ["--mode", "live", "--transport", "tls"] + TLS_FLAGS)]


def test_tls_files_are_flags_only_with_transport_tls():
    assert migrate_options(dict(SSH_MOVE, transport="tcp", **TLS_FILES)) == ["--mode", "live", "--transport", "tcp"]


@pytest.mark.parametrize("given", [{}, {"tls_cert": "/c.pem", "tls_key": "/k.pem"}])
def test_transport_tls_without_its_files_is_refused_naming_them(given):
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible_collections.ferry.hypervisor.plugins.module_utils.migrate import MOVE_OPTIONS, MOVE_REQUIRED_IF

    validation = ArgumentSpecValidator(MOVE_OPTIONS, required_if=MOVE_REQUIRED_IF).validate(
        dict(given, name="web", to="h2", transport="tls"))
    assert len(validation.error_messages) == 1
    assert "transport is tls but all of the following are missing" in validation.error_messages[0] or \
        "transport is tls but" in validation.error_messages[0]
    assert "tls_ca" in validation.error_messages[0]


class BusyPorts(RecordingEngine):
    """An engine whose first ``busy`` ports are taken."""

    def __init__(self, busy):
        super(BusyPorts, self).__init__()
        self.busy = busy

    def receive(self, name, listen, token_file, timeout, extra=()):
        port = int(listen.rsplit(":", 1)[1])
        self.calls.append(("receive", port))
        if port < 7400 + self.busy:
            raise EngineError("listen on %s: Address already in use" % listen)
        return {"port": port}


def test_a_receiver_takes_the_next_free_port_after_recent_arrivals():
    eng = BusyPorts(busy=2)
    params = {"name": "web", "step": "receive", "token": "ab" * 32, "transport": "tcp", "port": 7400, "timeout": 60}
    assert MigrationEnd(eng, params).apply()["receiver"] == {"port": 7402}
    assert eng.calls == [("receive", 7400), ("receive", 7401), ("receive", 7402)]


def test_all_ports_taken_is_one_line_naming_the_range():
    params = {"name": "web", "step": "receive", "token": "ab" * 32, "transport": "tcp", "port": 7400, "timeout": 60}
    with pytest.raises(EngineError, match=r"^port: 7400 to 7415 are all in use on this host"):
        MigrationEnd(BusyPorts(busy=100), params).apply()


def test_another_receiver_failure_is_not_retried():
    class Refusing(RecordingEngine):
        def receive(self, *args, **kwargs):
            self.calls.append("receive")
            raise EngineError("receive web: this host is drained")
    eng = Refusing()
    params = {"name": "web", "step": "receive", "token": "ab" * 32, "transport": "tcp", "port": 7400, "timeout": 60}
    with pytest.raises(EngineError, match="drained"):
        MigrationEnd(eng, params).apply()
    assert eng.calls == ["receive"]


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
