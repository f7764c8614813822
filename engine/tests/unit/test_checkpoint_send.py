"""Replication without KVM or a network: ``checkpoint send`` through a fake ``ssh`` that runs
the receive command locally, and hostile senders talking to the target through a socketpair."""

import json
import os
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from ferry.checkpoint import plan, policy, receive, run, send, wire
from ferry.errors import FerryError
from ferry.files import open_private
from ferry.host import snapshots
from ferry.host.api import Host
from ferry.memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST, digest
from ferry.migration import messages, protocol
from ferry.migration.protocol import Kind
from ferry.migration.transport import Channel, SshOptions, ssh_command_argv
from ferry.snapshot import format as fmt

from test_snapshot_reader import _sections

CHUNKS = 4  # an 8 MiB guest


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "kernel.elf"
    path.write_bytes(b"\x7fELF")
    return path


def chunk(byte: int) -> bytes:
    """A chunk whose first page is ``byte``; the rest zero (holes on the target)."""
    return bytes([byte]) * 4096 + bytes(CHUNK_SIZE - 4096)


def make_snapshot(host: Host, kernel, snapshot_id: str, contents: list, minute: int, periods="hourly"):
    """A valid chunked snapshot of vm1 as a save writes one (no parent links: the source's
    own sharing is not what is tested here)."""
    folder = host.vmdir("vm1").snapshots / snapshot_id
    folder.mkdir(parents=True, mode=0o700)
    (folder / fmt.CHUNKS).mkdir(mode=0o700)
    digests = []
    for index, data in enumerate(contents):
        digests.append(ZERO_CHUNK_DIGEST if data is None else digest(data))
        if data is not None:
            with open_private(folder / fmt.CHUNKS / str(index)) as handle:
                handle.write(data)
    stamp = f"20260101T00{minute:02d}00Z"
    fmt.write_manifest(folder, {
        "id": snapshot_id, "engine_version": "0.0", "created": f"2026-01-01T00:{minute:02d}:00.000000Z",
        "origin": {"kind": plan.ORIGIN_KIND, "policy": "p", "periods": periods, "time": stamp}, "tags": [],
        "sections": fmt.write_state(folder, _sections(1)),
        "definition": {"name": "vm1", "vcpus": 1, "memory": CHUNKS * 2, "kernel": str(kernel), "initrd": None,
                       "cmdline": ""},
        "memory": {"file": fmt.CHUNKS, "size": CHUNKS * CHUNK_SIZE, "chunk_size": CHUNK_SIZE, "compression": None,
                   "chunks": digests}})
    return folder


@pytest.fixture
def source(tmp_path, kernel):
    host = Host(tmp_path / "source")
    host.define({"name": "vm1", "vcpus": 1, "memory": CHUNKS * 2, "kernel": str(kernel)})
    return host


@pytest.fixture
def target_dir(tmp_path):
    return tmp_path / "target"


@pytest.fixture
def via_fake_ssh(tmp_path, monkeypatch, target_dir):
    """An ``ssh`` first on PATH that runs the remote command here, and the Target that uses it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text('#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n')
    (bin_dir / "ferry").write_text(f'#!/bin/sh\nexec {sys.executable} -m ferry.cli "$@"\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def target(policy: Path | None = None, **options):
        return send.Target("h2", SshOptions(), str(bin_dir / "ferry"), str(target_dir),
                           str(policy or tmp_path / "no-policy.yaml"), link_timeout=5, **options)
    return target


def replica(target_dir: Path, snapshot_id: str) -> Path:
    return target_dir / "replicas" / "vm1" / "snapshots" / snapshot_id


# --- sending ---

def test_the_first_send_is_full_and_the_next_carries_only_what_changed(source, kernel, via_fake_ssh, target_dir):
    a, b, c = chunk(1), chunk(2), chunk(3)
    make_snapshot(source, kernel, "s1", [a, b, None, c], 1)
    first = send.send(source, "vm1", None, via_fake_ssh())
    assert [s["id"] for s in first["checkpoints"]] == ["s1"] and first["base"] is None
    assert (first["chunks_sent"], first["chunks_linked"]) == (3, 0)
    assert first["bytes_sent"] > 3 * CHUNK_SIZE
    make_snapshot(source, kernel, "s2", [a, chunk(9), None, c], 2)
    make_snapshot(source, kernel, "s3", [a, chunk(9), chunk(4), c], 3)
    second = send.send(source, "vm1", None, via_fake_ssh())
    assert [s["id"] for s in second["checkpoints"]] == ["s2", "s3"] and second["base"] == "s1"
    assert [(s["chunks_sent"], s["chunks_linked"]) for s in second["checkpoints"]] == [(1, 2), (1, 3)]
    assert second["bytes_sent"] < 2.1 * CHUNK_SIZE
    # Unchanged chunks are the same file on the target; every replica reads back whole.
    assert os.stat(replica(target_dir, "s3") / "chunks" / "0").st_ino == \
        os.stat(replica(target_dir, "s1") / "chunks" / "0").st_ino
    for snapshot_id in ("s1", "s2", "s3"):
        assert snapshots.load(replica(target_dir, snapshot_id))
    assert [r["id"] for r in snapshots.list_replicas(Host(target_dir))] == ["s1", "s2", "s3"]
    again = send.send(source, "vm1", None, via_fake_ssh())
    assert again["checkpoints"] == [] and again["bytes_sent"] < 4096


def test_a_send_up_to_an_older_id_stops_there(source, kernel, via_fake_ssh, target_dir):
    make_snapshot(source, kernel, "s1", [chunk(1), None, None, None], 1)
    make_snapshot(source, kernel, "s2", [chunk(2), None, None, None], 2)
    report = send.send(source, "vm1", "s1", via_fake_ssh())
    assert [s["id"] for s in report["checkpoints"]] == ["s1"]
    assert not replica(target_dir, "s2").exists()
    with pytest.raises(FerryError, match="^vm1: no snapshot 'nope'"):
        send.send(source, "vm1", "nope", via_fake_ssh())


def test_a_cut_send_resumes_with_what_arrived_verified_again(source, kernel, via_fake_ssh, target_dir):
    a, b = chunk(1), chunk(2)
    make_snapshot(source, kernel, "s1", [a, b, chunk(3), None], 1)
    # What a cut send leaves: a partial folder with one good chunk, one of other content, a half-written file.
    partial = replica(target_dir, ".s1.partial")
    (partial / "chunks").mkdir(parents=True)
    (partial / "chunks" / "0").write_bytes(a)
    (partial / "chunks" / "1").write_bytes(chunk(7))
    (partial / "chunks" / ".2.tmp").write_bytes(b"half")
    assert snapshots.list_replicas(Host(target_dir)) == []  # a partial folder is never a replica
    report = send.send(source, "vm1", None, via_fake_ssh())
    assert (report["chunks_kept"], report["chunks_sent"]) == (1, 2)
    assert not partial.exists()
    assert snapshots.load(replica(target_dir, "s1"))


def test_the_source_records_what_the_target_holds_and_its_prune_keeps_it(source, kernel, via_fake_ssh):
    for minute in (1, 2, 3):
        make_snapshot(source, kernel, f"s{minute}", [chunk(minute), None, None, None], minute)
    send.send(source, "vm1", "s2", via_fake_ssh())
    destination = "h2:" + via_fake_ssh().remote_state_dir
    assert json.loads((source.vmdir("vm1").path / "replicas.json").read_text()) == {destination: "s2"}
    found, _ = run.checkpoints_of(source, "vm1")
    assert [c.id for c in found if c.held] == ["s2"]
    rules = policy.parse({"vms": {"vm1": {"hourly": 1}}}).for_vm("vm1")
    assert [c.id for c in plan.to_prune(rules, found)] == ["s1"]  # s3, the newest, is kept anyway


def test_the_target_prunes_by_its_own_policy_never_the_newest(source, kernel, via_fake_ssh, target_dir, tmp_path):
    rules = tmp_path / "target-policy.yaml"
    rules.write_text("vms:\n  vm1: {hourly: 0, frequently: 0, daily: 0, monthly: 0}\n")
    for minute in (1, 2, 3):
        make_snapshot(source, kernel, f"s{minute}", [chunk(minute), None, None, None], minute)
    report = send.send(source, "vm1", None, via_fake_ssh(rules))
    assert report["pruned"] == ["s1", "s2"]
    assert [r["id"] for r in snapshots.list_replicas(Host(target_dir), "vm1")] == ["s3"]


def test_a_vm_defined_on_the_target_gets_no_replica_there(source, kernel, via_fake_ssh, target_dir):
    make_snapshot(source, kernel, "s1", [chunk(1), None, None, None], 1)
    Host(target_dir).define({"name": "vm1", "vcpus": 1, "memory": CHUNKS * 2, "kernel": str(kernel)})
    with pytest.raises(FerryError, match="vm1 is defined on .*: a VM that is here is not received as a replica"):
        send.send(source, "vm1", None, via_fake_ssh())


def test_a_replica_is_not_restored_over_a_vm_defined_here(source, kernel, via_fake_ssh, target_dir):
    make_snapshot(source, kernel, "s1", [chunk(1), None, None, None], 1)
    send.send(source, "vm1", None, via_fake_ssh())
    target = Host(target_dir)
    target.define({"name": "vm1", "vcpus": 1, "memory": CHUNKS * 2, "kernel": str(kernel)})
    with pytest.raises(FerryError, match="^vm1: a VM of that name is defined on this host, so its replica s1"):
        snapshots.restore_snapshot(target, "vm1", "s1")
    assert replica(target_dir, "s1").is_dir()


def test_the_remote_command_is_quoted_for_the_far_shell():
    argv = ssh_command_argv("h2", ["/opt/my ferry/bin/ferry", "checkpoint", "receive", "--stdio", "$(x)"],
                            SshOptions(user="ops"), timeout=10)
    assert argv[:3] == ["ssh", "-o", "BatchMode=yes"] and argv[-3:-1] == ["--", "h2"]
    assert argv[-1] == "'/opt/my ferry/bin/ferry' checkpoint receive --stdio '$(x)'"


# --- a hostile sender, through a socketpair ---

class Peer:
    """The target serving in a thread; the test speaks for the sender."""

    def __init__(self, root: Path, link_timeout: float = 5):
        ours, theirs = socket.socketpair()
        self.channel = Channel(ours, True, wire.TO_SENDER, 5)
        self.root = root
        self.error = None
        target = Channel(theirs, True, wire.TO_TARGET, link_timeout)
        self.thread = threading.Thread(target=self._serve, args=(target,))
        self.thread.start()

    def _serve(self, channel):
        try:
            receive.serve(Host(self.root), channel, None)
        except FerryError as err:
            self.error = err
        finally:
            channel.close()

    def hello(self, name="vm1"):
        self.channel.send(Kind.HELLO, {"versions": [1, 1]})
        self.channel.expect(Kind.HELLO)
        self.channel.authenticated()
        self.channel.send(Kind.OFFER, {"name": name})
        return self.channel.expect(Kind.ACCEPT)[1]

    def offer(self, folder: Path, snapshot_id="s1", manifest: bytes | None = None):
        self.channel.send(Kind.PLAN, {"id": snapshot_id})
        for name in (wire.MANIFEST, wire.STATE):
            data = manifest if manifest is not None and name == wire.MANIFEST else (folder / name).read_bytes()
            self.channel.send_section(name, 1, digest(data), data)
        return self.channel.expect(Kind.PLAN)[1]["need"]

    def refused(self) -> str:
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.channel.close()
        return str(self.error)


@pytest.fixture
def snapshot(source, kernel):
    return make_snapshot(source, kernel, "s1", [chunk(1), chunk(2), None, None], 1)


def nothing_left(target_dir: Path) -> None:
    """No replica and nothing outside the state dir's replica folders."""
    assert snapshots.list_replicas(Host(target_dir)) == []
    assert {p.name for p in target_dir.iterdir()} <= {"replicas"}


@pytest.mark.parametrize("field, message", [
    ({"name": "../etc"}, "OFFER name: '../etc' is not a valid VM name"),
    ({"name": "a/b"}, "OFFER name: 'a/b' is not a valid VM name"),
])
def test_a_name_that_would_leave_the_state_dir_is_refused(target_dir, field, message):
    peer = Peer(target_dir)
    peer.channel.send(Kind.HELLO, {"versions": [1, 1]})
    peer.channel.expect(Kind.HELLO)
    peer.channel.send(Kind.OFFER, field)
    with pytest.raises(FerryError, match=message):
        peer.channel.expect(Kind.ACCEPT)
    assert peer.refused().startswith(message)
    assert not target_dir.exists() or nothing_left(target_dir) is None


def test_an_id_with_a_slash_is_refused(target_dir):
    peer = Peer(target_dir)
    peer.hello()
    peer.channel.send(Kind.PLAN, {"id": "../../x"})
    assert peer.refused().startswith("PLAN id: '../../x' is not a valid snapshot id")
    nothing_left(target_dir)


def test_a_chunk_outside_memory_is_refused_before_it_is_read(target_dir, snapshot):
    peer = Peer(target_dir)
    peer.hello()
    assert peer.offer(snapshot) == [0, 1]
    peer.channel.conn.sendall(protocol.pack(Kind.MEM, a=10_000, b=CHUNK_SIZE))  # the header alone is refused
    assert peer.refused() == "MEM: chunk 10000 was not asked for"
    nothing_left(target_dir)
    assert os.listdir(replica(target_dir, ".s1.partial") / "chunks") == []


def test_a_chunk_that_does_not_match_its_digest_is_refused_and_nothing_committed(target_dir, snapshot, tmp_path):
    peer = Peer(target_dir)
    peer.hello()
    peer.offer(snapshot)
    peer.channel.send_file(0, os.open(snapshot / "chunks" / "0", os.O_RDONLY), CHUNK_SIZE)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(chunk(99))
    peer.channel.send_file(1, os.open(wrong, os.O_RDONLY), CHUNK_SIZE)
    assert peer.refused() == "chunks/1: checksum mismatch, the chunk is refused"
    nothing_left(target_dir)
    # The good chunk stays for the next send; the bad one was never written.
    assert os.listdir(replica(target_dir, ".s1.partial") / "chunks") == ["0"]


def test_a_manifest_whose_checksum_fails_is_refused(target_dir, snapshot):
    peer = Peer(target_dir)
    peer.hello()
    altered = (snapshot / "manifest.json").read_bytes().replace(b'"cmdline": ""', b'"cmdline": "x"')
    peer.channel.send(Kind.PLAN, {"id": "s1"})
    for name, data in ((wire.MANIFEST, altered), (wire.STATE, (snapshot / "state.bin").read_bytes())):
        peer.channel.send_section(name, 1, digest(data), data)
    assert peer.refused() == "manifest.json: checksum mismatch, the manifest was altered or damaged"
    nothing_left(target_dir)


def test_an_oversized_message_is_refused_by_its_header(target_dir):
    peer = Peer(target_dir)
    peer.channel.conn.sendall(protocol.pack(Kind.HELLO, a=messages.PRE_AUTH_MAX + 1))
    assert peer.refused() == f"HELLO: message of {messages.PRE_AUTH_MAX + 1} bytes, at most {messages.PRE_AUTH_MAX} allowed"


def test_a_sender_that_stalls_is_cut_and_leaves_no_replica(target_dir, snapshot):
    peer = Peer(target_dir, link_timeout=0.5)
    peer.hello()
    peer.offer(snapshot)
    assert "timed out" in peer.refused()
    nothing_left(target_dir)


def test_a_sender_that_dies_mid_chunk_leaves_no_replica(target_dir, snapshot):
    peer = Peer(target_dir)
    peer.hello()
    peer.offer(snapshot)
    peer.channel.conn.sendall(protocol.pack(Kind.MEM, a=0, b=CHUNK_SIZE) + chunk(1)[:1000])
    peer.channel.close()
    assert peer.refused() == "link closed by the peer"
    nothing_left(target_dir)


def test_a_second_send_of_one_vm_at_once_is_refused(target_dir):
    first = Peer(target_dir)
    first.hello()
    second = Peer(target_dir)
    second.channel.send(Kind.HELLO, {"versions": [1, 1]})
    second.channel.expect(Kind.HELLO)
    second.channel.send(Kind.OFFER, {"name": "vm1"})
    with pytest.raises(FerryError, match="^destination: busy: a send of vm1 to .* is under way$"):
        second.channel.expect(Kind.ACCEPT)
    second.refused()
    first.channel.send(Kind.DONE)
    assert first.refused() == "None"


# --- replication as part of a scheduled run ---

def test_a_run_with_replicate_to_sends_each_vms_checkpoints_after_its_takes(source, kernel, via_fake_ssh, target_dir,
                                                                            tmp_path):
    make_snapshot(source, kernel, "ckpt-1", [chunk(1), None, None, None], 1)
    source.define({"name": "vm2", "vcpus": 1, "memory": CHUNKS * 2, "kernel": str(kernel)})  # nothing to send
    rules = policy.parse({"vms": {"vm1": {"hourly": 2}, "vm2": {"hourly": 2}}})
    now = datetime.fromisoformat("2026-01-01T01:00:00+00:00")
    dry = run.run(source, rules, now, dry_run=True, replicate_to=via_fake_ssh())
    assert dry["vms"][0]["replicated"] == {"to": "h2", "dry_run": True} and not replica(target_dir, "ckpt-1").exists()
    report = run.run(source, rules, now, replicate_to=via_fake_ssh())
    vm1, vm2 = report["vms"]
    assert vm1["skipped"].startswith("not running") and vm1["replicated"]["checkpoints"] == 1
    assert "replicated" not in vm2 and report["ok"] is True
    assert replica(target_dir, "ckpt-1").is_dir()


def test_a_failed_replication_fails_the_run_and_names_the_vm(source, kernel, via_fake_ssh, tmp_path):
    make_snapshot(source, kernel, "ckpt-1", [chunk(1), None, None, None], 1)
    rules = policy.parse({"vms": {"vm1": {"hourly": 2}}})
    broken = via_fake_ssh()
    broken.remote_ferry = str(tmp_path / "no-ferry-here")
    report = run.run(source, rules, datetime.fromisoformat("2026-01-01T01:00:00+00:00"), replicate_to=broken)
    assert report["ok"] is False
    assert report["vms"][0]["replication_error"].startswith("replicate to h2: ")
