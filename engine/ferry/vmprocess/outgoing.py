"""The source VM process's side of a migration, driven over its control socket.

The sending process (``ferry migrate``) holds one control connection for
the whole migration. If that connection ends before the handover, the
guest resumes here as if nothing happened; after the handover the guest
stays paused until the sender reports the outcome, so there is never a
moment where two copies run.
"""

from __future__ import annotations

import base64
import os
import time

from ..errors import Conflict, FerryError
from ..machine.sections import REGISTRY
from ..machine.state import Section
from ..memory import dirty
from ..migration.laps import Laps
from ..control import operations as ops


class Outgoing:
    def __init__(self, process):
        self.process = process
        self.phase: str = ops.IDLE
        self.to: str | None = None
        self.progress: dict = {}
        self.live = False

    @property
    def machine(self):
        return self.process.machine

    def _record(self, phase: str, durable: bool = True, **extra) -> None:
        self.phase = phase
        self.process.vmdir.write_migration(phase=phase, role="source", durable=durable, **extra)

    def steps(self) -> dict:
        """The control operations of a migration, by name (their phases are in ``operations``)."""
        return {"migration-begin": self.begin, "migration-attach": self.attach,
                "migration-dirty": self.dirty, "migration-throttle": self.throttle,
                "migration-pause": self.pause,
                "migration-progress": self.report_progress, "migration-resume": self.resume,
                "migration-handover": self.handover, "migration-finish": self.finish}

    def owned(self, session: dict) -> None:
        """Only the connection that began (or attached to) the migration may drive it."""
        if session.get("migration") is not self:
            raise Conflict("no migration is under way on this connection")

    def begin(self, request: dict, session: dict) -> dict:
        self.live = bool(request.get("live"))
        session["migration"] = self
        self.progress = {}
        self.to = str(request.get("to"))
        # Not synced, as stop-and-copy: pre-copy lasts only as long as this process (a record
        # found after a crash reads as no migration at all), so an fsync here would only slow the start.
        self._record(ops.PRECOPY, durable=False, to=self.to, started_at=time.time())
        if self.live:
            dirty.set_dirty_logging(self.machine, True)
        memory = self.machine.memory
        answer = {"size": memory.size, "pid": os.getpid(), "base": memory.base_address,
                  "private": memory.private}
        if not memory.private:
            answer["_fds"] = [memory.fd]
        return answer

    def attach(self, request: dict, session: dict) -> dict:
        """A new sender takes over a migration left in doubt, to report its outcome."""
        session["migration"] = self
        return {**self.process.vmdir.read_migration(), "phase": self.phase}

    def dirty(self, request: dict, session: dict) -> dict:
        self.owned(session)
        return {"ranges": dirty.dirty_ranges(self.machine)}

    def throttle(self, request: dict, session: dict) -> dict:
        self.owned(session)
        share = request.get("share")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise FerryError(f"share: {share!r} is not a throttle share from 0 to below 1")
        self.machine.set_throttle(float(share))
        return {}

    def pause(self, request: dict, session: dict) -> dict:
        self.owned(session)
        laps = Laps()  # the sender's report splits the downtime with these
        self.machine.pause()
        self.machine.set_throttle(0)
        # Not synced: the guest resumes here on any failure, so there is nothing to resolve.
        self._record(ops.STOP_AND_COPY, durable=False)
        laps.lap("pause")
        ranges = dirty.dirty_ranges(self.machine) if self.live else []
        laps.lap("dirty_scan")
        # The device state as well: it cannot change while the guest is paused, and one
        # answer instead of two keeps a control round trip out of the downtime.
        sections = [{"name": s.name, "version": s.version, "data": base64.b64encode(s.data).decode()}
                    for s in REGISTRY.capture(self.machine)]
        laps.lap("capture")
        return {"ranges": ranges, "sections": sections, "parts": laps.parts}

    def report_progress(self, request: dict, session: dict) -> dict:
        self.owned(session)
        progress = request.get("progress")
        self.progress = progress if isinstance(progress, dict) else {}
        return {}

    def resume(self, request: dict, session: dict) -> dict:
        self.owned(session)
        self.abort(str(request.get("reason", "the sender gave up")))
        return {}

    def handover(self, request: dict, session: dict) -> dict:
        self.owned(session)
        self._record(ops.HANDOVER)
        return {}

    def finish(self, request: dict, session: dict) -> dict:
        self.owned(session)
        if request.get("outcome") == "committed":
            self._record(ops.COMMITTED, report=request.get("report"))
            session.pop("migration", None)
            self.process.leave(f"migrated to {self.process.vmdir.read_migration().get('to')}")
            return {}
        self.abort("the destination aborted")
        return {}

    def abort(self, reason: str, resume: bool = True) -> None:
        """Back to how it was before the migration: dirty logging off, no throttle, and
        (unless the VM is about to power off) the guest resumed."""
        if self.live:
            dirty.set_dirty_logging(self.machine, False)
        self.machine.set_throttle(0)
        if resume:
            self.machine.resume()
        self._record("aborted", reason=reason)

    def cancel(self, reason: str) -> None:
        """Poweroff during precopy or stop-and-copy: the migration is abandoned here; the
        sender's next step is refused, so it never sends COMMIT and the destination discards."""
        self.abort(f"cancelled: {reason}", resume=False)

    def connection_closed(self, session: dict) -> None:
        if session.get("migration") is not self:
            return
        if self.phase in ops.MOVING:
            self.abort("the sender went away before the handover")
        elif self.phase == ops.HANDOVER:
            self.process.vmdir.write_migration(phase=ops.IN_DOUBT, role="source",
                                               error="the sender went away during the handover")
            self.phase = ops.IN_DOUBT

    @property
    def current(self) -> str:
        """This VM's phase in the operations table ("aborted" is no migration at all)."""
        return self.phase if self.phase in ops.PHASES else ops.IDLE

    def status(self) -> dict | None:
        if self.phase == ops.IDLE:
            return None
        # "phase" is where the handover stands here; "step" is the sender's own progress.
        return {**self.progress, "phase": self.phase, "step": self.progress.get("phase")}


def decode_sections(items: list[dict]) -> list[Section]:
    try:
        return [Section(item["name"], item["version"], base64.b64decode(item["data"])) for item in items]
    except (KeyError, ValueError) as err:
        raise FerryError(f"bad sections from the VM process: {err}") from None
