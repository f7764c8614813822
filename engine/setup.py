"""Build hook: compile the built-in guests and ship them as package data.

Everything else about the package is in pyproject.toml. ``build_py`` runs
``make`` for each guest under ``guests/`` and puts the ELF where the
installed package will look for it (``ferry/guests/<name>.elf``):

- a regular install or wheel: into the build directory, next to the
  copied Python files;
- an editable install (``pip install -e``): into the source tree, which
  is what the installed package reads (git ignores the file).

Without ``make`` or ``gcc`` (or with ``FERRY_SKIP_GUESTS=1``) the guests
are skipped with a warning; ``ferry.guests.builtin_kernel`` then reports
them missing. A guest that fails to compile fails the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
GUESTS = ("selfcheck",)


class BuildPyWithGuests(build_py):
    def run(self) -> None:
        super().run()
        for name in GUESTS:
            self._build_guest(name)

    def _build_guest(self, name: str) -> None:
        source = HERE / "guests" / name
        if os.environ.get("FERRY_SKIP_GUESTS"):
            self.warn(f"guest {name}: skipped (FERRY_SKIP_GUESTS is set)")
            return
        if not (source / "Makefile").is_file():
            self.warn(f"guest {name}: no sources at {source}, shipping whatever ELF is present")
            return
        missing = [tool for tool in ("make", "gcc") if shutil.which(tool) is None]
        if missing:
            self.warn(f"guest {name}: not built, {' and '.join(missing)} not found")
            return
        if getattr(self, "editable_mode", False):
            out = HERE / "ferry" / "guests" / f"{name}.elf"
            objects = source / "build"
        else:
            out = Path(self.build_lib) / "ferry" / "guests" / f"{name}.elf"
            objects = Path(self.get_finalized_command("build").build_temp) / "guests" / name
        command = ["make", "-C", str(source), f"OUT={out.resolve()}", f"BUILD={objects.resolve()}"]
        self.announce(f"building guest {name}: {' '.join(command)}", level=2)
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise SystemExit(f"guest {name}: make failed (exit {result.returncode}):\n{result.stdout}")


setup(cmdclass={"build_py": BuildPyWithGuests})
