"""The launcher of VM processes: forked from a caller alone in its process, a fresh
interpreter otherwise; either way the same first line, session and descriptors."""

import sys
import threading

import pytest

from ferry.host import launcher
from ferry.host.api import Host


def launch_broken_vm(tmp_path):
    """A VM process for a VM whose kernel is not an ELF file: it answers with an error line and ends."""
    (tmp_path / "kernel").write_bytes(b"junk\n")
    host = Host(tmp_path)
    host.define({"name": "bad", "vcpus": 1, "memory": 16, "kernel": str(tmp_path / "kernel")})
    host.vmdir("bad").make()
    return launcher.launch(tmp_path, ["bad"], tmp_path / "engine.log", timeout=30)


def test_a_caller_alone_forks_and_gets_the_vm_processs_answer(tmp_path):
    if sys.executable != launcher.engine_python():
        pytest.skip("this interpreter is not the engine's: the launcher execs")
    if threading.active_count() != 1:
        pytest.skip("an earlier test left a thread in this process: the launcher rightly execs")
    started = launch_broken_vm(tmp_path)
    assert started.forked
    assert started.answered and started.line.startswith("error: kernel ")
    assert started.process.wait(10) == 1


def test_a_caller_with_another_thread_starts_a_fresh_interpreter(tmp_path):
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        started = launch_broken_vm(tmp_path)
    finally:
        stop.set()
        other.join()
    assert not started.forked
    assert started.answered and started.line.startswith("error: kernel ")
    assert started.process.wait(10) == 1


def test_a_command_line_longer_than_the_callers_room_is_not_forked(tmp_path):
    assert not launcher.can_fork(launcher.command_line(tmp_path / ("x" * 10**6), ["vm1"]))


def test_another_interpreter_is_not_forked(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "engine_python", lambda: "/opt/ferry/venv/bin/python")
    assert not launcher.can_fork(launcher.command_line(tmp_path, ["vm1"]))


def test_the_forked_child_leaves_the_callers_output_alone(tmp_path, capfd):
    if sys.executable != launcher.engine_python():
        pytest.skip("this interpreter is not the engine's: the launcher execs")
    print("said once", end="")
    started = launch_broken_vm(tmp_path)
    started.process.wait(10)
    out, _ = capfd.readouterr()
    assert out == "said once"
    log = (tmp_path / "engine.log").read_text()
    assert "said once" not in log
