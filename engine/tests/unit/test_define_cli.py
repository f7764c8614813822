"""``ferry define -`` (the definition on standard input), ``define --check`` (validate, write
nothing) and ``poweroff --timeout``: what programs driving ``ferry --json`` rely on."""

import json
import os
import subprocess
import sys

import pytest

VM = {"name": "vm1", "vcpus": 1, "memory": 16, "kernel": "builtin:selfcheck", "cmdline": "hb=100"}
STORED = {**VM, "initrd": None, "cpu": "host", "tags": []}


def ferry(tmp_path, *args, stdin: bytes | str = b""):
    env = {**os.environ, "FERRY_STATE_DIR": str(tmp_path / "state")}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run([sys.executable, "-m", "ferry.cli", *args], env=env, input=data,
                          capture_output=True, timeout=60)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def json_error(done) -> dict:
    code, out, err = done
    assert code == 1 and out == "" and "Traceback" not in err, done
    assert len(err.strip().splitlines()) == 1, err
    return json.loads(err)


@pytest.mark.parametrize("text", [json.dumps(VM), "name: vm1\nvcpus: 1\nmemory: 16\nkernel: builtin:selfcheck\n"
                                  "cmdline: hb=100\n"], ids=["json", "yaml"])
def test_define_reads_the_definition_from_stdin(tmp_path, text):
    code, out, err = ferry(tmp_path, "--json", "define", "-", stdin=text)
    assert code == 0, err
    vm = json.loads(out)
    assert {key: vm[key] for key in STORED} == STORED and vm["state"] == "stopped"
    code, out, _ = ferry(tmp_path, "--json", "status", "vm1")
    assert code == 0 and json.loads(out)["cmdline"] == "hb=100"


def test_define_check_prints_the_stored_form_and_writes_nothing(tmp_path):
    code, out, err = ferry(tmp_path, "--json", "define", "--check", "-", stdin=json.dumps(VM))
    assert code == 0, err
    assert json.loads(out) == STORED
    assert not (tmp_path / "state").exists()


def test_define_check_of_a_defined_vm_changes_nothing(tmp_path):
    assert ferry(tmp_path, "--json", "define", "-", stdin=json.dumps(VM))[0] == 0
    changed = {**VM, "cmdline": "hb=5", "vcpus": 2}
    code, out, _ = ferry(tmp_path, "--json", "define", "--check", "-", stdin=json.dumps(changed))
    assert code == 0 and json.loads(out)["vcpus"] == 2
    assert json.loads(ferry(tmp_path, "--json", "status", "vm1")[1])["vcpus"] == 1


@pytest.mark.parametrize("check", [[], ["--check"]], ids=["define", "check"])
@pytest.mark.parametrize("stdin,field", [
    (json.dumps({**VM, "memory": 15}), "memory: 15 MiB must be a multiple of 2 MiB"),
    (json.dumps({**VM, "name": "../../victim"}), "name: "),
    (json.dumps({**VM, "colour": "blue"}), "'colour': unknown key"),
    (json.dumps({**VM, "kernel": "relative/vmlinux"}), "kernel: "),
    ("", "definition: expected a mapping"),
    ("[1, 2", "stdin: not valid YAML: line 1, column "),
    (b"name: \xff\xfe", "stdin: not UTF-8 text"),
    ("a: " + "x" * (64 * 1024), "stdin: larger than 64 KiB"),
    ("[" * 100000, "stdin: "),
], ids=["odd-memory", "hostile-name", "unknown-key", "relative-kernel", "empty", "bad-yaml", "not-utf8",
        "oversized", "deep"])
def test_a_bad_definition_on_stdin_is_one_json_error(tmp_path, check, stdin, field):
    error = json_error(ferry(tmp_path, "--json", "define", *check, "-", stdin=stdin))
    assert error["error"].startswith(field), error
    assert error["kind"] == "error"
    assert not (tmp_path / "state" / "vms").exists() or os.listdir(tmp_path / "state" / "vms") == []
    assert not (tmp_path / "victim").exists()


def test_define_without_json_names_the_field_in_one_line(tmp_path):
    code, out, err = ferry(tmp_path, "define", "--check", "-", stdin=json.dumps({**VM, "vcpus": 0}))
    assert (code, out) == (1, "") and err == "ferry: vcpus: 0 is out of range, allowed 1 to 32\n"


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "ten"])
def test_poweroff_refuses_a_meaningless_timeout(tmp_path, value):
    assert ferry(tmp_path, "--json", "define", "-", stdin=json.dumps(VM))[0] == 0
    code, out, err = ferry(tmp_path, "poweroff", "vm1", f"--timeout={value}")
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "timeout" in err, err


def test_poweroff_of_a_stopped_vm_with_a_timeout_is_a_no_op(tmp_path):
    assert ferry(tmp_path, "--json", "define", "-", stdin=json.dumps(VM))[0] == 0
    code, out, err = ferry(tmp_path, "--json", "poweroff", "vm1", "--timeout", "5")
    assert code == 0 and json.loads(out)["state"] == "stopped", err


@pytest.mark.parametrize("name", ["--json", "-x", "--force"])
def test_a_name_after_double_dash_is_refused_as_a_name(tmp_path, name):
    error = json_error(ferry(tmp_path, "--json", "stop", "--timeout", "1", "--", name))
    assert error["error"].startswith(f"name: {name!r} is not a valid VM name"), error
