"""The command line as an attacker or a careless operator uses it: every refusal is one line
naming the field, exit 1, and nothing outside the state directory is touched."""

import os
import re

import pytest


NAMES = ["../../victim", "vm\n", "/tmp", ".."]
COMMANDS = [
    ("undefine", "{n}"), ("start", "{n}"), ("stop", "{n}"), ("poweroff", "{n}"), ("pause", "{n}"),
    ("resume", "{n}"), ("status", "{n}"), ("console", "{n}"), ("snapshot", "create", "{n}"),
    ("snapshot", "list", "{n}"), ("snapshot", "delete", "{n}", "s1"), ("snapshot", "verify", "{n}", "s1"),
    ("restore", "{n}", "s1"), ("migrate", "{n}", "--to", "127.0.0.1:1", "--token-file", "{token}"),
    ("receive", "{n}", "--listen", "127.0.0.1:7499", "--token-file", "{token}"),
]


@pytest.fixture
def victim(tmp_path):
    """A folder beside the state directory that ``../victim`` names would reach."""
    folder = tmp_path / "victim"
    (folder / "vm1").mkdir(parents=True)
    (folder / "vm.yaml").write_text("precious\n")
    return folder



def assert_refused(result, field: str):
    assert result.code == 1, result
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and re.match(rf"ferry: {field}: ", lines[0]), result.err


@pytest.mark.parametrize("name", NAMES, ids=repr)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]).replace("{n}", "NAME"))
def test_hostile_vm_names_are_refused_everywhere(ferry, victim, token, command, name):
    args = [a.format(n=name, token=token) for a in command]
    assert_refused(ferry.run(*args, timeout=30), "name")
    assert (victim / "vm.yaml").read_text() == "precious\n" and (victim / "vm1").is_dir()


@pytest.mark.parametrize("snapshot", ["../../victim", "s1\n", "..", "/etc"], ids=repr)
@pytest.mark.parametrize("action", ["delete", "verify"])
def test_hostile_snapshot_ids_are_refused(ferry, tmp_path, victim, snapshot, action):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck")
    assert_refused(ferry.run("snapshot", action, "vm1", snapshot), "snapshot")
    assert_refused(ferry.run("restore", "vm1", snapshot), "snapshot")
    assert (victim / "vm.yaml").exists()


def test_a_vm_folder_planted_as_a_link_is_neither_listed_nor_deleted(ferry, victim):
    (ferry.state_dir / "vms").mkdir(parents=True)
    os.symlink(victim, ferry.state_dir / "vms" / "evil")
    assert ferry.ok("list") == []
    assert_refused(ferry.run("undefine", "evil"), re.escape(str(ferry.state_dir / "vms" / "evil")))
    assert_refused(ferry.run("start", "evil"), re.escape(str(ferry.state_dir / "vms" / "evil")))
    assert (victim / "vm.yaml").read_text() == "precious\n"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "0"])
def test_bad_start_timeouts_are_one_line(ferry, tmp_path, value):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck")
    assert_refused(ferry.run("start", "vm1", "--timeout", value), "timeout")
    assert ferry.ok("status", "vm1")["state"] == "stopped"


def test_define_from_a_device_or_with_control_characters(ferry, tmp_path):
    assert_refused(ferry.run("define", "/dev/zero", timeout=10), "cannot read definition /dev/zero")
    path = tmp_path / "vm.yaml"
    path.write_text('name: vm1\nvcpus: 1\nmemory: 16\nkernel: builtin:selfcheck\ncmdline: "hb=100\\nrate=1"\n')
    assert_refused(ferry.run("define", str(path)), "cmdline")


@pytest.mark.kvm
def test_a_vm_larger_than_the_host_is_not_started_unless_overcommitted(ferry, tmp_path):
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    too_big = (total + 1024) // 2 * 2
    ferry.define(tmp_path, name="big", vcpus=1, memory=too_big, kernel="builtin:selfcheck",
                 cmdline="fill=1 hb=100")
    refused = ferry.run("start", "big")
    assert_refused(refused, "memory")
    assert f"needs {too_big} MiB" in refused.err and "MiB total" in refused.err and "--overcommit" in refused.err
    assert ferry.ok("status", "big")["state"] == "stopped"
    ferry.ok("start", "big", "--overcommit")
    ferry.wait_heartbeats("big", 2)
    ferry.ok("poweroff", "big")


@pytest.mark.kvm
def test_a_snapshot_of_a_paused_vm_leaves_it_paused(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=32, kernel="builtin:selfcheck", cmdline="fill=10 hb=100")
    ferry.ok("start", "vm1")
    ferry.wait_heartbeats("vm1", 2)
    ferry.ok("pause", "vm1")
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "s1")
    assert ferry.ok("status", "vm1")["state"] == "paused"
    files = (ferry.state_dir / "vms" / "vm1").iterdir()
    assert all(p.stat().st_mode & 0o077 == 0 for p in files if p.is_file() and not p.name.endswith(".log")), \
        "VM files must not be readable by others"


@pytest.mark.kvm
def test_a_progress_file_planted_as_a_link_is_replaced_not_followed(ferry, tmp_path, victim):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=32, kernel="builtin:selfcheck", cmdline="fill=10 hb=100")
    ferry.ok("start", "vm1")
    planted = ferry.state_dir / "vms" / "vm1" / "progress.json"
    os.symlink(victim / "vm.yaml", planted)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "s1")
    assert (victim / "vm.yaml").read_text() == "precious\n"
    assert not os.path.lexists(planted)


@pytest.mark.parametrize("name", NAMES, ids=repr)
def test_console_under_json_refuses_a_hostile_name_in_one_json_line(ferry, name):
    import json
    done = ferry.run("--json", "console", name)
    assert done.code == 1 and done.out == ""
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["error"].startswith("name: "), done.err
