"""Snapshots on real KVM: save, restore, clone, corruption, crash safety."""

import json
import os
import stat
import subprocess
import sys
import time

import pytest
import yaml

from ferry.host.api import Host
from ferry.snapshot import format as fmt

from support.cli import Ferry, assert_sequence_continues
from support.damage import CORPUS, corpus, flip_bit, last_chunk

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


def test_snapshot_list_is_a_table_with_a_header(ferry, tmp_path):
    running_vm(ferry, tmp_path)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "a", "--tag", "x", "--tag", "y")
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "b-longer-id", "--compress")
    snapshot_folder(ferry, "vm1", "c-empty").mkdir()
    lines = ferry.run("snapshot", "list", "vm1").out.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "MEMORY", "DISK", "PAUSE", "TAGS", "ORIGIN", "STATUS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["a", "b-longer-id", "c-empty"]
    status = lines[0].index("STATUS")
    assert rows["a"][status:] == "ok" and rows["b-longer-id"][status:] == "ok"
    assert rows["c-empty"][status:].startswith("DAMAGED - ")
    assert " x,y " in rows["a"] and " zstd " in rows["b-longer-id"] and " 64 MiB " in rows["a"]
    assert lines[0].index("TAGS") == rows["a"].index("x,y"), "columns are not aligned"
    assert [s["id"] for s in ferry.ok("snapshot", "list", "vm1")] == ["a", "b-longer-id", "c-empty"]


def test_a_vm_without_snapshots_lists_the_header_alone(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel=GUEST)
    assert ferry.run("snapshot", "list", "vm1").out.split() == [
        "ID", "CREATED", "MEMORY", "DISK", "PAUSE", "TAGS", "ORIGIN", "STATUS"]
    assert ferry.ok("snapshot", "list", "vm1") == []


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


def test_memory_files_are_sparse(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=256, cmdline="fill=10 rate=0 hb=200")
    snap = ferry.ok("snapshot", "create", "vm1", "--snapshot", "sparse")
    files = list((snapshot_folder(ferry, "vm1", "sparse") / fmt.CHUNKS).iterdir())
    used = sum(path.stat().st_blocks * 512 for path in files)
    assert {path.stat().st_size for path in files} == {2**21} and len(files) < 128
    assert 0.08 * 256 * 2**20 < used < 0.25 * 256 * 2**20, f"{used / 2**20:.1f} MiB on disk"
    assert snap["disk_bytes"] == used and snap["shared_bytes"] == 0 and snap["parent"] is None


# --- damaged and crafted snapshots: refused in one line, by name, with no VM left running ---

SMALL = 32  # MiB: the corpus copies the snapshot once per variant


def _copy(source, folder):
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    subprocess.run(["cp", "-a", "--sparse=always", str(source), str(folder)], check=True)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One good snapshot of a small 1-vCPU VM, copied afresh for each kind of damage."""
    tmp = tmp_path_factory.mktemp("pristine")
    (tmp / "state").mkdir()
    ferry = Ferry(tmp / "state")
    running_vm(ferry, tmp, memory=SMALL)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "good", "--exit")
    ferry.wait_state("vm1", "stopped")
    return snapshot_folder(ferry, "vm1", "good")


@pytest.fixture(scope="module")
def stopped_vm(tmp_path_factory):
    """A stopped VM of the snapshot's shape, for the damaged copies to be restored into."""
    tmp = tmp_path_factory.mktemp("target")
    (tmp / "state").mkdir()
    ferry = Ferry(tmp / "state")
    ferry.define(tmp, name="vm1", vcpus=1, memory=SMALL, kernel=GUEST, cmdline=BUSY)
    yield ferry
    Host(ferry.state_dir).poweroff("vm1", timeout=10)


def _refused(result, command, damage, named=""):
    assert result.code != 0, f"ferry {' '.join(command)} accepted a snapshot with {damage.name}"
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert damage.words in result.err and named in result.err, result.err


@pytest.mark.parametrize("name", sorted(corpus("chunks")))
def test_damaged_snapshot_is_refused_in_one_line_and_no_vm_runs(stopped_vm, pristine, name):
    ferry, damage = stopped_vm, CORPUS[name]
    folder = snapshot_folder(ferry, "vm1", "bad")
    folder.parent.mkdir(exist_ok=True)
    _copy(pristine, folder)
    named = last_chunk(folder) if damage.names_last_chunk else ""
    damage.harm(folder)
    commands = [("snapshot", "verify", "vm1", "bad"), ("restore", "vm1", "bad"), ("restore", "vm1", "bad", "--eager")]
    if not damage.digest_only:
        commands.append(("restore", "vm1", "bad", "--no-verify"))
    for command in commands:
        # A FIFO or a device must never make a command wait.
        _refused(ferry.run(*command, timeout=30), command, damage, named)
        assert ferry.ok("status", "vm1")["state"] == "stopped"
        assert not (ferry.state_dir / "vms" / "vm1" / "control.sock").exists()
    listed = ferry.run("snapshot", "list", "vm1", timeout=30)
    assert listed.code == 0 and "Traceback" not in listed.err and not listed.err, listed.err
    if not damage.digest_only:
        rows = listed.out.splitlines()[1:]
        assert len(rows) == 1 and rows[0].split()[0] == "bad" and "DAMAGED - " in rows[0], listed.out
        assert damage.words in listed.out, listed.out


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
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=SMALL, kernel=GUEST, cmdline=BUSY)
    folder = snapshot_folder(ferry, "vm1", "bad")
    folder.parent.mkdir(parents=True)
    _copy(pristine, folder)
    flip_bit(folder / fmt.CHUNKS / "8", 100)  # inside the pages the guest owns, from 16 MiB
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


def test_a_symlinked_snapshot_folder_is_listed_damaged_and_deleting_it_keeps_the_target(stopped_vm, pristine):
    ferry = stopped_vm
    link = snapshot_folder(ferry, "vm1", "linked")
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(pristine)
    listed = ferry.run("snapshot", "list", "vm1")
    row = next(line for line in listed.out.splitlines() if line.split()[0] == "linked")
    assert "DAMAGED - linked: cannot open the snapshot folder" in row, listed.out
    refused = ferry.run("restore", "vm1", "linked")
    assert refused.code != 0 and "a plain directory is required" in refused.err, refused.err
    ferry.ok("snapshot", "delete", "vm1", "linked")
    assert not os.path.lexists(link) and (pristine / fmt.MANIFEST).is_file()


# --- the snapshot's shape, file modes, concurrent saves, failed clones ---

def test_restore_into_a_vm_redefined_with_one_vcpu_is_refused_and_a_clone_runs_both(ferry, tmp_path):
    running_vm(ferry, tmp_path, vcpus=2, memory=SMALL)
    ferry.wait_heartbeats("vm1", 3, cpu=1)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "two", "--exit")
    ferry.wait_state("vm1", "stopped")
    (tmp_path / "vm1.yaml").write_text(yaml.safe_dump({"name": "vm1", "vcpus": 1, "memory": SMALL,
                                                       "kernel": GUEST, "cmdline": BUSY}))
    ferry.ok("define", str(tmp_path / "vm1.yaml"), "--replace")
    refused = ferry.run("restore", "vm1", "two")
    assert refused.code != 0 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert ("snapshot two has 2 vCPUs and 32 MiB, VM vm1 is now defined with 1 vCPU and 32 MiB: "
            "restore it --as NEWNAME, or define vm1 back") in refused.err
    assert ferry.ok("status", "vm1")["state"] == "stopped"
    clone = ferry.ok("restore", "vm1", "two", "--as", "vm2")
    assert clone["vcpus"] == 2 and clone["state"] == "running"
    for cpu in (0, 1):
        ferry.wait_heartbeats("vm2", 3, cpu=cpu)
        assert_sequence_continues(ferry.heartbeats("vm2", cpu))


@pytest.mark.parametrize("compress", [False, True])
def test_every_file_of_a_new_snapshot_is_private(ferry, tmp_path, compress):
    running_vm(ferry, tmp_path, memory=SMALL)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "p", *(["--compress"] if compress else []))
    folder = snapshot_folder(ferry, "vm1", "p")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert set(modes) == {fmt.MANIFEST, fmt.STATE, fmt.MEMORY_ZSTD if compress else fmt.CHUNKS}
    assert set(modes.values()) == {0o600} | (set() if compress else {0o700}), modes
    chunk_modes = {stat.S_IMODE(path.stat().st_mode) for path in (folder / fmt.CHUNKS).glob("*")}
    assert chunk_modes == (set() if compress else {0o600}), chunk_modes


def test_two_saves_of_one_id_at_once_one_succeeds_the_other_is_refused_at_once(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=SMALL)
    command = [sys.executable, "-m", "ferry.cli", "snapshot", "create", "vm1", "--snapshot", "same",
               "--stop-the-world"]
    runs = [subprocess.Popen(command, env=ferry.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(60), *run.communicate()) for run in runs]
    assert sorted(code for code, *_ in results) == [0, 1], results
    _, _, err = next(r for r in results if r[0] != 0)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "a save of same is under way" in err or "already has a snapshot 'same'" in err, err
    assert [s["id"] for s in ferry.ok("snapshot", "list", "vm1")] == ["same"]
    assert ferry.ok("snapshot", "verify", "vm1", "same")["verified"]
    assert not list((ferry.state_dir / "vms" / "vm1" / "snapshots").glob(".*"))


def test_a_refused_save_of_a_taken_id_is_immediate(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=SMALL)
    partial = ferry.state_dir / "vms" / "vm1" / "snapshots" / ".busy.partial"
    partial.mkdir(parents=True)  # as while another save of "busy" runs
    started = time.monotonic()
    refused = ferry.run("snapshot", "create", "vm1", "--snapshot", "busy")
    assert refused.code != 0 and "snapshot: a save of busy is under way" in refused.err, refused.err
    assert time.monotonic() - started < 5 and partial.is_dir()


def test_a_failed_restore_leaves_nothing_of_a_clone_and_the_vm_as_it_was(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=SMALL)
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "s", "--compress")
    # Half the compressed memory: with --no-verify only the VM process, decompressing it, sees that.
    memory = snapshot_folder(ferry, "vm1", "s") / (fmt.MEMORY + ".zst")
    os.truncate(memory, memory.stat().st_size // 2)
    replaced = ferry.run("restore", "vm1", "s", "--replace")
    assert replaced.code != 0 and "memory.raw.zst" in replaced.err, replaced.err
    assert ferry.ok("status", "vm1")["state"] == "running", "--replace powered off before checking"
    failed = ferry.run("restore", "vm1", "s", "--as", "vm2", "--no-verify")
    assert failed.code != 0 and "memory.raw.zst" in failed.err, failed.err
    assert len(failed.err.strip().splitlines()) == 1 and "Traceback" not in failed.err, failed.err
    assert "vm2" not in [vm["name"] for vm in ferry.ok("list")]
    assert not (ferry.state_dir / "vms" / "vm2").exists()
    ferry.ok("poweroff", "vm1")
    failed = ferry.run("restore", "vm1", "s", "--no-verify")
    assert failed.code != 0 and "memory.raw.zst" in failed.err, failed.err
    vm = ferry.ok("status", "vm1")
    assert vm["state"] == "stopped" and vm["error"] is None, vm
    assert not (ferry.state_dir / "vms" / "vm1" / "control.sock").exists()


def _with_terminal_stderr(ferry, *args):
    """``ferry ARGS`` with stderr a terminal and stdout a pipe: (exit code, stdout, what the terminal got)."""
    import pty
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "ferry.cli", *args], env=ferry.env,
                               stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    drawn = b""
    while True:
        try:
            piece = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not piece:
            break
        drawn += piece
    out = process.stdout.read()
    os.close(leader)
    return process.wait(60), out.decode(), drawn.decode(errors="replace")


def test_long_snapshot_commands_draw_progress_on_a_terminal_only(ferry, tmp_path):
    running_vm(ferry, tmp_path, memory=512, cmdline="fill=40 rate=0 hb=200")
    code, out, drawn = _with_terminal_stderr(ferry, "--json", "snapshot", "create", "vm1", "--snapshot", "z",
                                             "--compress")
    assert code == 0 and json.loads(out)["id"] == "z", (out, drawn)  # stdout: the one document
    assert "vm1: compress [" in drawn and "%" in drawn, drawn
    assert drawn.endswith("\r"), "the progress line is left behind"
    assert not (ferry.state_dir / "vms" / "vm1" / "progress.json").exists()
    code, out, drawn = _with_terminal_stderr(ferry, "snapshot", "verify", "vm1", "z")
    assert code == 0 and out.startswith("z: ") and "verified" in out
    assert "vm1 z: verify   [" in drawn, drawn
    code, out, drawn = _with_terminal_stderr(ferry, "restore", "vm1", "z", "--as", "vm2")
    assert code == 0 and "vm2" in out, (out, drawn)
    assert "vm1 z: verify   [" in drawn and "vm1 z: load     [" in drawn, drawn  # the copy-in too
    assert not (ferry.state_dir / "vms" / "vm2" / "progress.json").exists()
    quiet = ferry.run("snapshot", "create", "vm1", "--snapshot", "q", "--compress")
    assert quiet.code == 0 and quiet.err == "", quiet.err  # not a terminal: nothing more
    assert ferry.run("snapshot", "verify", "vm1", "q").err == ""
