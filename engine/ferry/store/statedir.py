"""The state directory: one folder per VM holding its definition, console, socket and status.

A running VM's process holds an exclusive flock on ``vm.lock`` for its whole
life, so "is it running" never depends on a pid that may have been reused.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import time
from pathlib import Path

from .. import inputs
from ..errors import FerryError, NotFound
from . import definition as defn

DEFAULT_STATE_DIR = "/var/lib/ferry"
ENV_STATE_DIR = "FERRY_STATE_DIR"


def resolve(state_dir: str | os.PathLike | None = None) -> Path:
    return Path(state_dir or os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR)


NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class OutsideStateDir(FerryError):
    """A path the engine was about to touch lies outside its state directory (or is a link)."""


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """Open a file in a VM's folder without following a link planted in its place."""
    try:
        return os.open(path, flags | NOFOLLOW, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OutsideStateDir(f"{path}: is a symbolic link; Ferry does not follow links "
                                  "in its state directory") from None
        raise


def check_inside(root: Path, path: Path, link_ok: bool = False) -> Path:
    """``path`` lies inside ``root`` (its parents resolved, the entry itself not followed) and,
    unless ``link_ok``, is no link: the one check every folder the engine creates, writes or
    deletes goes through."""
    if path.is_symlink() and not link_ok:
        raise OutsideStateDir(f"{path}: is a symbolic link; Ferry does not follow links "
                              "in its state directory")
    top = os.path.realpath(root)
    entry = os.path.join(os.path.realpath(path.parent), path.name)
    if os.path.commonpath([top, entry]) != top:
        raise OutsideStateDir(f"{path}: resolves outside the state directory {root}")
    return path


def remove_tree(root: Path, path: Path) -> None:
    """Delete a folder of the state directory; one already gone is fine. A link is removed
    itself, never what it points to (and rmtree never follows links below a folder)."""
    if path.is_symlink():
        check_inside(root, path, link_ok=True).unlink()
    elif os.path.lexists(path):
        import shutil  # here: only removals pay for it
        shutil.rmtree(check_inside(root, path))


def write_atomic(path: Path, text: str, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` so a reader sees the old or the new file, never half of one;
    ``durable`` also waits for the disk, for records that must survive a crash."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        with os.fdopen(open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        # A full disk, say: leave no half-written file behind to hold on to the space.
        temporary.unlink(missing_ok=True)
        raise


class VmDir:
    def __init__(self, root: Path, name: str, folder: str = "vms"):
        self.name = inputs.vm_name(name)
        self.root = root
        self.path = check_inside(root, root / folder / name)
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
        # A link is allowed here only so it can be listed as damaged and deleted: the
        # snapshot reader opens nothing through it.
        return check_inside(self.root, self.snapshots / inputs.snapshot_id(snapshot_id), link_ok=True)

    def snapshot_ids(self) -> list[str]:
        if not self.snapshots.is_dir():
            return []
        return sorted(p.name for p in self.snapshots.iterdir()
                      if inputs.SNAPSHOT_ID.fullmatch(p.name) and (p.is_dir() or p.is_symlink()))

    @property
    def protected_folder(self) -> Path:
        return self.path / "protected"

    def protected_ids(self) -> set[str]:
        """Snapshots no prune may delete: an empty file per id, beside (not in) the checksummed snapshot."""
        if not self.protected_folder.is_dir():
            return set()
        return {p.name for p in self.protected_folder.iterdir() if inputs.SNAPSHOT_ID.fullmatch(p.name)}

    def set_protected(self, snapshot_id: str, protected: bool) -> None:
        marker = check_inside(self.root, self.protected_folder / inputs.snapshot_id(snapshot_id))
        if protected:
            self.protected_folder.mkdir(mode=0o700, exist_ok=True)
            os.close(open_private(marker, os.O_WRONLY | os.O_CREAT))
        else:
            marker.unlink(missing_ok=True)

    @property
    def replicas_file(self) -> Path:
        return self.path / "replicas.json"

    def replica_bases(self) -> dict[str, str]:
        """Destination -> the newest checkpoint it holds of this VM: what the next send to it
        builds on, so a prune must keep it."""
        record = read_record(self.replicas_file)
        return {str(key): value for key, value in record.items()
                if isinstance(value, str) and inputs.SNAPSHOT_ID.fullmatch(value)}

    def record_replica(self, destination: str, snapshot_id: str) -> None:
        bases = {**self.replica_bases(), destination: inputs.snapshot_id(snapshot_id)}
        write_atomic(self.replicas_file, json.dumps(bases, sort_keys=True))

    def snapshot_dirs(self) -> list[Path]:
        return [self.snapshot_dir(snapshot_id) for snapshot_id in self.snapshot_ids()]

    def exists(self) -> bool:
        return self.definition_file.is_file()

    def load_definition(self) -> defn.Definition:
        if not self.exists():
            raise NotFound(f"no VM named {self.name!r}")
        return defn.load_file(self.definition_file)

    def save_definition(self, definition: defn.Definition) -> None:
        self.make()
        write_atomic(self.definition_file, defn.dump(definition))

    def make(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def read_status(self) -> dict:
        return read_record(self.status_file)

    def write_status(self, **fields) -> bool:
        """Best effort: the lock, not this file, says whether the VM runs, so a full disk
        must not stop a VM (one just arrived, say); False if it could not be written."""
        status = {**self.read_status(), **fields, "updated_at": time.time()}
        try:
            write_atomic(self.status_file, json.dumps(status, sort_keys=True), durable=False)
        except OSError:
            return False
        return True

    @property
    def migration_file(self) -> Path:
        return self.path / "migration.json"

    def read_migration(self) -> dict:
        return read_record(self.migration_file)

    def write_migration(self, durable: bool = True, **fields) -> None:
        """The migration's phase, on disk before it takes effect, so a restart can resolve it."""
        record = {**self.read_migration(), **fields, "updated_at": time.time()}
        write_atomic(self.migration_file, json.dumps(record, sort_keys=True), durable=durable)

    def retire(self) -> Path:
        """Move this VM's folder (logs, snapshots) aside once it lives on another host."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        (self.root / "migrated").mkdir(exist_ok=True, mode=0o700)
        for suffix in itertools.count(1):
            # A VM that comes back and leaves again within the second gets a folder of its own.
            target = self.root / "migrated" / (f"{self.name}.{stamp}" + (f"-{suffix}" if suffix > 1 else ""))
            try:
                os.rename(self.path, target)
                return target
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise

    def process_alive(self) -> bool:
        """True while a VM process holds the lock."""
        try:
            fd = open_private(self.lock_file, os.O_RDONLY)
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
        fd = open_private(self.lock_file, os.O_RDWR | os.O_CREAT)
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
        self.make()
        fd = open_private(self.start_lock_file, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd


MAX_RECORD = 1 << 20


def read_record(path: Path) -> dict:
    """A small JSON record of the engine's own (status, migration phase); {} if absent or unreadable."""
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, FerryError):
        return {}
    with os.fdopen(fd, "rb") as handle:
        try:
            record = json.loads(handle.read(MAX_RECORD))
        except (OSError, ValueError, RecursionError):
            return {}
    return record if isinstance(record, dict) else {}


def vm_names(root: Path) -> list[str]:
    """The VMs defined here; folders whose names the engine would refuse are not VMs."""
    folder = root / "vms"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if inputs.VM_NAME.fullmatch(p.name) and not p.is_symlink() and (p / "vm.yaml").is_file())


REPLICAS = "replicas"  # replicas/NAME/snapshots/ID: checkpoints other hosts sent of their VMs


def replica_names(root: Path) -> list[str]:
    """The VMs this host holds replicas of (they are not defined here)."""
    folder = root / REPLICAS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if inputs.VM_NAME.fullmatch(p.name) and not p.is_symlink() and p.is_dir())


def migrated_folders(root: Path) -> list[Path]:
    """Folders of VMs that left this host (``NAME.STAMP``), oldest first."""
    folder = root / "migrated"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if not p.is_symlink() and p.is_dir()
             and inputs.VM_NAME.fullmatch(p.name.rsplit(".", 1)[0])]
    return sorted(found, key=lambda p: p.stat().st_mtime)
