"""VmManager against a fake ``ferry --json`` (a fake ``module.run_command``): which engine commands
each (current, desired) pair runs, ``changed``, check mode, the diff, refusals and how failures
reach the module; and the contract that keeps the fake honest against the real command."""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest

from ferry.errors import FerryError

from ansible_collections.ferry.hypervisor.plugins.module_utils import engine as engine_utils
from ansible_collections.ferry.hypervisor.plugins.module_utils import common
from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import (
    NOT_INSTALLED_YET, Engine, EngineError)
from ansible_collections.ferry.hypervisor.plugins.module_utils.vm_manager import VmManager
from ansible_collections.ferry.hypervisor.tests.unit.plugins.module_utils.fake_ferry import (
    NAME, FakeFerry, outcome, real_ferry_module)


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF")
    return str(path)


def make_vm(kernel, state, **changes):
    vm = {"name": NAME, "vcpus": 1, "memory": 64, "kernel": kernel, "initrd": None, "cmdline": "hb=1000",
          "cpu": "host", "state": state, "error": "killed" if state == "crashed" else None,
          "pid": 4242 if state in ("running", "paused") else None, "boot_count": 1,
          "started_at": 1.0e9 if state in ("running", "paused") else None,
          "path": f"/var/lib/ferry/vms/{NAME}", "console_log": "console.log", "restored_from": None}
    vm.update(changes)
    return vm


def make_params(kernel_path, state, **changes):
    params = {"name": NAME, "state": state, "vcpus": 1, "memory": 64, "kernel": kernel_path, "initrd": None,
              "cmdline": "hb=1000", "cpu": None, "stop_timeout": 30, "state_dir": None, "engine_venv": None}
    params.update(changes)
    return params


@pytest.fixture(autouse=True)
def engine_venv(venv, monkeypatch):
    """Modules of these tests find an engine command in the default venv."""
    monkeypatch.setattr(engine_utils, "DEFAULT_VENV", venv)


def engine_for(cli, state_dir=None):
    return Engine(cli, state_dir)


def apply(cli, params, check_mode=False):
    return VmManager(engine_for(cli, params["state_dir"]), params, check_mode).apply()


# (current state, desired state) -> engine calls, for an unchanged definition.
TABLE = {
    ("absent", "present"): ["define"],
    ("absent", "running"): ["define", "start"],
    ("absent", "stopped"): ["define"],
    ("absent", "paused"): ["define", "start", "pause"],
    ("absent", "absent"): [],
    ("stopped", "present"): [],
    ("stopped", "running"): ["start"],
    ("stopped", "stopped"): [],
    ("stopped", "paused"): ["start", "pause"],
    ("stopped", "absent"): ["undefine"],
    ("crashed", "present"): [],
    ("crashed", "running"): ["start"],
    ("crashed", "stopped"): [],
    ("crashed", "paused"): ["start", "pause"],
    ("crashed", "absent"): ["undefine"],
    ("running", "present"): [],
    ("running", "running"): [],
    ("running", "stopped"): ["stop"],
    ("running", "paused"): ["pause"],
    ("running", "absent"): ["poweroff", "undefine"],
    ("paused", "present"): [],
    ("paused", "running"): ["resume"],
    ("paused", "stopped"): ["resume", "stop"],
    ("paused", "paused"): [],
    ("paused", "absent"): ["poweroff", "undefine"],
}

# The run state each desired state leaves the VM in, by current state.
RESULT_STATE = {
    "present": {"absent": "stopped"},
    "running": {},
    "paused": {},
    "stopped": {"crashed": "crashed"},
    "absent": {},
}


def expected_state(current, target):
    if target == "present":
        return RESULT_STATE["present"].get(current, current)
    return RESULT_STATE[target].get(current, target)


@pytest.mark.parametrize("current,target", sorted(TABLE))
def test_state_table(kernel, current, target):
    cli = FakeFerry(None if current == "absent" else make_vm(kernel, current))
    result = apply(cli, make_params(kernel, target))

    assert cli.calls == TABLE[current, target]
    assert result["changed"] is bool(TABLE[current, target])
    assert result["vm"]["state"] == expected_state(current, target)
    assert result["diff"]["before"]["state"] == current
    assert result["diff"]["after"]["state"] == expected_state(current, target)
    assert result["warnings"] == []


@pytest.mark.parametrize("current,target", sorted(TABLE))
def test_check_mode_predicts_without_calls(kernel, current, target):
    vm = None if current == "absent" else make_vm(kernel, current)
    checked = FakeFerry(copy.deepcopy(vm))
    predicted = apply(checked, make_params(kernel, target), check_mode=True)
    real = apply(FakeFerry(copy.deepcopy(vm)), make_params(kernel, target))

    assert checked.calls == []
    assert checked.vm == vm
    assert predicted["changed"] == real["changed"]
    assert predicted["diff"] == real["diff"]
    assert predicted["vm"]["state"] == real["vm"]["state"]
    assert predicted["vm"].get("error") == real["vm"].get("error")


def test_diff_shows_definition_before_and_after(kernel):
    cli = FakeFerry(make_vm(kernel, "stopped"))
    result = apply(cli, make_params(kernel, "running", cmdline="hb=500", vcpus=2))

    assert cli.calls == ["define", "start"]
    before, after = result["diff"]["before"], result["diff"]["after"]
    assert (before["cmdline"], before["vcpus"], before["state"]) == ("hb=1000", 1, "stopped")
    assert (after["cmdline"], after["vcpus"], after["state"]) == ("hb=500", 2, "running")
    keys = {"name", "vcpus", "memory", "kernel", "initrd", "cmdline", "cpu", "tags", "state"}
    assert set(before) == set(after) == keys


def test_diff_of_a_new_and_a_removed_vm(kernel):
    created = apply(FakeFerry(), make_params(kernel, "present"))
    assert created["diff"]["before"] == {"name": NAME, "state": "absent"}
    assert created["diff"]["after"]["kernel"] == kernel

    removed = apply(FakeFerry(make_vm(kernel, "running")), make_params(kernel, "absent"))
    assert removed["diff"]["after"] == {"name": NAME, "state": "absent"}
    assert removed["vm"] == {"name": NAME, "state": "absent"}


def test_omitted_options_keep_the_stored_definition(kernel):
    cli = FakeFerry(make_vm(kernel, "running", cmdline="keep me", initrd=kernel))
    params = make_params(kernel, "running", vcpus=None, memory=None, kernel=None, cmdline=None)
    result = apply(cli, params)

    assert cli.calls == []
    assert result["changed"] is False
    assert result["vm"]["cmdline"] == "keep me"


def test_empty_initrd_removes_it(kernel):
    cli = FakeFerry(make_vm(kernel, "stopped", initrd=kernel))
    result = apply(cli, make_params(kernel, "present", initrd=""))

    assert cli.calls == ["define"]
    assert result["vm"]["initrd"] is None


@pytest.mark.parametrize("current", ["running", "paused"])
@pytest.mark.parametrize("target", ["present", "running", "paused"])
@pytest.mark.parametrize("key,value", [("vcpus", 2), ("memory", 128)])
def test_resizing_an_active_vm_is_refused(kernel, current, target, key, value):
    cli = FakeFerry(make_vm(kernel, current))
    with pytest.raises(EngineError) as failure:
        apply(cli, make_params(kernel, target, **{key: value}))

    message = str(failure.value)
    assert message.startswith(f"{key}: cannot change while VM '{NAME}' is {current}")
    assert "stop it first" in message
    assert cli.calls == []


def test_resizing_with_state_stopped_stops_then_redefines(kernel):
    cli = FakeFerry(make_vm(kernel, "running"))
    result = apply(cli, make_params(kernel, "stopped", memory=128))

    assert cli.calls == ["stop", "define"]
    assert result["vm"]["memory"] == 128
    assert result["vm"]["state"] == "stopped"


def test_other_changes_to_a_running_vm_are_stored_with_a_warning(kernel):
    cli = FakeFerry(make_vm(kernel, "running"))
    result = apply(cli, make_params(kernel, "running", cmdline="hb=250"))

    assert cli.calls == ["define"]
    assert result["changed"] is True
    assert result["warnings"] == [f"VM '{NAME}' is running: the new cmdline takes effect when it next starts"]


def test_tags_of_a_running_vm_change_at_once_without_a_warning_and_not_twice(kernel):
    cli = FakeFerry(make_vm(kernel, "running"))
    result = apply(cli, make_params(kernel, "running", tags=["web", "db", "db"]))
    assert (cli.calls, result["changed"], result["warnings"]) == (["define"], True, [])
    assert result["vm"]["tags"] == ["db", "web"]
    again = apply(cli, make_params(kernel, "running", tags=["web", "db"]))
    assert again["changed"] is False
    assert apply(cli, make_params(kernel, "running"))["changed"] is False  # not given: kept
    assert apply(cli, make_params(kernel, "running", tags=[]))["vm"]["tags"] == []


def test_a_bad_tag_is_the_engines_one_line(kernel):
    cli = FakeFerry(make_vm(kernel, "running"))
    with pytest.raises(EngineError, match=r"tags: '\.\./x' is not a valid tag"):
        apply(cli, make_params(kernel, "running", tags=["../x"]))


@pytest.mark.parametrize("target", ["present", "running", "stopped", "paused"])
def test_creating_needs_vcpus_memory_and_kernel(kernel, target):
    cli = FakeFerry()
    with pytest.raises(EngineError) as failure:
        apply(cli, make_params(kernel, target, memory=None, kernel=None))

    assert str(failure.value) == (f"memory: required to create VM '{NAME}', which is not defined on this host "
                                  "(missing: memory, kernel)")
    assert cli.calls == []


def test_absent_needs_no_definition(kernel):
    cli = FakeFerry()
    result = apply(cli, make_params(kernel, "absent", vcpus=None, memory=None, kernel=None))
    assert result["changed"] is False


def test_engine_validation_fails_before_any_change(kernel):
    cli = FakeFerry(make_vm(kernel, "running"))
    with pytest.raises(EngineError) as failure:
        apply(cli, make_params(kernel, "stopped", memory=63))

    assert str(failure.value) == "memory: 63 MiB must be a multiple of 2 MiB"
    assert cli.calls == []


class FakeModule:
    """What ``common.run`` uses of AnsibleModule; ``run_command`` is the fake ``ferry``'s."""

    def __init__(self, params, cli, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self.run_command = cli.run_command
        self.warnings = []
        self.result = None

    def warn(self, text):
        self.warnings.append(text)

    def exit_json(self, **result):
        self.result = dict(result, failed=False)
        raise SystemExit(0)

    def fail_json(self, **result):
        self.result = dict(result, failed=True)
        raise SystemExit(1)


def run_module(cli, params, check_mode=False):
    module = FakeModule(params, cli, check_mode)
    with pytest.raises(SystemExit):
        common.run(module, VmManager)
    return module


def test_engine_errors_become_one_failure_message(kernel):
    cli = FakeFerry()
    answer = cli.answer

    def broken_start(command, positional, options, data):
        if command == "start":
            raise FerryError(f"{positional[0]}: could not start: no KVM")
        return answer(command, positional, options, data)

    cli.answer = broken_start
    module = run_module(cli, make_params(kernel, "running"))

    assert module.result == {"msg": f"{NAME}: could not start: no KVM", "changed": True, "failed": True,
                             "error_kind": "error"}


def test_a_failure_before_any_change_is_not_changed(kernel):
    module = run_module(FakeFerry(make_vm(kernel, "running")), make_params(kernel, "running", vcpus=4))
    assert module.result["failed"] is True
    assert module.result["changed"] is False
    assert module.result["msg"].startswith("vcpus: cannot change")


def test_success_reports_vm_diff_and_warnings(kernel):
    module = run_module(FakeFerry(make_vm(kernel, "running")), make_params(kernel, "running", cmdline=""))
    assert module.result["failed"] is False
    assert module.result["changed"] is True
    assert module.result["vm"]["cmdline"] == ""
    assert set(module.result) == {"changed", "vm", "diff", "failed"}
    assert module.warnings == [f"VM '{NAME}' is running: the new cmdline takes effect when it next starts"]


def test_a_change_refused_in_the_middle_of_a_migration_is_the_engines_message(kernel):
    cli = FakeFerry(make_vm(kernel, "running"), busy=True)
    module = run_module(cli, make_params(kernel, "stopped"))
    assert module.result["failed"] is True and module.result["changed"] is False
    assert module.result["msg"] == f"{NAME}: busy migrating to 10.0.0.2:7400; stop is refused until it ends"
    assert cli.calls == []


def test_the_definition_goes_on_stdin_and_the_state_dir_as_an_option(kernel, venv):
    cli = FakeFerry()
    run_module(cli, make_params(kernel, "present", state_dir="/srv/ferry", cmdline="a b; rm -rf /"))
    command = os.path.join(venv, "bin", "ferry")
    (status, no_data), (check, checked), (define, defined) = cli.commands[:3]
    assert no_data is None and status == [command, "--json", "status", "--state-dir", "/srv/ferry", "--", NAME]
    assert check == [command, "--json", "define", "--check", "-", "--state-dir", "/srv/ferry"]
    assert define == [command, "--json", "define", "--replace", "-", "--state-dir", "/srv/ferry"]
    assert json.loads(checked)["cmdline"] == json.loads(defined)["cmdline"] == "a b; rm -rf /"
    assert all(isinstance(command[0], list) for command in cli.commands)


# --- a host the engine role has not reached yet ---

def test_check_mode_without_an_engine_predicts_the_vm_with_a_warning(kernel, tmp_path):
    params = make_params(kernel, "running", engine_venv=str(tmp_path / "no-venv"))
    cli = FakeFerry()
    module = run_module(cli, params, check_mode=True)

    assert module.result["failed"] is False and module.result["changed"] is True
    assert module.warnings == [NOT_INSTALLED_YET]
    assert NOT_INSTALLED_YET.startswith("the Ferry engine is not installed here yet; "
                                        "assuming the ferry.hypervisor.engine role installs it")
    assert module.result["diff"]["before"] == {"name": NAME, "state": "absent"}
    assert module.result["diff"]["after"] == {"name": NAME, "vcpus": 1, "memory": 64, "kernel": kernel,
                                              "initrd": None, "cmdline": "hb=1000", "cpu": "host", "tags": [],
                                              "state": "running"}
    assert module.result["vm"]["state"] == "running"
    assert cli.commands == []


@pytest.mark.parametrize("state", ["present", "running", "stopped", "paused", "absent"])
def test_check_mode_without_an_engine_predicts_like_a_fresh_engine(kernel, tmp_path, state):
    without = run_module(FakeFerry(), make_params(kernel, state, engine_venv=str(tmp_path / "none")), True).result
    fresh = run_module(FakeFerry(), make_params(kernel, state), True).result
    assert (without["changed"], without["diff"], without["vm"]) == (fresh["changed"], fresh["diff"], fresh["vm"])


def test_check_mode_without_an_engine_still_needs_what_creating_needs(kernel, tmp_path):
    params = make_params(kernel, "running", kernel=None, engine_venv=str(tmp_path / "none"))
    module = run_module(FakeFerry(), params, check_mode=True)
    assert module.result["failed"] is True
    assert module.result["msg"].startswith("kernel: required to create VM")


def test_without_an_engine_a_real_run_fails_naming_the_role(kernel, tmp_path):
    module = run_module(FakeFerry(), make_params(kernel, "running", engine_venv=str(tmp_path / "none")))
    assert module.result == {"failed": True, "changed": False, "error_kind": "engine-missing", "msg": (
        f"the Ferry engine is not installed on this host (no {tmp_path}/none/bin/ferry): "
        "run the ferry.hypervisor.engine role")}


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PARAMS = st.fixed_dictionaries({
    "name": st.one_of(st.just(NAME), st.text(max_size=20)),
    "state": st.sampled_from(["present", "running", "stopped", "paused", "absent"]),
    "vcpus": st.one_of(st.none(), st.integers(-2, 40)),
    "memory": st.one_of(st.none(), st.integers(-4, 4096)),
    "kernel": st.one_of(st.none(), st.just("builtin:selfcheck"), st.text(max_size=10)),
    "initrd": st.one_of(st.none(), st.just(""), st.text(max_size=10)),
    "cmdline": st.one_of(st.none(), st.text(max_size=30)),
    "cpu": st.one_of(st.none(), st.sampled_from(["host", "baseline", "turbo", ""]),
                     st.lists(st.sampled_from(["sse2", "avx2", "no-such"]), max_size=3), st.integers()),
    "stop_timeout": st.one_of(st.integers(-5, 100), st.floats()),
    "state_dir": st.none(), "engine_venv": st.none(),
})


@given(params=PARAMS, current=st.sampled_from([None, "stopped", "running", "paused", "crashed"]),
       check_mode=st.booleans())
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_parameters_end_in_a_result_or_one_clean_refusal(kernel, params, current, check_mode):
    cli = FakeFerry(make_vm(kernel, current) if current else None)
    try:
        result = apply(cli, params, check_mode)
    except EngineError as err:
        assert "\n" not in str(err) and ":" in str(err)
        return
    assert isinstance(result["changed"], bool)
    if check_mode:
        assert cli.calls == []


# --- the contract: the fake ``ferry`` answers the module as the real ``ferry --json`` does ---

DEFINITION = {"name": NAME, "vcpus": 1, "memory": 16, "kernel": "builtin:selfcheck", "initrd": None,
              "cmdline": "hb=100"}

# Engine calls in the order a playbook's runs would make them; each compared on both.
SCENARIO = [
    ("get", (NAME,)),
    ("pause", (NAME,)),                          # refused: not defined
    ("start", (NAME,)),                          # refused: not defined
    ("validate", (dict(DEFINITION, memory=15),)),
    ("validate", (dict(DEFINITION, name="../../victim"),)),
    ("validate", (DEFINITION,)),
    ("get", (NAME,)),                            # validating wrote nothing
    ("define", (DEFINITION,)),
    ("pause", (NAME,)),                          # refused: not running
    ("resume", (NAME,)),                         # refused: not running
    ("stop", (NAME, 5)),                         # stopped already: nothing to do
    ("poweroff", (NAME, 5)),
    ("start", (NAME,)),
    ("start", (NAME,)),                          # running already
    ("define", (dict(DEFINITION, memory=32),)),  # refused: running
    ("define", (dict(DEFINITION, cmdline="hb=50"),)),
    ("undefine", (NAME,)),                       # refused: running
    ("pause", (NAME,)),
    ("pause", (NAME,)),
    ("resume", (NAME,)),
    ("poweroff", (NAME, 0)),                     # refused: no time at all
    ("stop", (NAME, -1)),                        # refused
    ("get", ("../../victim",)),                  # refused: not a name
    ("get", ("-x",)),                            # refused: not a name, not an option either
    ("stop", (NAME, 1)),
    ("undefine", (NAME,)),
    ("get", (NAME,)),
    ("undefine", (NAME,)),                       # refused: not defined
]


@pytest.mark.kvm
def test_the_fake_ferry_answers_as_the_real_one(tmp_path):
    state_dir = str(tmp_path / "state")
    module, real_venv = real_ferry_module(tmp_path)
    real, fake = Engine(module, state_dir, real_venv), Engine(FakeFerry(), state_dir)
    try:
        for call, args in SCENARIO:
            assert outcome(fake, call, args, state_dir) == outcome(real, call, args, state_dir), f"{call}{args}"
    finally:
        subprocess.run([os.path.join(real_venv, "bin", "ferry"), "poweroff", "--state-dir", state_dir, NAME],
                       capture_output=True, timeout=60, check=False)
