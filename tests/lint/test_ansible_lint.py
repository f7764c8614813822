"""ansible-lint at the production profile (.ansible-lint) over the collection: any finding fails.

ansible-lint is pinned in requirements.txt; it runs from the venv that runs pytest."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def ansible_lint(project, *args):
    command = os.path.join(os.path.dirname(sys.executable), "ansible-lint")
    if not os.path.exists(command):
        pytest.fail(f"{command} is missing: scripts/setup.sh installs it from requirements.txt", pytrace=False)
    env = dict(os.environ, NO_COLOR="1", PATH=os.path.dirname(command) + os.pathsep + os.environ["PATH"])
    return subprocess.run([command, "--format", "pep8", "--nocolor", *args], cwd=project, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)


def findings(output):
    """The `path:line: rule: message` lines of ansible-lint's pep8 format."""
    return [line for line in output.splitlines() if ": " in line and line.split(":", 1)[0].endswith((".yml", ".yaml"))]


def test_the_collection_has_no_finding_at_the_production_profile():
    run = ansible_lint(ROOT)
    assert run.returncode == 0 and not findings(run.stdout), "\n".join(findings(run.stdout) or run.stdout.splitlines()[-30:])
    assert "Profile 'production' was required, and it passed" in run.stdout, run.stdout[-2000:]


def test_a_role_variable_without_the_role_prefix_is_a_finding(tmp_path):
    # The same configuration over a copy of the engine role with one unprefixed default:
    # the check above is one that can fail.
    shutil.copy(os.path.join(ROOT, ".ansible-lint"), tmp_path)
    shutil.copytree(os.path.join(ROOT, "roles", "engine"), tmp_path / "roles" / "engine")
    defaults = tmp_path / "roles" / "engine" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + "venv: /opt/elsewhere\n")
    lines = len(defaults.read_text().splitlines())

    run = ansible_lint(tmp_path)

    assert run.returncode != 0
    assert findings(run.stdout) == [f"roles/engine/defaults/main.yml:{lines}:1: var-naming[no-role-prefix]: "
                                    "Variables names from within roles should use engine_ as a prefix. (vars: venv)"], run.stdout
