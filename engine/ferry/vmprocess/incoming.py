"""The destination side of a migration: the process that waits, receives, and becomes the VM.

It stages everything in ``STATE_DIR/incoming/NAME``, including the
committed migration record, before it answers PREPARED; COMMIT is then one
rename of that folder to ``vms/NAME`` (and a sync of the directory), after
which it starts the vCPUs and goes on as that VM's process. Nothing after
the rename needs the disk, so a full one cannot stop a committed VM. A
refused offer leaves nothing staged; anything else short of COMMIT removes
the staging folder: nothing of the VM is left on this host.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..errors import Conflict, FerryError
from ..files import sync_directory
from ..machine.build import SavedMachine
from ..machine.state import Section
from ..memory import GuestMemory
from ..store import definition as defn
from ..store import statedir
from .console import Console
from .process import VmProcess, spec_of

MEMORY_MARGIN_MIB = 64


def available_mib() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


class Incoming:
    def __init__(self, root: Path, name: str, log):
        self.root = root
        self.name = name
        self.log = log
        self.staging = statedir.VmDir(root, name, folder="incoming")
        self.final = statedir.VmDir(root, name)
        self.definition: defn.Definition | None = None
        self.console = None
        self.saved: SavedMachine | None = None
        self.process = None

    # --- the receiver's target interface ---

    def check_offer(self, values: dict, memory: int, mode: str) -> None:
        definition = defn.validate(values)
        if definition.name != self.name:
            raise Conflict(f"name: this receiver waits for {self.name!r}, the source sent {definition.name!r}")
        if self.final.exists():
            raise Conflict(f"name: a VM named {self.name!r} is already defined on this host")
        expected = 0 if mode == "cold" else definition.memory * 2**20
        if memory != expected:
            raise FerryError(f"memory: the offer is for {memory} bytes, a {mode} migration of this "
                             f"definition carries {expected}")
        need = memory // 2**20 + MEMORY_MARGIN_MIB
        if mode != "cold" and available_mib() < need:
            raise FerryError(f"out of memory: this host has {available_mib()} MiB available, "
                             f"the VM needs {need} MiB")
        self.definition = definition
        self.staging.save_definition(definition)

    def create_memory(self, size: int):
        """RAM for the arriving VM, and the machine around it, built now so that none
        of this setup falls into the guest's downtime."""
        if not size:
            return None
        memory = GuestMemory(size)
        try:
            self.console = Console(self.staging.console_log)
            self.saved = SavedMachine(spec_of(self.definition, self.staging.root), self.console, memory)
            self.process = VmProcess(self.staging, self.console)
        except BaseException:
            memory.close()
            raise
        return memory

    def build(self, values: dict, memory, sections: list[Section]):
        """The machine built in ``create_memory``, now holding the sections (checked by the registry)."""
        if memory is None:
            return None
        return self.saved.load(sections)

    def ready(self) -> None:
        """Before PREPARED: write everything the commit needs, so the commit writes nothing.
        The record says committed because the rename publishes it only once it is true;
        a staging folder is never read as a VM, and is removed if its receiver dies."""
        self.staging.write_migration(phase="committed", role="destination", prepared_at=time.time())
        self.final.path.parent.mkdir(parents=True, exist_ok=True)

    def commit(self, machine, values: dict) -> None:
        """The commit point: one rename of the staging folder into ``vms/``, made durable."""
        self.staging.path.rename(self.final.path)
        try:
            sync_directory(self.final.path.parent)
        except OSError as err:  # the rename is done and visible: that, not the sync, is the commit
            self.log(f"could not sync {self.final.path.parent} after the commit: {err.strerror}")
        if machine is None:
            self.log("cold migration committed: the VM is defined here, stopped")
            return
        self.process.adopt(machine, self.final)
        self.log("migration committed: the VM runs here")

    def discard(self) -> None:
        """Drop what an offer staged (its definition, RAM, machine, console log); the folder
        and its lock stay, as long as this process waits."""
        if self.process is not None:
            self.process.server.close()
        if self.saved is not None:
            self.saved.close()
        if self.console is not None:
            self.console.handle.close()
        self.definition = self.console = self.saved = self.process = None
        for entry in self.staging.path.iterdir():
            if entry == self.staging.lock_file:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
