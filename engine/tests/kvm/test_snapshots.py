"""Snapshots on real KVM: save, restore, clone, corruption, crash safety."""

import json
import os
import subprocess

import pytest

from ferry.snapshot import format as fmt

from support.cli import assert_sequence_continues

pytestmark = pytest.mark.kvm
GUEST = "builtin:selfcheck"
BUSY = "fill=50 rate=max hb=100"


def running_vm(ferry, tmp_path, name="vm1", vcpus=1, memory=64, cmdline=BUSY):
    ferry.define(tmp_path, name=name, vcpus=vcpus, memory=memory, kernel=GUEST, cmdline=cmdline)
    ferry.ok("start", name)
    ferry.wait_heartbeats(name, 3)


def snapshot_folder(ferry, name, snapshot_id):
    return ferry.state_dir / "vms" / name / "snapshots" / snapshot_id


def save_exit_restore(ferry, name, snapshot_id, *restore_args):
    ferry.ok("snapshot", "create", name, "--snapshot", snapshot_id, "--exit")
    ferry.wait_state(name, "stopped")
    return ferry.ok("restore", name, snapshot_id, *restore_args)


@pytest.mark.parametrize("vcpus", [1, 2])
def test_twenty_save_restore_cycles_keep_every_page_and_heartbeat(ferry, tmp_path, vcpus):
    running_vm(ferry, tmp_path, vcpus=vcpus)
    for cycle in range(20):
        before = len(ferry.heartbeats("vm1"))
        vm = save_exit_restore(ferry, "vm1", f"c{cycle}", *(["--eager"] if cycle % 2 else []))
        assert vm["state"] == "running"
        ferry.wait_heartbeats("vm1", before + 2)
        ferry.ok("snapshot", "delete", "vm1", f"c{cycle}")
    for cpu in range(vcpus):
        beats = ferry.heartbeats("vm1", cpu)
        assert_sequence_continues(beats)
        assert beats[-1][3] > beats[0][3], "the workload stopped writing"


def test_live_save_keeps_the_guest_running_and_reports_the_pause(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    snap = ferry.ok("snapshot", "create", "vm1", "--snapshot", "live", "--tag", "before-upgrade")
    assert snap["mode"] == "live" and snap["pause_ms"] < snap["total_ms"]
    assert snap["tags"] == ["before-upgrade"] and snap["origin"] == {"kind": "manual"}
    assert ferry.ok("status", "vm1")["state"] == "running"
    before = len(ferry.heartbeats("vm1"))
    ferry.wait_heartbeats("vm1", before + 2)
    listed = ferry.ok("snapshot", "list", "vm1")
    assert [s["id"] for s in listed] == ["live"]
    assert ferry.ok("snapshot", "verify", "vm1", "live")["verified"]


def test_stop_the_world_save_restores(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    snap = ferry.ok("snapshot", "create", "vm1", "--snapshot", "stw", "--stop-the-world")
    assert snap["mode"] == "stop-the-world"
    ferry.ok("restore", "vm1", "stw", "--replace")
    ferry.wait_heartbeats("vm1", len(ferry.heartbeats("vm1")) + 2)


def test_clone_runs_beside_its_original(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "base")
    clone = ferry.ok("restore", "vm1", "base", "--as", "vm2")
    assert clone["name"] == "vm2" and clone["state"] == "running"
    original = ferry.ok("status", "vm1")
    assert original["state"] == "running" and original["pid"] != clone["pid"]
    ferry.wait_heartbeats("vm2", 3)
    assert_sequence_continues(ferry.heartbeats("vm2"))
    ferry.wait_heartbeats("vm1", len(ferry.heartbeats("vm1")) + 2)


def test_restore_over_a_running_vm_needs_replace(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "s")
    refused = ferry.run("restore", "vm1", "s")
    assert refused.code != 0 and "--replace" in refused.err
    assert ferry.ok("status", "vm1")["state"] == "running"


def test_memory_file_is_sparse(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=256, cmdline="fill=10 rate=0 hb=200")
    snap = ferry.ok("snapshot", "create", "vm1", "--snapshot", "sparse")
    memory = snapshot_folder(ferry, "vm1", "sparse") / fmt.MEMORY
    used = memory.stat().st_blocks * 512
    assert memory.stat().st_size == 256 * 2**20
    assert 0.08 * 256 * 2**20 < used < 0.25 * 256 * 2**20, f"{used / 2**20:.1f} MiB on disk"
    assert snap["disk_bytes"] == used


# --- corruption: every damaged part is refused by verify and by restore, by name ---

def _flip_bit(path, offset):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x10]))


def _resign(folder, change):
    manifest = json.loads((folder / fmt.MANIFEST).read_text())
    change(manifest, folder)
    manifest.pop("manifest_checksum")
    manifest["manifest_checksum"] = fmt._manifest_digest(manifest)
    (folder / fmt.MANIFEST).write_text(json.dumps(manifest))


def _first_data_offset(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA) + 12345
    finally:
        os.close(fd)


def _unknown_section(manifest, folder):
    extra = b"from the future"
    offset = (folder / fmt.STATE).stat().st_size
    with open(folder / fmt.STATE, "ab") as handle:
        handle.write(extra)
    manifest["sections"].append({"name": "gpu.0", "version": 1, "offset": offset,
                                 "length": len(extra), "checksum": fmt.digest(extra)})


def _newer_section(manifest, folder):
    for entry in manifest["sections"]:
        if entry["name"] == "serial.com1":
            entry["version"] = 99


DAMAGE = {
    "memory bit": (lambda f: _flip_bit(f / fmt.MEMORY, _first_data_offset(f / fmt.MEMORY)), "memory.raw: chunk"),
    "state bit": (lambda f: _flip_bit(f / fmt.STATE, 40), "section vcpu.0: checksum"),
    "manifest bit": (lambda f: _flip_bit(f / fmt.MANIFEST, 60), "manifest.json"),
    "truncated memory": (lambda f: os.truncate(f / fmt.MEMORY, 2**20), "truncated"),
    "unknown section": (lambda f: _resign(f, _unknown_section), "section gpu.0"),
    "newer section version": (lambda f: _resign(f, _newer_section), "section serial.com1"),
    "newer format": (lambda f: _resign(f, lambda m, _: m.update(format_version=2)), "format version 2"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One good snapshot, copied afresh for each kind of damage."""
    from support.cli import Ferry
    tmp = tmp_path_factory.mktemp("pristine")
    (tmp / "state").mkdir()
    ferry = Ferry(tmp / "state")
    running_vm(ferry, tmp)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "good", "--exit")
    ferry.wait_state("vm1", "stopped")
    return snapshot_folder(ferry, "vm1", "good")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_snapshot_is_refused_by_name(ferry, tmp_path, pristine, damage):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=64, kernel=GUEST, cmdline=BUSY)
    folder = snapshot_folder(ferry, "vm1", "bad")
    folder.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--sparse=always", str(pristine), str(folder)], check=True)
    harm, words = DAMAGE[damage]
    harm(folder)
    for command in (("snapshot", "verify", "vm1", "bad"), ("restore", "vm1", "bad")):
        result = ferry.run(*command)
        assert result.code != 0, f"{' '.join(command)} accepted a snapshot with a {damage}"
        assert words in result.err and "Traceback" not in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
    assert ferry.ok("status", "vm1")["state"] == "stopped"


def test_disk_full_during_save_leaves_the_vm_running_and_no_snapshot(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    snapshots = ferry.state_dir / "vms" / "vm1" / "snapshots"
    snapshots.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(snapshots)], check=True)
    try:
        result = ferry.run("snapshot", "create", "vm1", "--snapshot", "full")
        assert result.code != 0 and "No space left" in result.err
        assert ferry.ok("snapshot", "list", "vm1") == []
        assert os.listdir(snapshots) == []
        assert ferry.ok("status", "vm1")["state"] == "running"
        ferry.wait_heartbeats("vm1", len(ferry.heartbeats("vm1")) + 2)
        assert_sequence_continues(ferry.heartbeats("vm1"))
    finally:
        subprocess.run(["umount", "-l", str(snapshots)], check=False)


def test_compressed_snapshot_verifies_and_restores(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    snap = ferry.ok("snapshot", "create", "vm1", "--snapshot", "z", "--compress", "--exit")
    assert snap["compression"] == "zstd" and snap["compress_ms"] > 0
    assert snap["disk_bytes"] < 32 * 2**20
    ferry.wait_state("vm1", "stopped")
    assert ferry.ok("snapshot", "verify", "vm1", "z")["verified"]
    before = len(ferry.heartbeats("vm1"))
    ferry.ok("restore", "vm1", "z")
    ferry.wait_heartbeats("vm1", before + 2)
    assert_sequence_continues(ferry.heartbeats("vm1"))


def test_memory_damage_that_skips_verification_is_caught_by_the_guest(ferry, tmp_path, pristine):
    """--no-verify restores without the memory checksums; the self-checking guest then
    reports the damaged page itself, as it would any lost or corrupted write."""
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=64, kernel=GUEST, cmdline=BUSY)
    folder = snapshot_folder(ferry, "vm1", "bad")
    folder.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--sparse=always", str(pristine), str(folder)], check=True)
    _flip_bit(folder / fmt.MEMORY, 16 * 2**20 + 100)  # inside the pages the guest owns
    assert ferry.run("restore", "vm1", "bad").code != 0
    ferry.ok("restore", "vm1", "bad", "--no-verify")
    text = ferry.wait_console("vm1", rb"HB cpu=0 .* CORRUPT page=0x1000000 ", timeout=30)
    assert b"CORRUPT" in text


def test_a_save_left_unfinished_by_a_crash_is_never_listed_and_is_cleared(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    snapshots = ferry.state_dir / "vms" / "vm1" / "snapshots"
    snapshots.mkdir()
    partial = snapshots / ".crashed.partial"
    partial.mkdir()
    (partial / fmt.MEMORY).write_bytes(b"half")
    assert ferry.ok("snapshot", "list", "vm1") == []
    ferry.ok("poweroff", "vm1")
    ferry.ok("start", "vm1")
    assert not partial.exists()
