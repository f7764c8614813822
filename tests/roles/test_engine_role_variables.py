"""The engine role's variable names: engine_* now; the old ferry_engine_* still read for one
release, with a warning; a bad value refused naming the variable. ansible-playbook runs on the
controller only (connection local): the install itself is tested by tests/e2e and the role's
molecule scenario."""

import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPECS = os.path.join(ROOT, "roles", "engine", "meta", "argument_specs.yml")
# engine_source and engine_linux_guest_source default to paths under role_path, which is
# defined inside the role only; the others are read back after it.
NAMES = ["venv", "python", "state_dir", "require_kvm", "build_cache", "use_index", "linux_guest", "images_dir",
         "cpu_hidden"]
WARNING = "[DEPRECATION WARNING] the engine role's variables are renamed"


def playbook(tmp_path, play_vars, tasks, *args):
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                     "vars": play_vars, "tasks": tasks}]))
    subprocess.run([os.path.join(ROOT, "scripts", "link-collection.sh")], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           str(path), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, check=False)


def resolved(tmp_path, play_vars):
    """(the role's engine_* values after its name check, the run's output)."""
    out = tmp_path / "values.json"
    values = {name: "{{ engine_%s }}" % name for name in NAMES}
    run = playbook(tmp_path, play_vars, [
        {"name": "Check the variables' names",
         "ansible.builtin.include_role": {"name": "ferry.hypervisor.engine", "tasks_from": "deprecated_names.yml",
                                          "public": True}},
        {"name": "Write the role's values", "vars": {"_values": values},
         "ansible.builtin.copy": {"content": "{{ _values | to_json }}", "dest": str(out), "mode": "0600"}}])
    assert run.returncode == 0, run.stdout
    return json.loads(out.read_text()), run.stdout


def test_the_defaults_are_the_documented_ones_and_nothing_is_deprecated(tmp_path):
    values, output = resolved(tmp_path, {})

    options = yaml.safe_load(open(SPECS))["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted("engine_" + name for name in NAMES + ["source", "linux_guest_source"])
    assert {name: str(values[name]) for name in ("venv", "python", "state_dir", "require_kvm", "use_index",
                                                 "linux_guest")} == \
        {name: str(options["engine_" + name]["default"]) for name in ("venv", "python", "state_dir", "require_kvm",
                                                                      "use_index", "linux_guest")}
    assert values["images_dir"] == "/var/lib/ferry/images"
    assert values["cpu_hidden"] == options["engine_cpu_hidden"]["default"] == []
    assert values["build_cache"] == os.path.expanduser("~/.cache/ferry-hypervisor/wheels")
    assert WARNING not in output


def test_the_old_names_still_work_and_are_named_in_a_warning(tmp_path):
    values, output = resolved(tmp_path, {"ferry_engine_venv": "/srv/ferry", "ferry_engine_state_dir": "/srv/state",
                                         "ferry_engine_require_kvm": False})

    assert values["venv"] == "/srv/ferry"
    assert values["state_dir"] == "/srv/state"
    assert values["images_dir"] == "/srv/state/images"
    assert values["require_kvm"] is False
    warning = [line for line in output.splitlines() if WARNING in line]
    assert len(warning) == 1, output
    assert ("set engine_require_kvm, engine_state_dir, engine_venv instead of "
            "ferry_engine_require_kvm, ferry_engine_state_dir, ferry_engine_venv;") in warning[0]


def test_the_new_name_wins_over_the_old_one(tmp_path):
    values, output = resolved(tmp_path, {"engine_venv": "/srv/new", "ferry_engine_venv": "/srv/old"})

    assert values["venv"] == "/srv/new"
    assert "set engine_venv instead of ferry_engine_venv;" in output


def test_a_bad_value_under_the_old_name_fails_naming_the_new_variable(tmp_path):
    # The role's argument validation runs first, before the /dev/kvm check or any build.
    run = playbook(tmp_path, {"ferry_engine_require_kvm": "perhaps"},
                   [{"name": "Install the engine", "ansible.builtin.include_role": {"name": "ferry.hypervisor.engine"}}])

    assert run.returncode != 0
    failure = [line for line in run.stdout.splitlines() if line.startswith("fatal:")]
    assert len(failure) == 1 and "engine_require_kvm" in failure[0] and "bool" in failure[0], run.stdout
    assert "Look for /dev/kvm" not in run.stdout
