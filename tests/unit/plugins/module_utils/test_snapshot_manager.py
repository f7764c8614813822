"""SnapshotManager (ferry.hypervisor.vm_snapshot) against the fake ``ferry --json``: which engine
commands each state runs, idempotence, check mode predicting exactly what a real run does, the
diff, refusals with one line; the module's own option checks; and the contract that keeps the
fake's snapshot commands true to the real engine."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess

import pytest

from ansible_collections.ferry.hypervisor.plugins.module_utils import engine as engine_utils
from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import Engine, EngineError
from ansible_collections.ferry.hypervisor.plugins.module_utils.snapshot_manager import SnapshotManager
from ansible_collections.ferry.hypervisor.tests.unit.plugins.module_utils.fake_ferry import (
    NAME, FakeFerry, outcome, real_ferry_module)

VM = {"name": NAME, "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "initrd": None, "cmdline": "", "cpu": "host",
      "state": "running", "error": None, "pid": 4242, "boot_count": 1, "started_at": 1.0e9,
      "path": f"/var/lib/ferry/vms/{NAME}", "console_log": "console.log", "restored_from": None}


@pytest.fixture(autouse=True)
def engine_venv(venv, monkeypatch):
    monkeypatch.setattr(engine_utils, "DEFAULT_VENV", venv)


def params(state="present", snapshot="s1", **changes):
    values = {"name": NAME, "snapshot": snapshot, "state": state, "tags": [], "live": True, "compress": False,
              "as": None, "replace": False, "state_dir": None, "engine_venv": None}
    values.update(changes)
    return values


def fake(state="running", snapshots=()):
    cli = FakeFerry(dict(VM, state=state, pid=4242 if state in ("running", "paused") else None))
    for snapshot_id in snapshots:
        cli.answer("snapshot create", [NAME], ["--snapshot", snapshot_id], None)
    cli.calls = []
    return cli


def apply(cli, values, check_mode=False):
    return SnapshotManager(Engine(cli, None), values, check_mode).apply()


def test_present_takes_it_once_and_returns_its_facts():
    cli = fake()
    first = apply(cli, params(tags=["nightly"], live=False))
    again = apply(cli, params(tags=["nightly"], live=False))
    assert cli.calls == ["snapshot create"]
    assert first["changed"] is True and again["changed"] is False
    assert first["snapshot"]["id"] == "s1" and first["snapshot"]["tags"] == ["nightly"]
    assert first["snapshot"]["mode"] == "stop-the-world"
    assert set(first["snapshot"]) >= {"id", "created", "pause_ms", "total_ms", "disk_bytes", "tags", "origin"}
    assert again["snapshot"] == first["snapshot"]
    assert first["diff"] == {"before": {"snapshots": []}, "after": {"snapshots": ["s1"]}}
    assert again["diff"]["before"] == again["diff"]["after"]


def test_present_without_an_id_takes_a_new_one_every_run():
    cli = fake()
    ids = [apply(cli, params(snapshot=None))["snapshot"]["id"] for run in range(2)]
    assert cli.calls == ["snapshot create"] * 2 and ids[0] != ids[1]


def test_other_tags_on_an_existing_snapshot_warn_and_change_nothing():
    cli = fake(snapshots=["s1"])
    result = apply(cli, params(tags=["other"]))
    assert result["changed"] is False and cli.calls == []
    assert result["warnings"] == ["snapshot 's1' of VM 'vm1' exists with tags []: a snapshot keeps the tags it "
                                  "was taken with, the requested ['other'] are not applied"]


def test_absent_deletes_it_once():
    cli = fake(snapshots=["s1", "s2"])
    first, again = apply(cli, params("absent")), apply(cli, params("absent"))
    assert cli.calls == ["snapshot delete"]
    assert (first["changed"], again["changed"]) == (True, False)
    assert first["diff"] == {"before": {"snapshots": ["s1", "s2"]}, "after": {"snapshots": ["s2"]}}
    assert first["snapshot"]["id"] == "s1" and again["snapshot"] is None


def test_restored_in_place_always_changes_and_needs_replace_while_running():
    cli = fake(snapshots=["s1"])
    with pytest.raises(EngineError, match="^vm1: the VM is running; set replace=true to restore over it"):
        apply(cli, params("restored"))
    assert cli.calls == []
    first, again = (apply(cli, params("restored", replace=True)) for run in range(2))
    assert cli.calls == ["restore", "restore"] and first["changed"] and again["changed"]
    assert first["vm"]["restored_from"] == {"vm": NAME, "snapshot": "s1"}


def test_restored_into_a_stopped_vm_needs_no_replace():
    cli = fake("stopped", snapshots=[])
    cli.vms[NAME]["state"] = "running"
    cli.answer("snapshot create", [NAME], ["--snapshot", "s1"], None)
    cli.vms[NAME]["state"] = "stopped"
    result = apply(cli, params("restored"))
    assert result["changed"] and result["vm"]["state"] == "running"
    assert result["diff"]["before"]["vm"]["state"] == "stopped" and result["diff"]["after"]["vm"]["state"] == "running"


def test_restored_as_a_clone_is_ok_the_second_time():
    cli = fake(snapshots=["s1"])
    first, again = (apply(cli, params("restored", **{"as": "vm1-clone"})) for run in range(2))
    assert cli.calls == ["restore"]
    assert (first["changed"], again["changed"]) == (True, False)
    assert again["vm"]["name"] == "vm1-clone" and again["vm"]["restored_from"] == {"vm": NAME, "snapshot": "s1"}
    assert first["diff"]["before"]["vm"] == {"name": "vm1-clone", "state": "absent"}


def test_a_clone_name_taken_by_another_vm_is_refused():
    cli = fake(snapshots=["s1", "s2"])
    apply(cli, params("restored", snapshot="s2", **{"as": "other"}))
    with pytest.raises(EngineError, match="^as: a VM named 'other' is already defined"):
        apply(cli, params("restored", **{"as": "other"}), check_mode=True)
    with pytest.raises(EngineError, match="^as: a VM named 'other' is already defined"):
        apply(cli, params("restored", **{"as": "other"}))


@pytest.mark.parametrize("values, state, message", [
    (params(), "stopped", "vm1: the VM is not running; a snapshot saves a running VM"),
    (params("restored", snapshot="nope"), "running", "vm1: no snapshot 'nope'"),
    (params("restored", **{"as": "../x"}), "running", "as: '../x' is not a valid VM name"),
    (params(snapshot="../../etc"), "running", "snapshot: '../../etc' is not a valid snapshot id"),
])
def test_refusals_are_one_line_and_check_mode_refuses_the_same(values, state, message):
    for check_mode in (True, False):
        cli = fake(state, snapshots=["s1"] if state == "running" else [])
        cli.vms[NAME]["state"] = state
        try:
            apply(cli, values, check_mode)
        except EngineError as err:
            assert str(err).startswith(message) and "\n" not in str(err), (check_mode, str(err))
        else:
            assert check_mode and "../" in json.dumps(values), "only the engine checks names: a real run refuses"
        assert cli.calls == [] or not check_mode


CASES = [("present", {}), ("present", {"snapshot": None}), ("present", {"snapshot": "s9", "tags": ["a"]}),
         ("absent", {}), ("absent", {"snapshot": "s9"}), ("restored", {"replace": True}),
         ("restored", {"as": "clone"})]


@pytest.mark.parametrize("state, changes", CASES)
@pytest.mark.parametrize("existing", [[], ["s1"]])
def test_check_mode_predicts_a_real_run_and_changes_nothing(state, changes, existing):
    checked, real = fake(snapshots=existing), fake(snapshots=existing)
    values = params(state, **changes)
    try:
        predicted = apply(checked, values, check_mode=True)
    except EngineError as err:
        with pytest.raises(EngineError, match=str(err).split(":", maxsplit=1)[0]):
            apply(real, values)
        return
    before = copy.deepcopy((checked.vms, checked.snapshots))
    done = apply(real, values)
    assert checked.calls == [] and (checked.vms, checked.snapshots) == before
    assert predicted["changed"] == done["changed"]
    if changes.get("snapshot", "s1") is not None:  # an id the engine picks is only known afterwards
        assert predicted["diff"] == done["diff"]
    assert (predicted.get("vm") or {}).get("restored_from") == (done.get("vm") or {}).get("restored_from")


def test_check_mode_for_a_vm_not_defined_yet_predicts_with_a_warning():
    result = apply(FakeFerry(), params(), check_mode=True)
    assert result["changed"] is True and result["snapshot"]["id"] == "s1"
    assert "VM 'vm1' is not defined on this host" in result["warnings"][0]
    with pytest.raises(EngineError, match="^no VM named 'vm1'"):
        apply(FakeFerry(), params())


# --- the module's own option checks, through a real AnsibleModule ---

@contextlib.contextmanager
def module_args(args):
    """The module's arguments, as ansible-core of this test run takes them in tests."""
    try:
        from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19 and later
    except ImportError:
        from ansible.module_utils import basic
        from ansible.module_utils.common.text.converters import to_bytes
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = None
        return
    with patch_module_args(args):
        yield


def run_module(tmp_path, args, capsys):
    from ansible_collections.ferry.hypervisor.plugins.modules import vm_snapshot

    with module_args(dict(args, engine_venv=str(tmp_path / "none"))), pytest.raises(SystemExit):
        vm_snapshot.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("args, message", [
    ({"state": "absent"}, "state is absent but all of the following are missing: snapshot"),
    ({"state": "restored"}, "state is restored but all of the following are missing: snapshot"),
    ({"state": "restored", "snapshot": "s1", "as": "c", "replace": True}, "parameters are mutually exclusive: as|replace"),
    ({"snapshot": "s1", "as": "c"}, "as: only applies with state=restored (state is present)"),
    ({"snapshot": "s1", "replace": True}, "replace: only applies with state=restored (state is present)"),
    ({"snapshot": "s1", "state": "gone"}, "value of state must be one of: present, absent, restored, got: gone"),
])
def test_options_that_do_not_fit_fail_in_one_line(tmp_path, capsys, args, message):
    result = run_module(tmp_path, dict(args, name=NAME), capsys)
    assert result["failed"] is True and message in result["msg"] and "\n" not in result["msg"], result


# --- the contract: the fake's snapshot commands answer as the real ``ferry --json`` ---

DEFINITION = {"name": NAME, "vcpus": 1, "memory": 16, "kernel": "builtin:selfcheck", "initrd": None,
              "cmdline": "hb=100"}
SCENARIO = [
    ("snapshots", (NAME,)),                                    # refused: not defined
    ("define", (DEFINITION,)),
    ("snapshots", (NAME,)),
    ("create_snapshot", (NAME, "s1", [], True, False)),        # refused: not running
    ("start", (NAME,)),
    ("create_snapshot", (NAME, "s1", ["a", "b"], True, False)),
    ("create_snapshot", (NAME, "s1", [], True, False)),        # refused: taken
    ("create_snapshot", (NAME, "../x", [], True, False)),      # refused: not an id
    ("create_snapshot", (NAME, "s2", [], False, True)),
    ("snapshots", (NAME,)),
    ("restore", (NAME, "s1")),                                 # refused: running
    ("restore", (NAME, "nope")),                               # refused: no such snapshot
    ("restore", (NAME, "s1", "c1")),
    ("get", ("c1",)),
    ("restore", (NAME, "s1", "c1")),                           # refused: defined
    ("restore", (NAME, "s1", None, True)),
    ("get", (NAME,)),
    ("delete_snapshot", (NAME, "nope")),                       # refused: no such snapshot
    ("delete_snapshot", (NAME, "s1")),
    ("snapshots", (NAME,)),
    ("list_vms", ()),
    ("host_info", ()),
    ("poweroff", ("c1", 5)),
    ("start", ("c1",)),
    ("get", ("c1",)),                                          # a fresh boot: not from the snapshot now
]


@pytest.mark.kvm
def test_the_fake_ferry_takes_and_restores_snapshots_as_the_real_one(tmp_path):
    state_dir = str(tmp_path / "state")
    module, real_venv = real_ferry_module(tmp_path)
    real, fake_engine = Engine(module, state_dir, real_venv), Engine(FakeFerry(), state_dir)
    try:
        for call, args in SCENARIO:
            assert outcome(fake_engine, call, args, state_dir) == outcome(real, call, args, state_dir), f"{call}{args}"
    finally:
        for name in (NAME, "c1"):
            subprocess.run([os.path.join(real_venv, "bin", "ferry"), "poweroff", "--state-dir", state_dir, name],
                           capture_output=True, timeout=60, check=False)
