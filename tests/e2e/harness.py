"""Drives the real ansible-playbook from this checkout against a lab, and looks at the lab's
hosts directly (not through Ansible) to check what it did."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)
# Where the engine role installs the engine's command (the role's default).
FERRY = "/opt/ferry/venv/bin/ferry"
PLAYBOOK_TIMEOUT = 600
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")
HEARTBEAT = re.compile(r"^HB cpu=0 seq=(\d+) .* OK$", re.M)


@contextlib.contextmanager
def own_lab(hosts: int):
    """A lab of ``hosts`` hosts apart from the session's (for a test that needs another number of
    hosts, or takes one down), removed afterwards."""
    from ferry.lab import Lab
    directory = tempfile.mkdtemp(prefix="ferry-e2e-")
    lab = Lab(os.path.join(directory, "lab"))
    try:
        lab.up(hosts=hosts)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(directory, ignore_errors=True)


class Run:
    def __init__(self, argv: list[str], proc: subprocess.CompletedProcess, seconds: float):
        self.argv = argv
        self.rc = proc.returncode
        self.output = proc.stdout
        self.errors = proc.stderr
        self.results = None
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"<{' '.join(self.argv[:3])} rc={self.rc} {self.seconds:.1f}s>"

    def fail(self, why: str) -> None:
        """Fail the test with the whole output (an assertion message would be cut short)."""
        pytest.fail(f"{why}: {' '.join(self.argv)} (rc={self.rc}, {self.seconds:.1f} s)\n"
                    f"{self.output}\n--- stderr ---\n{self.errors}", pytrace=False)

    def expect_ok(self) -> "Run":
        if self.rc != 0:
            self.fail("the run failed")
        return self

    def recap(self) -> dict[str, dict[str, int]]:
        """The PLAY RECAP: host -> {ok, changed, failed, ...}."""
        lines = self.output.split("PLAY RECAP", 1)[1].splitlines()[1:]
        recap = {}
        for line in lines:
            match = RECAP_LINE.match(line.strip())
            if match:
                recap[match.group(1)] = {key: int(value) for key, value in
                                         (pair.split("=") for pair in match.group(2).split())}
        return recap


class Ansible:
    """ansible-playbook from this checkout's venv, with its ansible.cfg, against the lab's inventory."""

    def __init__(self, lab, workdir: str):
        self.lab = lab
        self.inventory = lab.path("inventory.yml")
        self.workdir = workdir

    def env(self, **extra: str) -> dict:
        env = dict(os.environ)
        env.update(ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0")
        env.update(extra)
        return env

    def run(self, argv: list[str], **env: str) -> Run:
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, env=self.env(**env), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=PLAYBOOK_TIMEOUT, check=False)
        return Run(argv, proc, time.monotonic() - started)

    def playbook(self, playbook: str, *args: str, **env: str) -> Run:
        return self.run([os.path.join(BIN, "ansible-playbook"), "-i", self.inventory, playbook, *args], **env)

    def ansible_inventory(self, *sources: str, args: tuple[str, ...] = ("--list",), **env: str) -> Run:
        """ansible-inventory over the given sources (the lab's own inventory is not added)."""
        argv = [os.path.join(BIN, "ansible-inventory")]
        for source in sources:
            argv += ["-i", source]
        return self.run([*argv, *args], **env)

    def site(self, *args: str, **env: str) -> Run:
        return self.playbook(os.path.join(ROOT, "playbooks", "site.yml"), *args, **env)

    def tasks(self, tasks: list[dict], *args: str, host: str = "h1", **env: str) -> Run:
        """Run ``tasks`` as one play on ``host``; ``Run.results`` holds each task's registered result."""
        stem = os.path.join(self.workdir, f"play-{time.monotonic_ns()}")
        registered = [dict(task, register=f"result_{index}") for index, task in enumerate(tasks)]
        names = ", ".join(f"result_{index}" for index in range(len(tasks)))
        registered.append({"name": "Save the results", "delegate_to": "localhost", "check_mode": False,
                           "ansible.builtin.copy": {"content": "{{ [%s] | to_json }}" % names,
                                                    "dest": stem + ".json", "mode": "0600"}})
        with open(stem + ".yml", "w") as handle:
            json.dump([{"hosts": host, "gather_facts": False, "tasks": registered}], handle)
        run = self.playbook(stem + ".yml", *args, **env)
        if os.path.exists(stem + ".json"):
            with open(stem + ".json") as handle:
                run.results = json.load(handle)
        return run

    # --- looking at a host directly, not through Ansible ---

    def ferry(self, host: str, *args: str) -> subprocess.CompletedProcess:
        return self.lab.exec(host, [FERRY, *args], capture_output=True, text=True, timeout=60)

    def status(self, host: str, name: str) -> dict | None:
        """The VM's definition and state, without counters that move while it runs."""
        proc = self.ferry(host, "status", name, "--json")
        if proc.returncode != 0:
            assert "no VM named" in proc.stderr, proc.stderr
            return None
        return {key: value for key, value in json.loads(proc.stdout).items() if key != "exits"}

    def beats(self, host: str, name: str) -> list[int]:
        """The sequence numbers of the self-checking guest's good heartbeats on its first vCPU
        (engine/docs/selfcheck-guest.md), after checking it found no corrupt memory."""
        log = self.read(host, f"/var/lib/ferry/vms/{name}/console.log")
        assert "CORRUPT" not in log, f"{name} found corrupt memory on {host}"
        return [int(seq) for seq in HEARTBEAT.findall(log)]

    def exists(self, host: str, path: str) -> bool:
        return self.lab.exec(host, ["test", "-e", path], timeout=30).returncode == 0

    def read(self, host: str, path: str) -> str:
        return self.lab.exec(host, ["cat", path], capture_output=True, text=True, timeout=30, check=True).stdout


def task_results(run: Run) -> list[dict]:
    """Each task's result of a ``tasks`` run, in order."""
    if run.results is None:
        run.fail("the play ended before it saved its results")
    return run.results
