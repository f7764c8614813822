"""The command line as people who use virsh and bhyvectl expect it."""

import json
import subprocess
import sys

import pytest

from ferry import __version__


def test_version(ferry):
    done = ferry.run("--version")
    assert done.code == 0 and done.out.strip() == f"ferry {__version__}"


def test_list_of_a_state_dir_that_does_not_exist_is_an_error(ferry, tmp_path):
    done = ferry.run("list", "--state-dir", str(tmp_path / "nonexistent"))
    assert done.code == 1 and done.err.startswith("ferry: state-dir: ") and "does not exist" in done.err


def test_errors_under_json_are_json_with_a_kind(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck")
    done = ferry.run("--json", "status", "nosuch")
    assert done.code == 1 and done.out == ""
    error = json.loads(done.err)
    assert error["kind"] == "not-found" and "nosuch" in error["error"]
    assert json.loads(ferry.run("--json", "pause", "vm1").err)["kind"] == "conflict"


def test_list_is_a_table_with_a_header_and_a_state_filter(ferry, tmp_path):
    for name in ("alpha", "a-much-longer-name"):
        ferry.define(tmp_path, name=name, vcpus=1, memory=16, kernel="builtin:selfcheck")
    lines = ferry.run("list").out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "VCPUS", "MEMORY", "PID", "UPTIME", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == ["a-much-longer-name", "alpha"]
    assert len({line.index("stopped") for line in lines[1:]}) == 1, "columns are not aligned"
    assert ferry.ok("list", "--state", "running") == []
    assert len(ferry.ok("list", "--state", "stopped")) == 2


def test_output_into_a_closed_pipe_is_no_traceback(ferry, tmp_path):
    for index in range(30):
        ferry.define(tmp_path, name=f"vm{index}", vcpus=1, memory=16, kernel="builtin:selfcheck")
    done = subprocess.run(f"{sys.executable} -m ferry.cli list | head -1", shell=True, env=ferry.env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("NAME") and "Traceback" not in done.stderr and "Broken pipe" not in done.stderr


def test_console_of_a_vm_never_started_is_one_line(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck")
    done = ferry.run("console", "vm1")
    assert done.code == 1 and done.err.strip() == "ferry: vm1: no console output yet (the VM was never started)"


def test_yaml_errors_name_line_and_column(ferry, tmp_path):
    path = tmp_path / "vm.yaml"
    path.write_text("name: vm1\nvcpus: [1\nmemory: 16\n")
    done = ferry.run("define", str(path))
    assert done.code == 1 and "not valid YAML: line 3, column 7: " in done.err


@pytest.mark.kvm
def test_undefine_keeps_snapshots_unless_told(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck", cmdline="fill=5 hb=100")
    ferry.ok("start", "vm1")
    ferry.ok("snapshot", "create", "vm1", "--snapshot", "keep")
    ferry.ok("poweroff", "vm1")
    refused = ferry.run("undefine", "vm1")
    assert refused.code == 1 and "1 snapshot(s) (keep)" in refused.err and "--with-snapshots" in refused.err
    assert ferry.ok("snapshot", "list", "vm1")[0]["id"] == "keep"
    ferry.ok("undefine", "vm1", "--with-snapshots")
    assert ferry.ok("list") == []


@pytest.mark.kvm
def test_stop_of_a_guest_that_does_not_react_says_so_unless_forced(ferry, tmp_path):
    # A heartbeat a minute: the guest looks at the power button only that often.
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck", cmdline="fill=5 hb=60000")
    ferry.ok("start", "vm1")
    refused = ferry.run("stop", "vm1", "--timeout", "0.5")
    assert refused.code == 1 and "did not power off within 0.5 s" in refused.err and "--force" in refused.err
    assert ferry.ok("status", "vm1")["state"] == "running"
    forced = ferry.ok("stop", "vm1", "--timeout", "0.5", "--force")
    assert forced["state"] == "stopped" and forced["forced"] is True


def test_the_console_log_rotates_and_a_reader_follows_it(tmp_path):
    from ferry.cli.vms import ConsoleLog
    from ferry.vmprocess.console import Console
    path = tmp_path / "console.log"
    console = Console(path, limit=100)
    console.write(b"a" * 60 + b"\n")
    reader = ConsoleLog(path, None)
    assert reader.read() == b"a" * 60 + b"\n"
    console.write(b"b" * 60 + b"\n")          # past the limit: rotated after this write
    console.write(b"c\n")
    assert (tmp_path / "console.log.1").stat().st_size == 122 and path.read_bytes() == b"c\n"
    assert reader.read() == b"b" * 60 + b"\n" and reader.read() == b"c\n"
    assert ConsoleLog(path.with_name("console.log.1"), 1).read() == b"b" * 60 + b"\n"


@pytest.mark.kvm
def test_console_starts_with_the_last_lines(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck", cmdline="fill=5 hb=50")
    ferry.ok("start", "vm1")
    ferry.wait_heartbeats("vm1", 10)
    shown = ferry.run("console", "vm1", "--lines", "3", "--no-input").out.splitlines()
    assert len(shown) == 3 and all(line.startswith("HB cpu=0") for line in shown[:2])
    assert ferry.run("console", "vm1", "--all", "--no-input").out.startswith(ferry.console("vm1").decode()[:20])


def test_the_command_table_names_every_command_once():
    from ferry import cli
    parser = cli.build_parser()
    registered = next(a for a in parser._actions if a.dest == "command").choices
    assert set(registered) == set(cli.COMMANDS)


def test_a_command_imports_only_what_it_uses(ferry):
    """Start-up: ``ferry list`` must not pay for KVM, snapshots, migration, SSH or TLS, nor for
    what only launching a VM process or talking to a running one needs."""
    probe = ("import sys, ferry.cli; ferry.cli.main(['--json', 'list']); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ssl', 'yaml', 'zstandard', "
             "'dataclasses', 'socket', 'ctypes', 'subprocess') "
             "or m.startswith(('ferry.kvm', 'ferry.snapshot', 'ferry.migration', 'ferry.machine'))))")
    ferry.state_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", probe], env=ferry.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]", done.stdout


def test_console_json_lines_split_lines_and_keep_odd_bytes(capsys):
    from ferry.cli.vms import JsonLines
    out = JsonLines()
    out.write(b"first\r\nsec")
    out.write(b"ond\n\xff\xfeodd\n")
    out.write(b"unfinished")
    out.end()
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [{"line": "first"}, {"line": "second"}, {"line": "\\xff\\xfeodd"},
                       {"line": "unfinished", "partial": True}]


@pytest.mark.kvm
def test_console_under_json_is_json_lines_of_the_log(ferry, tmp_path):
    ferry.define(tmp_path, name="vm1", vcpus=1, memory=16, kernel="builtin:selfcheck", cmdline="fill=5 hb=50")
    ferry.ok("start", "vm1")
    ferry.wait_heartbeats("vm1", 10)
    ferry.ok("poweroff", "vm1")
    for args in (("--lines", "3"), ("--all",), ("--all", "--follow")):
        done = ferry.run("--json", "console", "vm1", *args)
        assert done.code == 0 and done.err == "", done.err
        records = [json.loads(line) for line in done.out.splitlines()]  # every line one JSON object
        assert all(isinstance(r, dict) and set(r) <= {"line", "partial"} for r in records), done.out
        logged = ferry.console("vm1").decode().splitlines()
        assert [r["line"] for r in records] == logged[-len(records):]
    assert len([json.loads(line) for line in ferry.run("--json", "console", "vm1", "-n", "3").out.splitlines()]) == 3
