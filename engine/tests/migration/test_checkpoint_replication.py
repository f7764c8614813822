"""``ferry checkpoint send`` between lab hosts: real OpenSSH, real KVM, a guest under write
load. Full then incremental sends, a send cut by the link going down and resumed, the
target pruning by its own policy, and the dead host's case: the replica restored on the
other host, the guest going on from the checkpoint."""

import json
import time

import pytest

from support.cli import assert_sequence_continues
from support.labhost import beats, start_vm, wait_beats

pytestmark = [pytest.mark.kvm, pytest.mark.lab]
MIB = 2**20
# About 2 MiB/s of page writes in order through the guest's 32 MiB: between two checkpoints
# a few seconds apart a few chunks change, the rest stays as it was.
SLOW_WRITES = "fill=50 rate=500 hb=100"
OWNED_PAGES = 32 * MIB // 4096


@pytest.fixture
def policies(tmp_path):
    """The source's policy (a checkpoint each run minute) and the target's own (keep 2)."""
    source, target = tmp_path / "source.yaml", tmp_path / "target.yaml"
    source.write_text("vms:\n  m1: {frequently: 10, frequent_minutes: 1}\n")
    target.write_text("vms:\n  m1: {frequently: 2, frequent_minutes: 1}\n")
    return source, target


def checkpoint(h1, policy, minute: int) -> str:
    report = h1.ok("checkpoint", "run", "--policy", str(policy), "--now", f"2026-01-01T00:{minute:02d}:00Z")
    [vm] = report["vms"]
    assert vm["took"], vm
    return vm["took"]["id"]


def send_args(h2, lab, target_policy, *extra):
    state = lab.require()
    return ("checkpoint", "send", "m1", *extra, "--to", h2.ipv4, "--ssh-user", "root", "--ssh-key", state["ssh_key"],
            "--ssh-known-hosts", state["known_hosts"], "--remote-policy", str(target_policy), "--link-timeout", "5")


def partial_chunks(h2, snapshot_id: str) -> int:
    folder = h2.state_dir / "replicas" / "m1" / "snapshots" / f".{snapshot_id}.partial" / "chunks"
    return len([p for p in folder.iterdir() if not p.name.startswith(".")]) if folder.is_dir() else 0


def receivers(h2) -> str:
    return h2.sh("pgrep -f 'checkpoint receive --[s]tdio' || true").strip()


def wait_until(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_replicas_follow_incrementally_resume_after_a_cut_and_come_back_on_the_other_host(
        hosts, tmp_path, lab, policies):
    h1, h2 = hosts
    source_policy, target_policy = policies
    start_vm(h1, tmp_path, memory=64, cmdline=SLOW_WRITES)
    wait_until(lambda: beats(h1, "m1")[-1][3] > OWNED_PAGES, 60, "every owned page written once")
    first = checkpoint(h1, source_policy, 1)
    wait_beats(h1, "m1", len(beats(h1, "m1")) + 10)
    second = checkpoint(h1, source_policy, 2)

    full = h1.ok(*send_args(h2, lab, target_policy))
    assert [c["id"] for c in full["checkpoints"]] == [first, second] and full["base"] is None
    assert full["checkpoints"][0]["chunks_sent"] >= 8 and full["checkpoints"][0]["chunks_linked"] == 0, full
    assert full["checkpoints"][1]["chunks_linked"] > full["checkpoints"][1]["chunks_sent"], full

    wait_beats(h1, "m1", len(beats(h1, "m1")) + 10)
    third = checkpoint(h1, source_policy, 3)
    incremental = h1.ok(*send_args(h2, lab, target_policy))
    assert [c["id"] for c in incremental["checkpoints"]] == [third] and incremental["base"] == second
    sent = incremental["checkpoints"][0]
    assert sent["chunks_sent"] < sent["chunks_linked"], sent
    assert incremental["bytes_on_wire"] < (sent["chunks_sent"] + 1) * 2 * MIB + MIB, incremental
    assert incremental["bytes_on_wire"] < full["checkpoints"][0]["bytes"] * 0.6
    # The target pruned by its own policy (keep 2); the source keeps the newest it shares.
    assert [r["id"] for r in h2.ok("checkpoint", "replicas", "m1")] == [second, third]
    assert json.loads((h1.state_dir / "vms" / "m1" / "replicas.json").read_text()) == {h2.ipv4: third}
    assert "m1" not in h2.vm_names()  # a replica defines no VM there

    # A send cut by the link going down leaves a partial folder; the next one sends the rest.
    wait_beats(h1, "m1", len(beats(h1, "m1")) + 50)  # some 20 MiB of new writes
    fourth = checkpoint(h1, source_policy, 4)
    lab.link(h2.name, rate="20mbit")
    cut = h1.popen(*send_args(h2, lab, target_policy))
    wait_until(lambda: partial_chunks(h2, fourth) >= 2, 60, "two chunks on h2")
    lab.link(h2.name, down=True)
    assert cut.wait(60) != 0
    assert "link" in cut.stderr.read()
    lab.link(h2.name, up=True)
    lab.link(h2.name, clear=True)
    wait_until(lambda: not receivers(h2), 30, "the cut receiver to end")
    arrived = partial_chunks(h2, fourth)
    assert fourth not in [r["id"] for r in h2.ok("checkpoint", "replicas", "m1")]
    resumed = h1.ok(*send_args(h2, lab, target_policy))
    [rest] = resumed["checkpoints"]
    assert rest["id"] == fourth and rest["chunks_kept"] == arrived >= 2, rest
    assert rest["chunks_sent"] + rest["chunks_kept"] + rest["chunks_linked"] >= full["chunks_sent"] / 2
    assert [r["id"] for r in h2.ok("checkpoint", "replicas", "m1")] == [third, fourth]

    # The dead host's case: h1's VM is gone; its replica runs on h2 from the checkpoint.
    h1.ok("poweroff", "m1")
    before = beats(h1, "m1")
    restored = h2.ok("restore", "m1", fourth)
    assert restored["state"] == "running"
    after = wait_beats(h2, "m1", 5)
    resumed_at = after[0][1]
    assert_sequence_continues([b for b in before if b[1] < resumed_at] + after)
    assert b"CORRUPT" not in h2.console("m1")
    assert h2.ok("checkpoint", "replicas") == []
    assert {s["id"] for s in h2.ok("snapshot", "list", "m1")} == {third, fourth}


def test_a_second_send_at_once_is_refused_in_one_line(hosts, tmp_path, lab, policies):
    h1, h2 = hosts
    source_policy, target_policy = policies
    start_vm(h1, tmp_path, memory=64, cmdline=SLOW_WRITES)
    wait_until(lambda: beats(h1, "m1")[-1][3] > OWNED_PAGES, 60, "every owned page written once")
    checkpoint(h1, source_policy, 1)
    lab.link(h2.name, rate="20mbit")
    first = h1.popen(*send_args(h2, lab, target_policy))
    wait_until(lambda: receivers(h2), 30, "the first receiver")
    second = h1.run("--json", *send_args(h2, lab, target_policy), timeout=60)
    assert second.returncode == 1
    error = json.loads(second.stderr)["error"]
    assert error.startswith("destination: busy: a send of m1 to ") and error.endswith(" is under way"), error
    lab.link(h2.name, clear=True)
    assert first.wait(120) == 0, first.stderr.read()
