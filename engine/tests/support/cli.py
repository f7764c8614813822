"""Driving ``ferry`` as a person would: the CLI, JSON output, the console log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

HEARTBEAT = re.compile(rb"HB cpu=(\d+) seq=(\d+) ms=(\d+) writes=(\d+) verified=(\d+) (OK|CORRUPT)")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


class Ferry:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.env = {**os.environ, "FERRY_STATE_DIR": str(state_dir)}

    def run(self, *args: str, timeout: float = 120) -> Result:
        done = subprocess.run([sys.executable, "-m", "ferry.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, timeout: float = 120):
        result = self.run("--json", *args, timeout=timeout)
        assert result.code == 0, f"ferry {' '.join(args)} failed: {result.err}"
        return result.json if result.out.strip() else None

    def define(self, tmp: Path, **values) -> dict:
        path = tmp / f"{values['name']}.yaml"
        path.write_text(yaml.safe_dump(values))
        return self.ok("define", str(path))

    def console(self, name: str) -> bytes:
        try:
            return (self.state_dir / "vms" / name / "console.log").read_bytes()
        except FileNotFoundError:
            return b""

    def heartbeats(self, name: str, cpu: int | None = 0) -> list[tuple]:
        beats = [tuple(int(g) if g.isdigit() else g.decode() for g in m.groups())
                 for m in HEARTBEAT.finditer(self.console(name))]
        return [b for b in beats if cpu is None or b[0] == cpu]

    def wait_console(self, name: str, pattern: bytes, timeout: float = 60, count: int = 1) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console(name)
            if len(re.findall(pattern, text)) >= count:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{name}: {pattern!r} x{count} not on the console within {timeout} s; "
                             f"console ends with: {self.console(name)[-600:]!r}")

    def wait_heartbeats(self, name: str, count: int, timeout: float = 60, cpu: int = 0) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            beats = self.heartbeats(name, cpu)
            if len(beats) >= count:
                return beats
            time.sleep(0.1)
        raise AssertionError(f"{name}: fewer than {count} heartbeats in {timeout} s; "
                             f"console ends with: {self.console(name)[-600:]!r}")

    def wait_state(self, name: str, state: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            vm = self.ok("status", name)
            if vm["state"] == state:
                return vm
            time.sleep(0.1)
        raise AssertionError(f"{name}: not {state} within {timeout} s: {vm}")


def assert_sequence_continues(beats: list[tuple], gaps: bool = False) -> None:
    """Heartbeats of one CPU: seq goes up by exactly one each time, and every one says OK.
    With ``gaps``, lines may be missing from the log (written while its disk was full),
    but the guest's own count still only goes up."""
    seqs = [b[1] for b in beats]
    if gaps:
        assert seqs == sorted(set(seqs)), f"sequence goes back: {seqs}"
    else:
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"sequence broken: {seqs}"
    bad = [b for b in beats if b[5] != "OK"]
    assert not bad, f"guest reported CORRUPT: {bad[:3]}"
