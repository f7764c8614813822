"""Fake hypervisors for the inventory plugin's tests, reached through real processes: a fake
``ssh`` (the plugin's ``ssh_executable``) that runs the remote command with the real ``/bin/sh``
of this machine, as sshd would, and a fake engine command whose answers are the shared fake
``ferry --json`` (fake_ferry.FakeFerry, kept true to the real engine by its contract tests and by
the inventory's own contract test against the real ``ferry``).

The world (``world.json``) says per host, by the address the plugin passes to ssh:
``vms``/``snapshots`` (a FakeFerry's state), ``down`` (ssh's error line, exit 255), ``sleep``
(seconds before answering), ``garbage`` (what the engine command prints instead of JSON),
``fail`` (an engine error). ``ssh.log`` gets one JSON line per ssh call (argv, start, end),
``ferry.log`` one per engine call (argv), ``sudo.log`` one per sudo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def _log(name: str, entry: dict) -> None:
    with open(os.path.join(os.environ["FAKE_WORLD_DIR"], name), "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _world() -> dict:
    with open(os.path.join(os.environ["FAKE_WORLD_DIR"], "world.json")) as handle:
        return json.load(handle)


def ssh_main() -> None:
    argv = sys.argv
    started = time.time()
    separator = argv.index("--")
    host, command = argv[separator + 1], argv[separator + 2]
    assert len(argv) == separator + 3, argv
    world = _world()
    entry = world.get(host)
    try:
        if entry is None:
            sys.stderr.write(f"ssh: Could not resolve hostname {host}: Name or service not known\n")
            sys.exit(255)
        time.sleep(entry.get("sleep", 0))
        if entry.get("down"):
            sys.stderr.write(entry["down"] + "\n")
            sys.exit(255)
        env = dict(os.environ, FAKE_FERRY_HOST=host)
        env["PATH"] = os.path.join(os.environ["FAKE_WORLD_DIR"], "bin") + os.pathsep + env.get("PATH", "")
        proc = subprocess.run(["/bin/sh", "-c", command], env=env, check=False)
        sys.exit(proc.returncode)
    finally:
        _log("ssh.log", {"argv": argv, "host": host, "command": command, "start": started, "end": time.time()})


def sudo_main() -> None:
    """``sudo -n [-u USER] -- ARGV``: logs and runs ARGV (the fake host has no other user)."""
    argv = sys.argv[1:]
    _log("sudo.log", {"argv": argv})
    os.execv(argv[argv.index("--") + 1], argv[argv.index("--") + 1:])


def ferry_main() -> None:
    from ansible_collections.ferry.hypervisor.tests.unit.plugins.module_utils.fake_ferry import FakeFerry

    host = os.environ.get("FAKE_FERRY_HOST", "local")
    _log("ferry.log", {"argv": sys.argv, "host": host})
    entry = _world()[host]
    if "garbage" in entry:
        sys.stdout.write(entry["garbage"])
        sys.exit(0)
    if entry.get("fail"):
        sys.stderr.write(json.dumps({"error": entry["fail"], "kind": "error"}) + "\n")
        sys.exit(1)
    cli = FakeFerry()
    cli.vms = entry.get("vms", {})
    cli.snapshots = entry.get("snapshots", {})
    rc, out, err = cli.run_command(list(sys.argv))
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(rc)


def _script(path: str, main: str) -> str:
    with open(path, "w") as handle:
        handle.write(f"#!{sys.executable}\nimport sys\nsys.path[:] = {json.dumps(sys.path)}\n"
                     f"from ansible_collections.ferry.hypervisor.tests.unit.plugins.inventory.fake_ssh import {main}\n"
                     f"{main}()\n")
    os.chmod(path, 0o755)
    return path


class World:
    """The fake hypervisors in ``directory``: ``ssh`` is the client to give the plugin and
    ``venv`` the engine_venv whose ``bin/ferry`` is the fake engine. The scripts find the
    directory in FAKE_WORLD_DIR."""

    def __init__(self, directory: str):
        self.dir = str(directory)
        os.makedirs(os.path.join(self.dir, "bin"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "venv", "bin"), exist_ok=True)
        self.ssh = _script(os.path.join(self.dir, "bin", "fake-ssh"), "ssh_main")
        _script(os.path.join(self.dir, "bin", "sudo"), "sudo_main")
        _script(os.path.join(self.dir, "venv", "bin", "ferry"), "ferry_main")
        self.venv = os.path.join(self.dir, "venv")
        self.hosts: dict[str, dict] = {}
        self.save()

    def host(self, name: str, cli=None, **entry) -> None:
        """A hypervisor at address ``name`` whose engine holds ``cli``'s VMs (a FakeFerry)."""
        if cli is not None:
            entry.update(vms=cli.vms, snapshots=cli.snapshots)
        self.hosts[name] = entry
        self.save()

    def save(self) -> None:
        with open(os.path.join(self.dir, "world.json"), "w") as handle:
            json.dump(self.hosts, handle)

    def log(self, name: str = "ssh.log") -> list[dict]:
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [json.loads(line) for line in handle]
