# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the engine's wheel and its dependencies' wheels on the controller.

usage: build_wheelhouse.py ENGINE_SOURCE CACHE_DIR

Prints one JSON document: the wheelhouse directory, the wheels in it, the
engine's version and the digest of the sources it was built from. Hosts
record that digest to tell whether their engine is current, which does not
depend on the wheel's bytes (zip timestamps differ between builds). Builds
are kept in CACHE_DIR by digest, so a playbook run whose engine sources did
not change builds nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Build outputs and things a wheel never contains (tests, documents); a checkout may hold them.
# Editing those must not make every host reinstall its engine.
SKIP_DIRS = {"__pycache__", ".pytest_cache", "build", "dist", "out", "tests", "docs", ".git"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".o", ".elf", ".egg-info")
MANIFEST = "wheelhouse.json"
KEEP_BUILDS = 4


def source_files(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES))
        files += [Path(folder, name).relative_to(root) for name in sorted(names)
                  if not name.endswith(SKIP_SUFFIXES)]
    return files


def digest(root: Path, files: list[Path]) -> str:
    total = hashlib.sha256()
    for path in files:
        total.update(str(path).encode() + b"\0")
        total.update(hashlib.sha256((root / path).read_bytes()).digest())
    return total.hexdigest()


def project_version(root: Path) -> tuple[str, str]:
    import tomllib
    with open(root / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    return project["name"], project["version"]


def build(root: Path, files: list[Path], into: Path) -> list[str]:
    source = into / "src"
    for path in files:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / path, source / path)
    wheels = into / "wheels"
    # Built from a copy: the collection's own tree may be read-only and stays clean.
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
                             str(source)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-20:])
        raise SystemExit(f"building the Ferry engine wheel from {root} failed:\n{tail}")
    shutil.rmtree(source)
    return sorted(path.name for path in wheels.glob("*.whl"))


def prune(cache: Path, keep: Path) -> None:
    """Drop all but the newest builds: each engine edit makes a new one."""
    builds = sorted((path for path in cache.iterdir() if (path / MANIFEST).is_file() and path != keep),
                    key=lambda path: path.stat().st_mtime, reverse=True)
    for path in builds[KEEP_BUILDS - 1:]:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root, cache = Path(argv[0]).resolve(), Path(argv[1])
    if not (root / "pyproject.toml").is_file():
        print(f"{root} is not the Ferry engine's source (no pyproject.toml)", file=sys.stderr)
        return 1
    files = source_files(root)
    name, version = project_version(root)
    key = digest(root, files)
    target = cache / key[:32]
    manifest = target / MANIFEST
    if not manifest.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            wheels = build(root, files, work)
            info = {"name": name, "version": version, "digest": key,
                    "dir": str(target / "wheels"), "wheels": wheels}
            (work / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
            try:
                os.rename(work, target)
            except OSError:
                # Another run built the same sources at the same time: keep its result.
                if not manifest.is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        prune(cache, target)
    print(manifest.read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
