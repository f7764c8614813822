"""Each role's molecule scenario (extensions/molecule/ROLE): molecule test brings up a lab host of
its own, converges the role, checks a second run changes nothing, verifies what an operator would
and takes the lab down. The engine's verify is shown to fail on a host without the engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from harness import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]
MOLECULE_TIMEOUT = 900


def molecule(scenario: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "molecule"), *args, "-s", scenario],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=MOLECULE_TIMEOUT, check=False)


def actions(scenario: str, output: str) -> list[tuple[str, str]]:
    """molecule's closing DETAILS, in order: (action, outcome), e.g. ("verify", "Executed: Successful")."""
    return re.findall(rf"^{scenario} > (\w+): (.+?)\s*$", output.split("DETAILS", 1)[-1], re.MULTILINE)


@pytest.mark.timeout(MOLECULE_TIMEOUT + 60)
@pytest.mark.parametrize("scenario", ["engine", "checkpoint", "evacuate"])
def test_molecule_test_converges_idempotently_and_verifies(lab_environment, scenario):
    run = molecule(scenario, "test")

    assert run.returncode == 0, run.stdout[-6000:]
    sequence = ["destroy", "syntax", "create"] + (["prepare"] if scenario == "evacuate" else []) + [
        "converge", "idempotence", "verify", "destroy"]
    assert actions(scenario, run.stdout) == [(action, "Executed: Successful") for action in sequence], run.stdout[-6000:]
    converge = run.stdout.split(f"[{scenario} > converge] Executing", 1)[1]
    converge = converge.split(f"[{scenario} > idempotence] Executing", 1)[0]
    assert "changed: [h1]" in converge, converge[-4000:]


@pytest.mark.timeout(3 * MOLECULE_TIMEOUT)
def test_verify_fails_on_a_host_without_the_engine(lab_environment):
    created = molecule("engine", "create")
    try:
        assert created.returncode == 0, created.stdout[-4000:]
        verified = molecule("engine", "verify")
    finally:
        destroyed = molecule("engine", "destroy")
    assert destroyed.returncode == 0, destroyed.stdout[-4000:]

    assert verified.returncode != 0
    # Its first check already fails: there is no engine command on the host.
    first_failure = verified.stdout.split("fatal: [h1]", 1)[0]
    assert first_failure.rsplit("TASK [", 1)[-1].startswith("Ask the engine about the host]"), verified.stdout[-4000:]
    assert "No such file or directory: b'/opt/ferry/venv/bin/ferry'" in first_failure, verified.stdout[-4000:]
