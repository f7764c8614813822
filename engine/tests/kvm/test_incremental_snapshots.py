"""Incremental snapshots on real KVM: a second snapshot of a guest under its write load
stores only the chunks that changed, yet each snapshot verifies and restores on its own,
whichever of the two is deleted."""

import subprocess
import sys

import pytest

from support.cli import assert_sequence_continues

from test_snapshots import running_vm, snapshot_folder

pytestmark = pytest.mark.kvm
# About 4 MiB/s of page writes, in order through 64 MiB: between two saves a second apart
# a few chunks change, the rest stays as the first save found it.
SLOW_WRITES = "fill=50 rate=1000 hb=100"


def _save(ferry, snapshot_id, *flags):
    return ferry.ok("snapshot", "create", "vm1", "--snapshot", snapshot_id, *flags)


def _runs_on(ferry, name, before=0):
    """The VM's guest keeps writing and checking: heartbeats in sequence, none CORRUPT."""
    ferry.wait_heartbeats(name, before + 5)
    assert_sequence_continues(ferry.heartbeats(name))
    assert b"CORRUPT" not in ferry.console(name)


def _second_snapshot(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=128, cmdline=SLOW_WRITES)
    ferry.wait_heartbeats("vm1", 40)  # some 16 MiB of the workload written
    first = _save(ferry, "first")
    ferry.wait_heartbeats("vm1", len(ferry.heartbeats("vm1")) + 10)
    second = _save(ferry, "second", "--exit")  # so the restored guest's heartbeats follow on
    ferry.wait_state("vm1", "stopped")
    return first, second


def test_a_second_snapshot_stores_what_changed_and_restores_with_every_page(ferry, tmp_path):
    first, second = _second_snapshot(ferry, tmp_path)
    assert first["parent"] is None and first["shared_bytes"] == 0
    assert second["parent"] == "first"
    assert second["disk_bytes"] < first["disk_bytes"] / 2, (first, second)
    assert second["shared_bytes"] > first["disk_bytes"] / 2, (first, second)
    manifest = ferry.ok("snapshot", "verify", "vm1", "second")
    assert manifest["verified"]
    before = len(ferry.heartbeats("vm1"))
    ferry.ok("restore", "vm1", "second")
    _runs_on(ferry, "vm1", before)


def test_deleting_the_parent_leaves_the_child_whole(ferry, tmp_path):
    _second_snapshot(ferry, tmp_path)
    ferry.ok("snapshot", "delete", "vm1", "first")
    listed = ferry.ok("snapshot", "list", "vm1")
    assert [s["id"] for s in listed] == ["second"] and listed[0]["shared_bytes"] == 0
    assert ferry.ok("snapshot", "verify", "vm1", "second")["verified"]
    before = len(ferry.heartbeats("vm1"))
    ferry.ok("restore", "vm1", "second", "--eager")
    _runs_on(ferry, "vm1", before)


def test_deleting_the_child_leaves_the_parent_whole(ferry, tmp_path):
    _second_snapshot(ferry, tmp_path)
    ferry.ok("snapshot", "delete", "vm1", "second")
    assert ferry.ok("snapshot", "verify", "vm1", "first")["verified"]
    ferry.ok("restore", "vm1", "first", "--as", "vm2", "--eager")
    _runs_on(ferry, "vm2")


def test_full_and_compressed_snapshots_share_nothing(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=64, cmdline=SLOW_WRITES)
    _save(ferry, "base")
    full = _save(ferry, "full", "--full")
    assert full["parent"] is None and full["shared_bytes"] == 0
    packed = _save(ferry, "packed", "--compress")
    assert packed["parent"] is None and packed["compression"] == "zstd"
    # The newest snapshot is compressed, so the next one builds on the newest with chunk files.
    assert _save(ferry, "next")["parent"] == "full"
    assert ferry.ok("snapshot", "verify", "vm1", "next")["verified"]


def test_two_saves_of_one_vm_at_once_both_complete_whole(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=64, cmdline=SLOW_WRITES)
    _save(ferry, "base")
    runs = [subprocess.Popen([sys.executable, "-m", "ferry.cli", "snapshot", "create", "vm1", "--snapshot", name],
                             env=ferry.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("one", "two")]
    results = [(run.wait(60), *run.communicate()) for run in runs]
    assert [code for code, *_ in results] == [0, 0], results
    for name in ("base", "one", "two"):
        assert ferry.ok("snapshot", "verify", "vm1", name)["verified"]
    assert not list(snapshot_folder(ferry, "vm1", "base").parent.glob(".*"))
