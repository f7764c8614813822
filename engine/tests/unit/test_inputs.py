"""What people type, checked at one place: names, ids, durations, definition files,
and the folders of the state directory, including hostile input."""

import math
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from ferry import inputs
from ferry.errors import FerryError
from ferry.store import definition as defn
from ferry.store import statedir

HOSTILE_NAMES = ["../../victim", "..", ".", "../x", "a/b", "/etc", "vm\n", "vm\r", "\nvm", "vm\x00", "",
                 " vm", "vm ", "VM", "-vm", ".hidden", "x" * 64, "vm\t", "ｖｍ", "vm/..", "%2e%2e"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_vm_names_are_refused_naming_the_field(name):
    with pytest.raises(inputs.InvalidName) as refused:
        inputs.vm_name(name)
    message = str(refused.value)
    assert message.startswith("name: ") and "\n" not in message


@pytest.mark.parametrize("value", ["../s1", "s1\n", "", ".s1", "s/1", "x" * 129, "s1\x00"])
def test_hostile_snapshot_ids_are_refused(value):
    with pytest.raises(inputs.InvalidName, match="^snapshot: "):
        inputs.snapshot_id(value)


@given(st.text(max_size=80))
def test_a_name_that_passes_is_one_plain_folder_name(name):
    try:
        inputs.vm_name(name)
    except inputs.InvalidName as err:
        assert "\n" not in str(err)
        return
    assert "/" not in name and not name.startswith(".") and name == name.strip() and name.isprintable()


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(), st.none(),
                 st.booleans()))
def test_seconds_accepts_only_finite_positive_numbers(value):
    try:
        got = inputs.seconds(value)
    except inputs.InvalidValue as err:
        assert str(err).startswith("timeout: ")
        return
    assert math.isfinite(got) and got > 0


def test_seconds_zero_only_where_meaningful():
    assert inputs.seconds(0, "timeout", zero=True) == 0
    with pytest.raises(inputs.InvalidValue, match="more than 0"):
        inputs.seconds(0)


# --- definitions ---

@given(st.dictionaries(st.sampled_from(list(defn.KEYS) + ["format", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                                 st.lists(st.integers(), max_size=3)), max_size=8))
@settings(max_examples=300)
def test_definition_validator_refuses_cleanly_or_returns_a_definition(values):
    try:
        result = defn.validate(values)
    except FerryError as err:
        assert "\n" not in str(err) and ":" in str(err)
        return
    assert isinstance(result, defn.Definition)
    inputs.vm_name(result.name)


@pytest.mark.parametrize("cmdline", ["a\x00b", "a\nb", "fill=1\r", "\x1b[2J"])
def test_cmdline_control_characters_are_refused(cmdline):
    with pytest.raises(FerryError, match="^cmdline: control character"):
        defn.validate({"name": "vm1", "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "cmdline": cmdline})


def test_a_definition_from_a_device_is_refused_at_once():
    with pytest.raises(FerryError, match="not a regular file"):
        defn.load_file(Path("/dev/zero"))


def test_a_definition_from_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "vm.yaml"
    os.mkfifo(fifo)
    result = []
    reader = threading.Thread(target=lambda: result.append(_error_of(defn.load_file, fifo)), daemon=True)
    reader.start()
    reader.join(5)
    assert result and "not a regular file" in result[0]


def test_an_oversized_definition_is_refused(tmp_path):
    path = tmp_path / "vm.yaml"
    path.write_text("name: vm1\n" + "# padding\n" * 10000)
    assert "larger than 64 KiB" in _error_of(defn.load_file, path)


def test_deeply_nested_yaml_is_refused_in_one_line(tmp_path):
    path = tmp_path / "vm.yaml"
    path.write_text("[" * 20000 + "]" * 20000)
    message = _error_of(defn.load_file, path)
    assert message and "\n" not in message


def _error_of(function, *args) -> str:
    try:
        function(*args)
    except FerryError as err:
        return str(err)
    return ""


# --- the state directory ---

def test_a_vm_folder_that_is_a_link_is_never_used(tmp_path):
    root, outside = tmp_path / "state", tmp_path / "outside"
    (root / "vms").mkdir(parents=True)
    outside.mkdir()
    (outside / "vm.yaml").write_text("name: evil\n")
    (root / "vms" / "evil").symlink_to(outside)
    assert statedir.vm_names(root) == []
    with pytest.raises(statedir.OutsideStateDir, match="symbolic link"):
        statedir.VmDir(root, "evil")
    assert (outside / "vm.yaml").exists()


def test_a_folder_reached_through_a_linked_parent_is_outside(tmp_path):
    root, outside = tmp_path / "state", tmp_path / "outside"
    root.mkdir()
    (outside / "vm1").mkdir(parents=True)
    (root / "vms").symlink_to(outside)
    with pytest.raises(statedir.OutsideStateDir, match="outside the state directory"):
        statedir.VmDir(root, "vm1")


def test_remove_tree_removes_a_link_and_keeps_what_it_points_to(tmp_path):
    root, outside = tmp_path / "state", tmp_path / "outside"
    (root / "vms" / "vm1" / "snapshots").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep").write_text("x")
    link = root / "vms" / "vm1" / "snapshots" / "s1"
    link.symlink_to(outside)
    vmdir = statedir.VmDir(root, "vm1")
    assert vmdir.snapshot_ids() == ["s1"], "listed, so that it shows as damaged"
    statedir.remove_tree(root, vmdir.snapshot_dir("s1"))
    assert not os.path.lexists(link)
    assert (outside / "keep").read_text() == "x"


def test_a_record_replaced_by_a_link_is_not_written_through(tmp_path):
    root, outside = tmp_path / "state", tmp_path / "outside"
    vmdir = statedir.VmDir(root, "vm1")
    vmdir.make()
    outside.write_text("precious")
    (vmdir.path / ".status.json.tmp").symlink_to(outside)
    vmdir.write_status(state="stopped")
    assert outside.read_text() == "precious"
    assert vmdir.read_status()["state"] == "stopped"
    assert (vmdir.status_file.stat().st_mode & 0o777) == 0o600


def test_a_status_file_that_is_a_fifo_reads_as_empty(tmp_path):
    vmdir = statedir.VmDir(tmp_path, "vm1")
    vmdir.make()
    os.mkfifo(vmdir.status_file)
    assert vmdir.read_status() == {}
