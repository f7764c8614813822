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
from ..machine import state
from ..snapshot import memio

class Outgoing:
    def __init__(self, process):
        self.process = process
        self.phase: str | None = None
        self.progress: dict = {}
        self.live = False

    @property
    def machine(self):
        return self.process.machine

    def _record(self, phase: str, durable: bool = True, **extra) -> None:
        self.phase = phase
        self.process.vmdir.write_migration(phase=phase, role="source", durable=durable, **extra)

    def handle(self, action: str, request: dict, session: dict) -> dict:
        if action not in ("begin", "attach") and session.get("migration") is not self:
            raise Conflict("no migration is under way on this connection")
        return getattr(self, f"do_{action.replace('-', '_')}")(request, session)

    def do_begin(self, request: dict, session: dict) -> dict:
        if self.phase in ("sending", "paused", "handover"):
            raise Conflict(f"{self.process.definition.name}: a migration is already under way ({self.phase})")
        self.live = bool(request.get("live"))
        session["migration"] = self
        self.progress = {}
        self._record("sending", to=request.get("to"), started_at=time.time())
        if self.live:
            memio.set_dirty_logging(self.machine, True)
        memory = self.machine.memory
        answer = {"size": memory.size, "pid": os.getpid(), "base": memory.base_address,
                  "private": memory.private}
        if not memory.private:
            answer["_fds"] = [memory.fd]
        return answer

    def do_attach(self, request: dict, session: dict) -> dict:
        """A new sender takes over a migration left in doubt, to report its outcome."""
        if self.phase not in ("handover", "in-doubt"):
            raise Conflict(f"{self.process.definition.name}: no migration is waiting for its outcome")
        session["migration"] = self
        return {"phase": self.phase, **self.process.vmdir.read_migration()}

    def do_dirty(self, request: dict, session: dict) -> dict:
        return {"ranges": memio.dirty_ranges(self.machine)}

    def do_throttle(self, request: dict, session: dict) -> dict:
        self.machine.set_throttle(float(request["share"]))
        return {}

    def do_pause(self, request: dict, session: dict) -> dict:
        self.machine.pause()
        self.machine.set_throttle(0)
        self._record("paused", durable=False)  # the guest resumes here on any failure: nothing to resolve
        ranges = memio.dirty_ranges(self.machine) if self.live else []
        return {"ranges": ranges}

    def do_sections(self, request: dict, session: dict) -> dict:
        return {"sections": [{"name": s.name, "version": s.version, "data": base64.b64encode(s.data).decode()}
                             for s in state.capture(self.machine)]}

    def do_progress(self, request: dict, session: dict) -> dict:
        self.progress = request.get("progress", {})
        return {}

    def do_resume(self, request: dict, session: dict) -> dict:
        self.abort(request.get("reason", "the sender gave up"))
        return {}

    def do_handover(self, request: dict, session: dict) -> dict:
        self._record("handover")
        return {}

    def do_finish(self, request: dict, session: dict) -> dict:
        if request.get("outcome") == "committed":
            self._record("committed", report=request.get("report"))
            session.pop("migration", None)
            self.process.leave(f"migrated to {self.process.vmdir.read_migration().get('to')}")
            return {}
        self.abort("the destination aborted")
        return {}

    def abort(self, reason: str) -> None:
        """Back to running here: dirty logging off, no throttle, guest resumed."""
        if self.live:
            memio.set_dirty_logging(self.machine, False)
        self.machine.set_throttle(0)
        self.machine.resume()
        self._record("aborted", reason=reason)

    def connection_closed(self, session: dict) -> None:
        if session.get("migration") is not self:
            return
        if self.phase in ("sending", "paused"):
            self.abort("the sender went away before the handover")
        elif self.phase == "handover":
            self.process.vmdir.write_migration(phase="in-doubt", role="source",
                                               error="the sender went away during the handover")
            self.phase = "in-doubt"

    def status(self) -> dict | None:
        if self.phase is None:
            return None
        # "phase" is where the handover stands here; "step" is the sender's own progress.
        return {**self.progress, "phase": self.phase, "step": self.progress.get("phase")}


def decode_sections(items: list[dict]) -> list[state.Section]:
    try:
        return [state.Section(item["name"], item["version"], base64.b64decode(item["data"])) for item in items]
    except (KeyError, ValueError) as err:
        raise FerryError(f"bad sections from the VM process: {err}") from None
