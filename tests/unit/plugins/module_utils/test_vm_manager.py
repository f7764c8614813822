"""VmManager against a fake engine Host: which engine calls each (current, desired) pair makes,
``changed``, check mode, the diff, refusals and how failures reach the module."""

from __future__ import annotations

import copy

import pytest

from ferry import inputs
from ferry.errors import Conflict, FerryError, NotFound
from ferry.store.definition import validate

from ansible_collections.ferry.hypervisor.plugins.module_utils import vm_manager
from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import Engine, EngineApi, EngineError
from ansible_collections.ferry.hypervisor.plugins.module_utils.vm_manager import VmManager

NAME = "vm1"
CHANGING = ("define", "start", "stop", "poweroff", "pause", "resume", "undefine")


class FakeHost:
    """The engine's Host API over one in-memory VM, recording every call that changes something."""

    def __init__(self, vm=None):
        self.vm = vm
        self.calls = []

    def _record(self, action):
        self.calls.append(action)

    def _existing(self, name):
        if self.vm is None or self.vm["name"] != name:
            raise NotFound(f"no VM named {name!r}")
        return self.vm

    def _set_state(self, state):
        active = state in ("running", "paused")
        self.vm.update(state=state, pid=4242 if active else None, error=None,
                       started_at=(self.vm.get("started_at") or 1.0e9) if active else None)
        return self.get(self.vm["name"])

    def get(self, name):
        inputs.vm_name(name)  # as the real Host: every name passes the engine's one check
        return copy.deepcopy(self.vm) if self.vm and self.vm["name"] == name else None

    def define(self, values, replace=False):
        self._record("define")
        new = validate(values).to_dict()
        if self.vm is None:
            self.vm = dict(new, state="stopped", error=None, pid=None, started_at=None, boot_count=0,
                           path=f"/var/lib/ferry/vms/{new['name']}", console_log="console.log")
        else:
            if self.vm["state"] in ("running", "paused") and (self.vm["vcpus"], self.vm["memory"]) != (
                    new["vcpus"], new["memory"]):
                raise Conflict(f"{new['name']}: vcpus and memory of a running VM cannot change")
            self.vm.update(new)
        return self.get(new["name"])

    def start(self, name, timeout=60.0):
        self._record("start")
        self._existing(name)
        return self._set_state("running")

    def stop(self, name, timeout=30.0, force=False):
        self._record("stop")
        self._existing(name)
        return self._set_state("stopped")

    def poweroff(self, name, timeout=30.0):
        self._record("poweroff")
        self._existing(name)
        return self._set_state("stopped")

    def pause(self, name):
        self._record("pause")
        if self._existing(name)["state"] != "running":
            raise Conflict(f"{name}: the VM is not running")
        return self._set_state("paused")

    def resume(self, name):
        self._record("resume")
        if self._existing(name)["state"] != "paused":
            raise Conflict(f"{name}: the VM is not paused")
        return self._set_state("running")

    def undefine(self, name, with_snapshots=False):
        self._record("undefine")
        if self._existing(name)["state"] in ("running", "paused"):
            raise Conflict(f"{name}: the VM is running; stop it before undefining it")
        self.vm = None
        return {"name": name, "state": "absent"}


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF")
    return str(path)


def make_vm(kernel, state, **changes):
    vm = {"name": NAME, "vcpus": 1, "memory": 64, "kernel": kernel, "initrd": None, "cmdline": "hb=1000",
          "state": state, "error": "killed" if state == "crashed" else None,
          "pid": 4242 if state in ("running", "paused") else None, "boot_count": 1,
          "started_at": 1.0e9 if state in ("running", "paused") else None,
          "path": f"/var/lib/ferry/vms/{NAME}", "console_log": "console.log"}
    vm.update(changes)
    return vm


def make_params(kernel_path, state, **changes):
    params = {"name": NAME, "state": state, "vcpus": 1, "memory": 64, "kernel": kernel_path, "initrd": None,
              "cmdline": "hb=1000", "stop_timeout": 30, "state_dir": None, "engine_venv": None}
    params.update(changes)
    return params


def engine_for(host):
    return Engine(EngineApi(lambda state_dir: host, FerryError, validate, inputs.seconds))


def apply(host, params, check_mode=False):
    return VmManager(engine_for(host), params, check_mode).apply()


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
    host = FakeHost(None if current == "absent" else make_vm(kernel, current))
    result = apply(host, make_params(kernel, target))

    assert host.calls == TABLE[current, target]
    assert result["changed"] is bool(TABLE[current, target])
    assert result["vm"]["state"] == expected_state(current, target)
    assert result["diff"]["before"]["state"] == current
    assert result["diff"]["after"]["state"] == expected_state(current, target)
    assert result["warnings"] == []


@pytest.mark.parametrize("current,target", sorted(TABLE))
def test_check_mode_predicts_without_calls(kernel, current, target):
    vm = None if current == "absent" else make_vm(kernel, current)
    checked_host = FakeHost(copy.deepcopy(vm))
    predicted = apply(checked_host, make_params(kernel, target), check_mode=True)
    real = apply(FakeHost(copy.deepcopy(vm)), make_params(kernel, target))

    assert checked_host.calls == []
    assert checked_host.vm == vm
    assert predicted["changed"] == real["changed"]
    assert predicted["diff"] == real["diff"]
    assert predicted["vm"]["state"] == real["vm"]["state"]


def test_diff_shows_definition_before_and_after(kernel):
    host = FakeHost(make_vm(kernel, "stopped"))
    result = apply(host, make_params(kernel, "running", cmdline="hb=500", vcpus=2))

    assert host.calls == ["define", "start"]
    before, after = result["diff"]["before"], result["diff"]["after"]
    assert (before["cmdline"], before["vcpus"], before["state"]) == ("hb=1000", 1, "stopped")
    assert (after["cmdline"], after["vcpus"], after["state"]) == ("hb=500", 2, "running")
    assert set(before) == set(after) == {"name", "vcpus", "memory", "kernel", "initrd", "cmdline", "state"}


def test_diff_of_a_new_and_a_removed_vm(kernel):
    created = apply(FakeHost(), make_params(kernel, "present"))
    assert created["diff"]["before"] == {"name": NAME, "state": "absent"}
    assert created["diff"]["after"]["kernel"] == kernel

    removed = apply(FakeHost(make_vm(kernel, "running")), make_params(kernel, "absent"))
    assert removed["diff"]["after"] == {"name": NAME, "state": "absent"}
    assert removed["vm"] == {"name": NAME, "state": "absent"}


def test_omitted_options_keep_the_stored_definition(kernel):
    host = FakeHost(make_vm(kernel, "running", cmdline="keep me", initrd=kernel))
    params = make_params(kernel, "running", vcpus=None, memory=None, kernel=None, cmdline=None)
    result = apply(host, params)

    assert host.calls == []
    assert result["changed"] is False
    assert result["vm"]["cmdline"] == "keep me"


def test_empty_initrd_removes_it(kernel):
    host = FakeHost(make_vm(kernel, "stopped", initrd=kernel))
    result = apply(host, make_params(kernel, "present", initrd=""))

    assert host.calls == ["define"]
    assert result["vm"]["initrd"] is None


@pytest.mark.parametrize("current", ["running", "paused"])
@pytest.mark.parametrize("target", ["present", "running", "paused"])
@pytest.mark.parametrize("key,value", [("vcpus", 2), ("memory", 128)])
def test_resizing_an_active_vm_is_refused(kernel, current, target, key, value):
    host = FakeHost(make_vm(kernel, current))
    with pytest.raises(EngineError) as failure:
        apply(host, make_params(kernel, target, **{key: value}))

    message = str(failure.value)
    assert message.startswith(f"{key}: cannot change while VM '{NAME}' is {current}")
    assert "stop it first" in message
    assert host.calls == []


def test_resizing_with_state_stopped_stops_then_redefines(kernel):
    host = FakeHost(make_vm(kernel, "running"))
    result = apply(host, make_params(kernel, "stopped", memory=128))

    assert host.calls == ["stop", "define"]
    assert result["vm"]["memory"] == 128
    assert result["vm"]["state"] == "stopped"


def test_other_changes_to_a_running_vm_are_stored_with_a_warning(kernel):
    host = FakeHost(make_vm(kernel, "running"))
    result = apply(host, make_params(kernel, "running", cmdline="hb=250"))

    assert host.calls == ["define"]
    assert result["changed"] is True
    assert result["warnings"] == [f"VM '{NAME}' is running: the new cmdline takes effect when it next starts"]


@pytest.mark.parametrize("target", ["present", "running", "stopped", "paused"])
def test_creating_needs_vcpus_memory_and_kernel(kernel, target):
    host = FakeHost()
    with pytest.raises(EngineError) as failure:
        apply(host, make_params(kernel, target, memory=None, kernel=None))

    assert str(failure.value) == (f"memory: required to create VM '{NAME}', which is not defined on this host "
                                  "(missing: memory, kernel)")
    assert host.calls == []


def test_absent_needs_no_definition(kernel):
    host = FakeHost()
    result = apply(host, make_params(kernel, "absent", vcpus=None, memory=None, kernel=None))
    assert result["changed"] is False


def test_engine_validation_fails_before_any_change(kernel):
    host = FakeHost(make_vm(kernel, "running"))
    with pytest.raises(EngineError) as failure:
        apply(host, make_params(kernel, "stopped", memory=63))

    assert str(failure.value) == "memory: 63 MiB must be a multiple of 2 MiB"
    assert host.calls == []


class FakeModule:
    def __init__(self, params, check_mode=False):
        self.params = params
        self.check_mode = check_mode
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


def run_module(monkeypatch, host, params):
    monkeypatch.setattr(Engine, "open", classmethod(lambda cls, state_dir, venv: engine_for(host)))
    module = FakeModule(params)
    with pytest.raises(SystemExit):
        vm_manager.run(module)
    return module


def test_engine_errors_become_one_failure_message(monkeypatch, kernel):
    host = FakeHost()

    def broken_start(name, timeout=60.0):
        raise FerryError(f"{name}: could not start: no KVM")

    host.start = broken_start
    module = run_module(monkeypatch, host, make_params(kernel, "running"))

    assert module.result == {"msg": f"{NAME}: could not start: no KVM", "changed": True, "failed": True}


def test_a_failure_before_any_change_is_not_changed(monkeypatch, kernel):
    module = run_module(monkeypatch, FakeHost(make_vm(kernel, "running")), make_params(kernel, "running", vcpus=4))
    assert module.result["failed"] is True
    assert module.result["changed"] is False
    assert module.result["msg"].startswith("vcpus: cannot change")


def test_success_reports_vm_diff_and_warnings(monkeypatch, kernel):
    module = run_module(monkeypatch, FakeHost(make_vm(kernel, "running")), make_params(kernel, "running", cmdline=""))
    assert module.result["failed"] is False
    assert module.result["changed"] is True
    assert module.result["vm"]["cmdline"] == ""
    assert set(module.result) == {"changed", "vm", "diff", "failed"}
    assert module.warnings == [f"VM '{NAME}' is running: the new cmdline takes effect when it next starts"]


# --- hostile parameters: a clean refusal naming the parameter, nothing changed ---

@pytest.mark.parametrize("name", ["../../victimB", "vm\n", "/etc", "..", "a/b"])
@pytest.mark.parametrize("state", ["absent", "present", "running"])
def test_hostile_names_are_refused_before_anything_changes(kernel, name, state):
    host = FakeHost(make_vm(kernel, "stopped"))
    with pytest.raises(EngineError, match=r"^name: .* is not a valid VM name"):
        apply(host, make_params(kernel, state, name=name))
    assert host.calls == []


@pytest.mark.parametrize("check_mode", [False, True])
@pytest.mark.parametrize("timeout", [-1, -0.5, float("nan"), float("inf")])
def test_a_bad_stop_timeout_is_refused_also_in_check_mode(kernel, timeout, check_mode):
    host = FakeHost(make_vm(kernel, "running"))
    with pytest.raises(EngineError, match="^stop_timeout: "):
        apply(host, make_params(kernel, "stopped", stop_timeout=timeout), check_mode)
    assert host.calls == []


def test_the_fake_host_refuses_names_as_the_real_one_does(tmp_path):
    from ferry.host.api import Host
    real, fake = Host(tmp_path), FakeHost()
    for name in ["../../victimB", "vm\n", "ok-name"]:
        outcomes = []
        for host in (real, fake):
            try:
                outcomes.append(("value", host.get(name)))
            except FerryError as err:
                outcomes.append(("refused", str(err)))
        assert outcomes[0] == outcomes[1]


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PARAMS = st.fixed_dictionaries({
    "name": st.one_of(st.just(NAME), st.text(max_size=20)),
    "state": st.sampled_from(["present", "running", "stopped", "paused", "absent"]),
    "vcpus": st.one_of(st.none(), st.integers(-2, 40)),
    "memory": st.one_of(st.none(), st.integers(-4, 4096)),
    "kernel": st.one_of(st.none(), st.just("builtin:selfcheck"), st.text(max_size=10)),
    "initrd": st.one_of(st.none(), st.just(""), st.text(max_size=10)),
    "cmdline": st.one_of(st.none(), st.text(max_size=30)),
    "stop_timeout": st.one_of(st.integers(-5, 100), st.floats()),
    "state_dir": st.none(), "engine_venv": st.none(),
})


@given(params=PARAMS, current=st.sampled_from([None, "stopped", "running", "paused", "crashed"]),
       check_mode=st.booleans())
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_parameters_end_in_a_result_or_one_clean_refusal(kernel, params, current, check_mode):
    host = FakeHost(make_vm(kernel, current) if current else None)
    try:
        result = apply(host, params, check_mode)
    except EngineError as err:
        assert "\n" not in str(err) and ":" in str(err)
        return
    assert isinstance(result["changed"], bool)
    if check_mode:
        assert host.calls == []


# --- the contract: the fake host behaves as the engine's real Host ---

# (call, arguments) in the order a playbook's runs would make them; each compared on both hosts.
SCENARIO = [
    ("get", (NAME,)),
    ("pause", (NAME,)),                 # refused: not defined
    ("define", ({"name": NAME, "vcpus": 1, "memory": 16, "kernel": "builtin:selfcheck", "cmdline": "hb=100"},)),
    ("pause", (NAME,)),                 # refused: not running
    ("start", (NAME,)),
    ("undefine", (NAME,)),              # refused: running
    ("pause", (NAME,)),
    ("resume", (NAME,)),
    ("stop", (NAME, 20)),
    ("undefine", (NAME,)),
    ("get", (NAME,)),
]


def _outcome(host, call, args):
    """What a module sees: the VM's state and the keys it is described with, or the refusal's type."""
    try:
        result = getattr(host, call)(*args, **({"replace": True} if call == "define" else {}))
    except FerryError as err:
        return ("refused", type(err).__name__)
    if result is None:
        return ("none",)
    volatile = {"exits", "migration"}  # counters and progress of a live VM only the real one has
    return (result["state"], sorted(set(result) - volatile))


@pytest.mark.kvm
def test_the_fake_host_behaves_as_the_real_one(tmp_path):
    from ferry.host.api import Host
    real, fake = Host(tmp_path / "state"), FakeHost()
    try:
        for call, args in SCENARIO:
            assert _outcome(fake, call, args) == _outcome(real, call, args), f"{call}{args}"
    finally:
        if real.get(NAME) and real.get(NAME)["state"] in ("running", "paused"):
            real.poweroff(NAME)
