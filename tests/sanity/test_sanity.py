"""ansible-test sanity over the collection on the newest ansible-core it claims
(tests/ansible-versions.sh --sanity NEWEST): 2.20, whose controller needs Python 3.12 or newer,
runs on the Python 3.13 that scripts/build-python.sh builds on first use; test_ansible_versions.py
runs the oldest's sanity. ansible-test makes a virtual environment per sanity test and installs its
requirements from the package index: a few minutes on a fresh machine, about one with its caches."""

import os
import subprocess

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "ansible-versions.sh")


# Past pytest.ini's 900 s on a fresh machine: the Python build, the venv, the sanity tests' venvs.
@pytest.mark.timeout(3600)
def test_ansible_test_sanity_passes_on_the_newest_claimed_version():
    newest = subprocess.run([SCRIPT, "--list"], stdout=subprocess.PIPE, text=True, check=True).stdout.split()[-1]
    proc = subprocess.run([SCRIPT, "--units", "", "--sanity", newest], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        problems = [line for line in proc.stdout.splitlines() if line.startswith(("ERROR", "FATAL", "ansible-versions"))]
        pytest.fail(f"ansible-test sanity on ansible-core {newest} failed:\n"
                    + "\n".join(problems or proc.stdout.splitlines()[-40:]), pytrace=False)
    assert f"=== ansible-core {newest}: sanity" in proc.stdout, proc.stdout[-2000:]
