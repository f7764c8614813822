"""A snapshot written by an earlier engine (tests/data/snapshot-v1) still verifies and restores."""

import shutil
from pathlib import Path

import pytest

from support.cli import assert_sequence_continues

pytestmark = pytest.mark.kvm
OLD = Path(__file__).parent.parent / "data" / "snapshot-v1" / "selfcheck-16m"
NAME = "selfcheck-16m"
LAST_SAVED_HEARTBEAT = 16


@pytest.fixture
def old_vm(ferry):
    ferry.ok("define", str(OLD / "vm.yaml"))
    snapshots = ferry.state_dir / "vms" / NAME / "snapshots"
    shutil.copytree(OLD / "snapshots" / "v1", snapshots / "v1")
    return ferry


def test_an_old_snapshot_is_listed_and_verifies(old_vm):
    listed = old_vm.ok("snapshot", "list", NAME)
    assert [s["id"] for s in listed] == ["v1"]
    assert old_vm.ok("snapshot", "verify", NAME, "v1")["verified"]


def test_an_old_snapshot_restores_and_the_guest_goes_on_where_it_was(old_vm):
    old_vm.ok("restore", NAME, "v1")
    for cpu in (0, 1):
        beats = old_vm.wait_heartbeats(NAME, 3, cpu=cpu)
        assert beats[0][1] > LAST_SAVED_HEARTBEAT, f"cpu {cpu} started over: {beats}"
        assert_sequence_continues(beats)
