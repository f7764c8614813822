"""The one way VM processes are started (``ferry start``, ``restore``, ``ferry receive``).

The process is detached (its own session, so it outlives the shell or SSH
connection that started it), runs under the engine's own interpreter
whoever starts it (the CLI, or an Ansible module under the host's
python3), and says on its first line of output whether it is up.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..store import statedir

PACKAGE = Path(__file__).resolve().parents[1]
ENTRY = "ferry.vmprocess.main"


def engine_python(package: Path = PACKAGE) -> str:
    """The interpreter of the virtual environment the engine is installed in (the folder
    above it that holds ``pyvenv.cfg``), else this one (a checkout, a system install)."""
    for folder in package.parents:
        if (folder / "pyvenv.cfg").is_file():
            python = folder / "bin" / "python"
            return str(python) if python.exists() else sys.executable
    return sys.executable


@dataclass
class Launched:
    process: subprocess.Popen
    line: str          # its first line: "ready", "listening PORT", "error: ..."; "" if none in time
    answered: bool     # False: no line within the time allowed


def launch(root: Path, args: list[str], log: Path, timeout: float) -> Launched:
    """Start ``vmprocess.main`` with ``args`` (its stderr appended to ``log``) and wait for its first line."""
    with open_log(log) as stderr:
        process = subprocess.Popen([engine_python(), "-m", ENTRY, "--state-dir", str(root), *args],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                   start_new_session=True, close_fds=True)
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().decode().strip() if ready else ""
    process.stdout.close()
    return Launched(process, line, bool(ready))


def open_log(path: Path):
    return os.fdopen(statedir.open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")
