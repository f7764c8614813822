"""The engine on real KVM, driven through ``ferry`` with the built-in self-checking guest."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support.cli import assert_sequence_continues

pytestmark = pytest.mark.kvm
GUEST = "builtin:selfcheck"


def boot(ferry, tmp_path, name="vm1", vcpus=1, memory=64, cmdline="fill=50 rate=2000 hb=200"):
    ferry.define(tmp_path, name=name, vcpus=vcpus, memory=memory, kernel=GUEST, cmdline=cmdline)
    return ferry.ok("start", name)


def test_builtin_guest_boots_and_heartbeats_ok(ferry, tmp_path):
    vm = boot(ferry, tmp_path)
    assert vm["state"] == "running" and vm["pid"]
    beats = ferry.wait_heartbeats("vm1", 5)
    assert_sequence_continues(beats)
    assert beats[-1][3] > 0, "the workload wrote no pages"
    assert b"FERRY-SELFCHECK" in ferry.console("vm1")


def test_pause_resume_keeps_the_sequence(ferry, tmp_path):
    boot(ferry, tmp_path)
    ferry.wait_heartbeats("vm1", 3)
    assert ferry.ok("pause", "vm1")["state"] == "paused"
    frozen = len(ferry.heartbeats("vm1"))
    time.sleep(1.0)
    assert len(ferry.heartbeats("vm1")) == frozen, "heartbeats while paused"
    assert ferry.ok("resume", "vm1")["state"] == "running"
    beats = ferry.wait_heartbeats("vm1", frozen + 4)
    assert_sequence_continues(beats)


def test_two_vcpus_both_report(ferry, tmp_path):
    boot(ferry, tmp_path, vcpus=2)
    for cpu in (0, 1):
        assert_sequence_continues(ferry.wait_heartbeats("vm1", 3, cpu=cpu))


def test_guest_poweroff_ends_the_vm_process(ferry, tmp_path):
    vm = boot(ferry, tmp_path, cmdline="hb=100 poweroff_after=2")
    vm = ferry.wait_state("vm1", "stopped")
    assert vm["error"] is None and vm["pid"] is None
    assert b"powered off" in ferry.console("vm1")


def test_guest_reboot_restarts_the_guest(ferry, tmp_path):
    boot(ferry, tmp_path, cmdline="hb=100 reboot_after=2")
    ferry.wait_console("vm1", rb"FERRY-SELFCHECK .*boot=2", timeout=60)
    vm = ferry.ok("status", "vm1")
    assert vm["state"] == "running" and vm["boot_count"] == 2


@pytest.mark.parametrize("crash, words", [("triple", "triple fault"), ("internal", "KVM")])
def test_guest_crash_stops_the_vm_with_a_message(ferry, tmp_path, crash, words):
    boot(ferry, tmp_path, cmdline=f"hb=100 crash={crash}")
    vm = ferry.wait_state("vm1", "crashed")
    assert words in vm["error"]
    text = ferry.run("status", "vm1").out
    assert "crashed" in text and words in text


def test_two_starts_leave_one_process(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=32, kernel=GUEST, cmdline="hb=200")
    starts = [subprocess.Popen([sys.executable, "-m", "ferry.cli", "--json", "start", "vm1"],
                               env=ferry.env, stdout=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(60) for p in starts] == [0, 0]
    pid = ferry.ok("status", "vm1")["pid"]
    assert ferry.ok("start", "vm1")["pid"] == pid
    found = subprocess.run(["pgrep", "-f", f"ferry.vmprocess.main --state-dir {ferry.state_dir} vm1"],
                           capture_output=True, text=True).stdout.split()
    assert found == [str(pid)]


def test_the_vm_process_keeps_none_of_the_starters_descriptors(ferry, tmp_path):
    """Forked from the CLI, it must not hold the start lock (the next start would hang) nor
    anything else the CLI had open; it shows as the VM process in ps."""
    pid = boot(ferry, tmp_path)["pid"]
    held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert not any(path.endswith("start.lock") for path in held), held
    assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in ("0", "1")} == {os.devnull}
    assert os.readlink(f"/proc/{pid}/fd/2").endswith("/vm1/engine.log")
    args = open(f"/proc/{pid}/cmdline", "rb").read().rstrip(b"\0").replace(b"\0", b" ").decode()
    assert args.endswith(f"-m ferry.vmprocess.main --state-dir {ferry.state_dir} vm1"), args
    assert os.getsid(pid) == pid
    assert ferry.ok("stop", "vm1", "--timeout", "20")["state"] == "stopped"
    assert ferry.ok("start", "vm1")["state"] == "running"


def test_a_caller_with_threads_starts_the_vm_under_a_fresh_interpreter(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=32, kernel=GUEST, cmdline="hb=200")
    script = ("import threading, json; from ferry.host.api import Host; "
              "threading.Thread(target=__import__('time').sleep, args=(5,), daemon=True).start(); "
              f"print(json.dumps(Host({str(ferry.state_dir)!r}).start('vm1')))")
    done = subprocess.run([sys.executable, "-c", script], env=ferry.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["pid"]
    assert open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:3] == [
        sys.executable.encode(), b"-m", b"ferry.vmprocess.main"]
    beats = ferry.wait_heartbeats("vm1", 3)
    assert_sequence_continues(beats)


def test_vm_outlives_the_shell_that_started_it(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=32, kernel=GUEST, cmdline="hb=200")
    # A runner started under nohup passes SIGHUP ignored down to the shell, which would then
    # outlive the hangup; the test is about a real terminal's hangup, so the default comes back.
    shell = subprocess.Popen(["bash", "-c", f"{sys.executable} -m ferry.cli start vm1; sleep 30"],
                             env=ferry.env, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    ferry.wait_heartbeats("vm1", 1)
    os.killpg(shell.pid, signal.SIGHUP)
    shell.wait(10)
    before = len(ferry.heartbeats("vm1"))
    ferry.wait_heartbeats("vm1", before + 3)
    assert ferry.ok("status", "vm1")["state"] == "running"


@pytest.mark.parametrize("values, key", [
    ({"name": "a", "vcpus": 1, "memory": 32, "kernel": GUEST, "color": "red"}, "color"),
    ({"name": "a", "vcpus": 1, "memory": 0, "kernel": GUEST}, "memory"),
    ({"name": "a", "vcpus": 0, "memory": 32, "kernel": GUEST}, "vcpus"),
    ({"name": "a", "vcpus": 1, "memory": "lots", "kernel": GUEST}, "memory"),
    ({"name": "a", "vcpus": 1, "memory": 32, "kernel": "/nonexistent/kernel"}, "kernel"),
    ({"name": "A B", "vcpus": 1, "memory": 32, "kernel": GUEST}, "name"),
])
def test_bad_definitions_get_one_line_naming_the_key(ferry, tmp_path, values, key):
    import yaml
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    result = ferry.run("define", str(path))
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err
    assert key in lines[0]


def test_duplicate_name_is_refused(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=32, kernel=GUEST)
    result = ferry.run("define", str(tmp_path / "vm1.yaml"))
    assert result.code != 0 and "name" in result.err and "already defined" in result.err


def test_host_info_reports_kvm_and_vms(ferry, tmp_path):
    boot(ferry, tmp_path)
    info = ferry.ok("host-info")
    assert info["kvm"]["available"] and info["cpus"] >= 1
    assert info["vms"] == [{"name": "vm1", "vcpus": 1, "memory": 64, "state": "running", "tags": []}]
    assert info["drained"] is None
    assert (info["committed_vcpus"], info["committed_memory_mib"]) == (1, 64)
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next(line for line in cpuinfo if line.startswith("flags")).split(":")[1].split()
    assert info["cpu"]["flags"] == sorted(set(flags)) and info["cpu"]["model"]  # what placement compares


def test_undefine_removes_the_folder(ferry, tmp_path):
    boot(ferry, tmp_path)
    assert ferry.run("undefine", "vm1").code != 0, "undefine of a running VM must be refused"
    ferry.ok("poweroff", "vm1")
    ferry.ok("undefine", "vm1")
    assert not (ferry.state_dir / "vms" / "vm1").exists()
    assert ferry.ok("list") == []


def test_stop_presses_the_power_button_and_the_guest_shuts_down(ferry, tmp_path):
    boot(ferry, tmp_path, cmdline="fill=10 rate=0 hb=100")
    ferry.wait_heartbeats("vm1", 2)
    started = time.monotonic()
    vm = ferry.ok("stop", "vm1", "--timeout", "20")
    assert vm["state"] == "stopped" and time.monotonic() - started < 10
    assert b"power button: powering off" in ferry.console("vm1")


def test_a_4_gib_guest_runs_with_ram_on_both_sides_of_the_pci_hole(ferry, tmp_path):
    vm = boot(ferry, tmp_path, memory=4096, cmdline="fill=2 rate=2000 hb=200")
    assert vm["memory"] == 4096
    assert_sequence_continues(ferry.wait_heartbeats("vm1", 3))
    assert b"ram_mib=4096" in ferry.console("vm1")


def test_console_shows_what_the_guest_printed(ferry, tmp_path):
    boot(ferry, tmp_path)
    ferry.wait_heartbeats("vm1", 2)
    shown = ferry.run("console", "vm1", "--no-input")
    assert shown.code == 0 and "FERRY-SELFCHECK" in shown.out and "HB cpu=0 seq=1 " in shown.out
