"""Operations that arrive in the middle of a migration: refused by the one table with
"busy: ... (phase)" and changing nothing, or (poweroff before the handover) a cancel;
after each, exactly one copy of the VM exists."""

import threading

import pytest

from ferry.migration.protocol import Kind
from support.labhost import (PORT, assert_busy, beats, conflicting, exactly_one_copy, receive, start_migration,
                             start_vm, wait_beats, wait_no_engine, wait_progress)

pytestmark = [pytest.mark.kvm, pytest.mark.lab]
BUSY = "fill=60 rate=max hb=100"


def held_in_the_handover(h1, h2, tmp_path, token, relay):
    """A migration from h1 to h2 whose COMMIT the relay holds until ``hold`` is set."""
    start_vm(h1, tmp_path)
    receive(h2, token)
    hold = threading.Event()
    proxy, address = relay(("out", Kind.COMMIT, 0), hold)
    process = start_migration(h1, address, token)
    assert proxy.reached.wait(60), "the migration never reached its handover"
    return hold, address, process


def test_during_the_handover_only_the_migration_moves_the_vm(hosts, tmp_path, token, relay):
    h1, h2 = hosts
    hold, address, process = held_in_the_handover(h1, h2, tmp_path, token, relay)
    for op, done in {**conflicting(h1, tmp_path, token), "poweroff": h1.run("poweroff", "m1")}.items():
        assert_busy(done, "handover")
    pid = h1.ok("status", "m1")["pid"]
    h1.sh(f"kill -TERM {pid}")
    status = h1.ok("status", "m1")
    assert status["state"] == "paused" and status["pid"] == pid, "SIGTERM must not end the VM in the handover"
    assert not (h1.state_dir / "vms" / "m1" / "snapshots" / "during").exists()
    hold.set()
    assert process.wait(120) == 0, process.stderr.read()
    exactly_one_copy(h2, h1)


def in_precopy(h1, h2, tmp_path, token, lab):
    """A busy guest migrating from h1 to h2 over a slow link, past the start of its first pass."""
    start_vm(h1, tmp_path, memory=128, cmdline=BUSY)
    lab.link(h2.name, rate="100mbit")
    receive(h2, token)
    process = start_migration(h1, f"{h2.ipv4}:{PORT}", token)
    wait_progress(process, "first-pass")
    return process


def test_during_precopy_conflicting_operations_are_busy_and_the_migration_completes(hosts, tmp_path, token, lab):
    h1, h2 = hosts
    process = in_precopy(h1, h2, tmp_path, token, lab)
    for op, done in conflicting(h1, tmp_path, token).items():
        assert_busy(done, "precopy")
    assert h1.ok("status", "m1")["state"] == "running", "a refused pause must change nothing"
    lab.link(h2.name, clear=True)
    assert process.wait(120) == 0, process.stderr.read()
    exactly_one_copy(h2, h1)


@pytest.mark.parametrize("how", ["poweroff", "SIGTERM"])
def test_poweroff_during_precopy_cancels_and_leaves_one_stopped_copy(hosts, tmp_path, token, lab, how):
    h1, h2 = hosts
    process = in_precopy(h1, h2, tmp_path, token, lab)
    if how == "poweroff":
        h1.ok("poweroff", "m1")
    else:
        h1.sh(f"kill -TERM {h1.ok('status', 'm1')['pid']}")
    assert process.wait(60) != 0
    error = process.stderr.read()
    assert "cancelled" in error and "Traceback" not in error and "Broken pipe" not in error, error
    wait_no_engine(h1)
    assert h1.ok("status", "m1")["state"] == "stopped"
    assert "m1" not in h2.vm_names()
    assert not h2.sh("ls /var/lib/ferry/incoming/m1/vm.yaml 2>/dev/null").strip(), "staging left behind"
    # The one copy is whole: it starts again here.
    h1.ok("start", "m1")
    wait_beats(h1, "m1", len(beats(h1, "m1")) + 2)


def test_a_vm_arriving_here_cannot_be_defined_here_meanwhile(hosts, tmp_path, token):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    receive(h2, token)
    h2.lab.exec(h2.name, ["cp", "/dev/stdin", "/tmp/m1.yaml"], input=(tmp_path / "m1.yaml").read_text(),
                text=True)
    done = h2.run("define", "/tmp/m1.yaml")
    assert done.returncode == 1 and "arriving here by migration (receiving)" in done.stderr, done.stderr
    assert "m1" not in h2.vm_names()
    process = start_migration(h1, f"{h2.ipv4}:{PORT}", token)
    assert process.wait(120) == 0, process.stderr.read()
    exactly_one_copy(h2, h1)


def test_a_source_killed_in_the_handover_starts_nowhere_until_resolved(hosts, tmp_path, token, relay):
    h1, h2 = hosts
    hold, address, process = held_in_the_handover(h1, h2, tmp_path, token, relay)
    pid = h1.ok("status", "m1")["pid"]
    process.kill()
    process.wait(10)
    h1.sh(f"kill -9 {pid}")
    wait_no_engine(h1)
    refused = h1.run("start", "m1")
    # In doubt when the VM process saw its sender go before it was killed itself.
    assert_busy(refused, "handover", "in-doubt")
    assert "--resolve" in refused.stderr
    hold.set()
    settled = h1.ok("migrate", "m1", "--to", address, "--token-file", str(token), "--resolve")
    assert settled["outcome"] == "committed"
    exactly_one_copy(h2, h1)
