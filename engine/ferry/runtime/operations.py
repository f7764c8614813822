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

# operation -> the phases it is allowed in
ALLOWED: dict[str, tuple[str, ...]] = {
    # read-only, or harmless to the guest's place
    "status": EVERY,
    "console-input": (IDLE, *MOVING, *SETTLING),
    # the guest's run state
    "pause": (IDLE,),
    "resume": (IDLE,),
    "shutdown": (IDLE,),
    "poweroff": (IDLE, *MOVING),
    "snapshot": (IDLE,),
    # the VM's folder (host API)
    "define": (IDLE,),
    "start": (IDLE,),
    "restore": (IDLE,),
    "undefine": (IDLE,),
    "snapshot-delete": (IDLE, *MOVING, *SETTLING),
    "migrate": (IDLE,),
    # a migration's own steps, in the order the sender takes them
    "migration-begin": (IDLE,),
    "migration-dirty": (PRECOPY,),
    "migration-throttle": (PRECOPY,),
    "migration-pause": MOVING,
    "migration-sections": (STOP_AND_COPY,),
    "migration-progress": (*MOVING, *SETTLING),
    "migration-resume": MOVING,
    "migration-handover": (STOP_AND_COPY,),
    "migration-attach": SETTLING,
    "migration-finish": SETTLING,
}


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
