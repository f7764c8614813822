"""Which operation a VM accepts in which migration phase: the one table.

Every operation enters through one of two doors, and both check this table
before anything changes: the VM process's control socket (``VmProcess.handle``)
for a VM that runs, and the host API (``Host``) for a VM's folder. A refused
operation changes nothing and says why, e.g. ``busy: migrating to h2:7400
(handover)``.

The phases of a VM leaving this host, in order (recorded in its
``migration.json`` before they take effect):

    precopy        memory moves while the guest runs (live mode)
    stop-and-copy  the guest is paused here, the last delta and its state move
    handover       the destination holds a complete copy; COMMIT may be on its way
    in-doubt       the sender lost track of the outcome; ``ferry migrate --resolve`` settles it
    committed      the VM runs at the destination; this copy is on its way out

A VM arriving is ``receiving`` while its receiver holds the staging folder.
``poweroff`` in precopy or stop-and-copy is a cancel: the migration is
abandoned (the destination discards what it got) and the VM powers off
here, so exactly one copy of it exists, stopped, on this host. From the
handover on the outcome is no longer this host's to decide: only the
migration's own steps and ``status`` are accepted until it is resolved.
"""

from __future__ import annotations

from ..errors import Conflict

IDLE = "idle"
PRECOPY = "precopy"
STOP_AND_COPY = "stop-and-copy"
HANDOVER = "handover"
IN_DOUBT = "in-doubt"
COMMITTED = "committed"
RECEIVING = "receiving"

MOVING = (PRECOPY, STOP_AND_COPY)          # the migration can still be called off here
SETTLING = (HANDOVER, IN_DOUBT)            # the outcome belongs to the two-phase handover
PHASES = (IDLE, *MOVING, *SETTLING, COMMITTED, RECEIVING)
EVERY = PHASES

SOCKET = "socket"  # served by the VM process on its control socket
FOLDER = "folder"  # done by the host API on the VM's folder

# operation -> (the door it enters by, the phases it is allowed in)
TABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    # read-only, or harmless to the guest's place
    "status": (SOCKET, EVERY),
    "console-input": (SOCKET, (IDLE, *MOVING, *SETTLING)),
    # the guest's run state
    "pause": (SOCKET, (IDLE,)),
    "resume": (SOCKET, (IDLE,)),
    "shutdown": (SOCKET, (IDLE,)),
    "poweroff": (SOCKET, (IDLE, *MOVING)),
    "snapshot": (SOCKET, (IDLE,)),
    # the VM's folder
    "define": (FOLDER, (IDLE,)),
    "start": (FOLDER, (IDLE,)),
    "restore": (FOLDER, (IDLE,)),
    "undefine": (FOLDER, (IDLE,)),
    "snapshot-delete": (FOLDER, (IDLE, *MOVING, *SETTLING)),
    "migrate": (FOLDER, (IDLE,)),
    # a migration's own steps, in the order the sender takes them
    "migration-begin": (SOCKET, (IDLE,)),
    "migration-dirty": (SOCKET, (PRECOPY,)),
    "migration-throttle": (SOCKET, (PRECOPY,)),
    "migration-pause": (SOCKET, MOVING),
    "migration-progress": (SOCKET, (*MOVING, *SETTLING)),
    "migration-resume": (SOCKET, MOVING),
    "migration-handover": (SOCKET, (STOP_AND_COPY,)),
    "migration-attach": (SOCKET, SETTLING),
    "migration-finish": (SOCKET, SETTLING),
}
ALLOWED = {op: phases for op, (_, phases) in TABLE.items()}
ON_SOCKET = frozenset(op for op, (door, _) in TABLE.items() if door == SOCKET)


def check_served(handlers) -> None:
    """The VM process serves exactly the table's socket operations: one it lacks, or one the
    table does not know, is a defect found when the process starts, not at a user's request."""
    if set(handlers) != ON_SOCKET:
        raise AssertionError(f"control handlers differ from the table: {sorted(set(handlers) ^ ON_SOCKET)}")


class Busy(Conflict):
    """The operation is not allowed in the VM's current migration phase."""


def check(op: str, phase: str, name: str, peer: str | None = None) -> None:
    """Raise ``Busy`` unless ``op`` is allowed in ``phase``; unknown operations are refused too."""
    allowed = ALLOWED.get(op)
    if allowed is None:
        raise Conflict(f"{name}: unknown operation {op!r}")
    if phase in allowed:
        return
    if phase == IDLE:
        raise Busy(f"{name}: {op} needs a migration under way, and none is")
    if phase == RECEIVING:
        raise Busy(f"busy: {name} is arriving here by migration ({RECEIVING})")
    raise Busy(f"busy: {name} is migrating to {peer or 'another host'} ({phase})"
               + ("; settle it with `ferry migrate NAME --resolve ...`" if phase in SETTLING else ""))


def phase_of(record: dict, process_alive: bool) -> str:
    """A VM folder's phase from its migration record. Precopy and stop-and-copy only last as
    long as the VM process: if it died, the migration died with it. The handover and what
    follows are durable: they hold until the outcome is settled."""
    phase = record.get("phase") if record.get("role") == "source" else None
    if phase in MOVING:
        return phase if process_alive else IDLE
    if phase in SETTLING or phase == COMMITTED:
        return phase
    return IDLE
