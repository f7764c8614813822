"""ansible-test sanity over the collection (tests/ansible-test.sh sanity) with the checkout's
ansible-core, the newest the collection claims (tests/ansible-versions.sh runs the older ones).
It makes a virtual environment per sanity test and installs its requirements from the package
index: a few minutes on a fresh machine, about one with its caches."""

import os
import subprocess

import pytest

RUN = os.path.join(os.path.dirname(__file__), "..", "ansible-test.sh")


def test_ansible_test_sanity_passes():
    proc = subprocess.run([RUN, "sanity"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1800, check=False)
    if proc.returncode != 0:
        problems = [line for line in proc.stdout.splitlines() if line.startswith(("ERROR", "FATAL"))]
        pytest.fail("ansible-test sanity failed:\n" + "\n".join(problems or proc.stdout.splitlines()[-40:]),
                    pytrace=False)
