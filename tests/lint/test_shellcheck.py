"""shellcheck over every shell script of the checkout: any finding fails.

ansible-test sanity's shellcheck test sees only the .sh files the collection artifact ships
(not scripts/, nor .ci/run or the Linux guest's init), and passes without a word where shellcheck
is missing; this one covers the rest and fails without it (scripts/setup.sh installs it)."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHELLS = (b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash", b"#!/usr/bin/env sh")


def shell_scripts():
    """The files git tracks, and those it would add, that are .sh or start with a shell's #! line."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            stdout=subprocess.PIPE, check=True).stdout.decode().split("\0")
    scripts = []
    for path in filter(None, listed):
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full) or os.path.islink(full):
            continue
        with open(full, "rb") as handle:
            first = handle.readline().strip()
        if path.endswith(".sh") or first in SHELLS:
            scripts.append(path)
    return sorted(scripts)


def shellcheck(*paths, cwd=ROOT):
    command = shutil.which("shellcheck")
    if command is None:
        pytest.fail("shellcheck is missing: scripts/setup.sh installs Debian's shellcheck", pytrace=False)
    return subprocess.run([command, "--format", "gcc", *paths], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, check=False)


def test_the_shell_scripts_have_no_finding():
    scripts = shell_scripts()
    assert {"scripts/setup.sh", "tests/ansible-versions.sh", ".ci/run"} <= set(scripts), scripts

    run = shellcheck(*scripts)

    assert run.returncode == 0 and not run.stdout.strip(), run.stdout


def test_an_unquoted_variable_is_a_finding(tmp_path):
    (tmp_path / "bad.sh").write_text('#!/usr/bin/env bash\nrm -rf $1/cache\n')

    run = shellcheck("bad.sh", cwd=tmp_path)

    assert run.returncode != 0 and "bad.sh:2:8: note: Double quote to prevent globbing" in run.stdout, run.stdout
