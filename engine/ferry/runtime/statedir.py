"""The state directory: one folder per VM holding its definition, console, socket and status.

A running VM's process holds an exclusive flock on ``vm.lock`` for its whole
life, so "is it running" never depends on a pid that may have been reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from ..errors import NotFound
from . import definition as defn

DEFAULT_STATE_DIR = "/var/lib/ferry"
ENV_STATE_DIR = "FERRY_STATE_DIR"


def resolve(state_dir: str | os.PathLike | None = None) -> Path:
    return Path(state_dir or os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR)


def write_atomic(path: Path, text: str, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` so a reader sees the old or the new file, never half of one;
    ``durable`` also waits for the disk, for records that must survive a crash."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
    os.chmod(temporary, mode)
    os.replace(temporary, path)


class VmDir:
    def __init__(self, root: Path, name: str, folder: str = "vms"):
        self.name = name
        self.root = root
        self.path = root / folder / name
        self.definition_file = self.path / "vm.yaml"
        self.console_log = self.path / "console.log"
        self.engine_log = self.path / "engine.log"
        self.socket = self.path / "control.sock"
        self.status_file = self.path / "status.json"
        self.lock_file = self.path / "vm.lock"
        self.start_lock_file = self.path / "start.lock"

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    def snapshot_dir(self, snapshot_id: str) -> Path:
        return self.snapshots / snapshot_id

    def snapshot_ids(self) -> list[str]:
        if not self.snapshots.is_dir():
            return []
        return sorted(p.name for p in self.snapshots.iterdir() if not p.name.startswith(".") and p.is_dir())

    def exists(self) -> bool:
        return self.definition_file.is_file()

    def load_definition(self) -> defn.Definition:
        if not self.exists():
            raise NotFound(f"no VM named {self.name!r}")
        return defn.load_file(self.definition_file)

    def save_definition(self, definition: defn.Definition) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.definition_file, defn.dump(definition))

    def read_status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_status(self, **fields) -> None:
        status = {**self.read_status(), **fields, "updated_at": time.time()}
        # Not synced: after a crash the lock, not this file, says whether the VM runs.
        write_atomic(self.status_file, json.dumps(status, sort_keys=True), durable=False)

    @property
    def migration_file(self) -> Path:
        return self.path / "migration.json"

    def read_migration(self) -> dict:
        try:
            return json.loads(self.migration_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_migration(self, durable: bool = True, **fields) -> None:
        """The migration's phase, on disk before it takes effect, so a restart can resolve it."""
        record = {**self.read_migration(), **fields, "updated_at": time.time()}
        write_atomic(self.migration_file, json.dumps(record, sort_keys=True), durable=durable)

    def retire(self) -> Path:
        """Move this VM's folder (logs, snapshots) aside once it lives on another host."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.root / "migrated" / f"{self.name}.{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path, target)
        return target

    def process_alive(self) -> bool:
        """True while a VM process holds the lock."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def hold_lock(self) -> int | None:
        """Take the VM lock for this process's lifetime; None if another process has it."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def start_lock(self) -> int:
        """Serialise ``start`` calls: the second waits, then finds the VM running."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.start_lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd


def vm_names(root: Path) -> list[str]:
    folder = root / "vms"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "vm.yaml").is_file())
