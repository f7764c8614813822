"""The engine as modules reach it: ``<engine_venv>/bin/ferry --json`` through ``run_command``, its
one JSON document, its JSON errors as one ``EngineError``, and one clear line for everything else."""

from __future__ import annotations

import ast
import json
import os

import pytest

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import Engine, EngineError, EngineMissing

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


class Canned:
    """run_command answering every command with one (rc, stdout, stderr), keeping what it ran."""

    def __init__(self, rc=0, out="{}", err=""):
        self.answer = (rc, out, err)
        self.ran = []

    def run_command(self, argv, data=None):
        self.ran.append((argv, data))
        return self.answer


def engine(venv, **answer):
    """An Engine whose run_command is ``Canned(**answer)`` (its ``module``)."""
    return Engine(Canned(**answer), None, venv)


def test_no_engine_command_is_one_clear_line(tmp_path):
    with pytest.raises(EngineMissing) as failure:
        Engine(Canned(), None, str(tmp_path / "no-venv"))
    assert str(failure.value) == (f"the Ferry engine is not installed on this host (no {tmp_path}/no-venv/bin/ferry): "
                                  "run the ferry.hypervisor.engine role")


def test_an_engine_command_that_cannot_run_is_missing_too(venv):
    os.chmod(os.path.join(venv, "bin", "ferry"), 0o644)
    with pytest.raises(EngineMissing):
        Engine(Canned(), None, venv)


def test_the_engines_json_error_is_its_message_and_kind(venv):
    error = {"error": "vm1: busy migrating to h2; pause is refused until it ends", "kind": "busy"}
    eng = engine(venv, rc=1, out="", err=json.dumps(error) + "\n")
    with pytest.raises(EngineError) as failure:
        eng.pause("vm1")
    assert (str(failure.value), failure.value.kind) == (error["error"], "busy")


def test_a_vm_that_is_not_defined_is_none(venv):
    eng = engine(venv, rc=1, out="", err='{"error": "no VM named \'vm1\' in /x", "kind": "not-found"}\n')
    assert eng.get("vm1") is None
    with pytest.raises(EngineError, match="^no VM named"):
        eng.start("vm1")


def test_a_broken_engine_is_one_line_naming_the_role(venv):
    traceback = ("Traceback (most recent call last):\n  File \"x\", line 1, in <module>\n"
                 "ModuleNotFoundError: No module named 'zstandard'\n")
    eng = engine(venv, rc=1, out="", err=traceback)
    with pytest.raises(EngineError) as failure:
        eng.get("vm1")
    assert str(failure.value) == (f"the Ferry engine on this host does not work ({venv}/bin/ferry exited 1: "
                                  "ModuleNotFoundError: No module named 'zstandard'): "
                                  "run the ferry.hypervisor.engine role to reinstall it")


@pytest.mark.parametrize("out", ["", "not json", "{\"cut\": "])
def test_output_that_is_not_one_json_document_is_one_line(venv, out):
    eng = engine(venv, rc=0, out=out)
    with pytest.raises(EngineError) as failure:
        eng.get("vm1")
    assert "\n" not in str(failure.value) and "no JSON on its output" in str(failure.value)


@pytest.mark.parametrize("err", ["", "\n\n", "x" * 100000, '{"kind": "busy"}', "[1, 2]"])
def test_any_stderr_is_one_bounded_line(venv, err):
    eng = engine(venv, rc=2, out="", err=err)
    with pytest.raises(EngineError) as failure:
        eng.stop("vm1", 30)
    message = str(failure.value)
    assert "\n" not in message and len(message) < 400 and message.endswith("reinstall it")


def test_the_command_line_is_a_list_with_the_name_after_double_dash(venv):
    eng = engine(venv)
    runner = eng.module
    eng.state_dir = "/srv/ferry state"
    eng.stop("-rf", 7)
    eng.undefine("vm1")
    (stop, data), (undefine, no_data) = runner.ran
    command = os.path.join(venv, "bin", "ferry")
    assert stop == [command, "--json", "stop", "--timeout", "7", "--force", "--state-dir", "/srv/ferry state",
                    "--", "-rf"] and data is None
    assert undefine[:4] == [command, "--json", "undefine", "--with-snapshots"] and no_data is None


@pytest.mark.parametrize("field", ["name", "state_dir"])
def test_a_nul_character_is_refused_before_running_anything(venv, field):
    eng = engine(venv)
    runner = eng.module
    name = "vm\0" if field == "name" else "vm1"
    if field == "state_dir":
        eng.state_dir = "/srv\0/x"
    with pytest.raises(EngineError, match=f"^{field}: .* contains a NUL character"):
        eng.get(name)
    assert runner.ran == []


def test_a_definition_is_passed_as_json_on_stdin(venv):
    eng = engine(venv, out=json.dumps({"name": "vm1"}))
    runner = eng.module
    values = {"name": "vm1", "cmdline": "$(reboot) `id` ; | & \"'"}
    eng.validate(values)
    eng.define(values)
    for argv, data in runner.ran:
        assert argv[-1] == "-" and json.loads(data) == values
        assert not any("reboot" in arg for arg in argv)


def plugin_sources():
    for folder, dummy, files in os.walk(os.path.join(ROOT, "plugins")):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_no_plugin_imports_the_engine():
    """The collection reaches the engine through its command only: any Python can run a module."""
    sources = list(plugin_sources())
    assert len(sources) >= 4
    for path in sources:
        with open(path) as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("ferry", "site"), f"{path} imports {name}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("import_module", "addsitedir"):
                pytest.fail(f"{path}:{node.lineno} imports at run time")
