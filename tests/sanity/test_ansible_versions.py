"""ansible-test on the ansible-core versions the collection claims (tests/ansible-versions.sh):
units on every claimed version, sanity on the oldest; tests/sanity/test_sanity.py is the newest's
sanity. Each version's venv is made on first use (~/.cache/ferry-hypervisor), then kept; so is the
Python 3.13 that the newest, 2.20, runs on (scripts/build-python.sh, a few minutes once)."""

import os
import re
import subprocess

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "tests", "ansible-versions.sh")


def run(*args, timeout=60):
    return subprocess.run([SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)


def claimed():
    return run("--list").stdout.split()


def test_the_versions_run_are_those_meta_runtime_and_the_readme_claim():
    floor = yaml.safe_load(open(os.path.join(ROOT, "meta", "runtime.yml")))["requires_ansible"]
    checkout = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-test"), "--version"],
                              stdout=subprocess.PIPE, text=True, check=True).stdout
    readme = open(os.path.join(ROOT, "README.md")).read()
    versions = claimed()

    assert floor == f">={versions[0]}.0"
    minors = [int(version.split(".")[1]) for version in versions]
    assert minors == list(range(minors[0], minors[-1] + 1)), versions
    # The checkout's ansible-core (the newest for Debian 12's Python 3.11) is one of them.
    assert any(checkout.startswith(f"ansible-test version {version}.") for version in versions), checkout
    assert f"ansible-core {versions[0]} to {versions[-1]}" in readme, "the README names other versions"


@pytest.mark.parametrize("args, message", [
    (["--units", "2.14"], "2.14 is not a claimed ansible-core version"),
    (["--sanity", "../2.19"], "../2.19 is not a claimed ansible-core version"),
    (["--units"], "--units needs a list of versions"),
    (["--everything"], "unknown argument --everything"),
])
def test_a_bad_argument_is_one_line_naming_it(args, message):
    proc = run(*args)

    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()] and message in proc.stdout, proc.stdout


def test_ansible_test_sh_runs_only_sanity_or_units():
    proc = subprocess.run([os.path.join(ROOT, "tests", "ansible-test.sh"), "integration"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60, check=False)

    assert proc.returncode == 2
    assert proc.stdout.strip() == "ansible-test.sh: runs sanity or units, not integration"


# Past pytest.ini's 900 s on a fresh machine: a Python to build, five venvs to make, six units runs,
# one sanity.
@pytest.mark.timeout(3600)
def test_units_on_every_claimed_version_and_sanity_on_the_oldest():
    proc = run("--units", "all", "--sanity", claimed()[0], timeout=3600)

    if proc.returncode != 0:
        problems = [line for line in proc.stdout.splitlines()
                    if line.startswith(("===", "ERROR", "FATAL", "FAILED", "ansible-versions.sh"))]
        pytest.fail("ansible-test failed:\n" + "\n".join(problems or proc.stdout.splitlines()[-40:]), pytrace=False)
    ran = re.findall(r"^=== ansible-core (\S+): (\w+)$", proc.stdout, re.MULTILINE)
    assert ran == [pair for version in claimed() for pair in
                   [(version, "units")] + ([(version, "sanity")] if version == claimed()[0] else [])]
    # Each version's units ran tests: one pytest run per group ansible-test makes (module_utils,
    # controller for the plugins), each closing with the number that passed.
    sections = re.split(r"^=== ansible-core (\S+): (\w+)$", proc.stdout, flags=re.MULTILINE)[1:]
    for version, command, output in zip(sections[0::3], sections[1::3], sections[2::3]):
        if command == "units":
            groups = re.findall(r"^Unit test (\S+) with Python", output, re.MULTILINE)
            passed = re.findall(r"^=+ \d+ passed", output, re.MULTILINE)
            assert groups and len(passed) == len(groups), f"{version}: {groups}, {passed}\n{output[-3000:]}"
