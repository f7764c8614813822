"""The receiving side: authenticate, take memory and sections, check them, hand over.

``target`` is the destination host as the receiver needs it
(``vmprocess.incoming`` implements it): ``check_offer``, ``create_memory``,
``build`` (a paused machine from memory and sections), ``ready`` (write
all the commit needs, before PREPARED), ``commit`` (the one durable step
that makes the VM this host's, then run), ``discard`` (drop whatever is staged),
``log``, and ``name``.
"""

from __future__ import annotations

import queue
import threading
import time

from ..errors import FerryError
from ..machine.state import Section
from ..memory import chunks
from ..memory.digests import ChunkDigests
from .gate import Gate, tell_refusal
from .interfaces import Target
from .laps import Laps
from .populate import Populator
from .protocol import Kind, ProtocolError
from .transport import Channel, LinkError, Listener

RESOLVE_TIMEOUT = 60.0
ANSWER_GRACE = 60.0
MAX_STATE = 64 * 1024 * 1024  # all state sections together; a VM's take a few hundred KiB


class OfferRefused(FerryError):
    """The source was told REFUSE; the receiver waits for another offer."""


class Receiver:
    """One VM arrives here, from the one source that offers it first.

    States: ``waiting`` (an OFFER is taken), ``receiving`` (another OFFER is
    refused busy), ``prepared`` (the source's QUERY or ABORT settles it),
    ``committed`` or ``aborted`` (a QUERY hears which).
    """

    def __init__(self, listener: Listener, token: bytes, target: Target, accept_timeout: float):
        self.target = target
        self.accept_timeout = accept_timeout
        self.deadline = time.monotonic() + accept_timeout
        self.state = "waiting"
        self.lock = threading.Lock()
        self.arrivals: queue.Queue = queue.Queue()
        self.populator: Populator | None = None  # allocating the planned chunks' pages
        self.gate = Gate(listener, token, target.log, self._arrived)

    def run(self) -> str:
        """Wait for a migration and take it; 'committed' once the VM runs here."""
        self.gate.start()
        try:
            while True:
                channel, kind, offer = self._next_arrival()
                if kind is not Kind.OFFER:  # a QUERY that came in while a refused offer was checked
                    self._answer(channel, kind, "waiting")
                    continue
                outcome = self._take(channel, offer)
                if outcome != "refused":
                    return outcome
        finally:
            if self.state != "committed":
                self.gate.close()

    def _next_arrival(self) -> tuple[Channel, Kind, dict]:
        try:
            return self.arrivals.get(timeout=max(self.deadline - time.monotonic(), 0))
        except queue.Empty:
            raise LinkError(f"no migration arrived within {self.accept_timeout:.0f} s") from None

    def _arrived(self, channel: Channel, kind: Kind, message: dict) -> None:
        """An authenticated peer's first message (in its own thread): hand it over, or answer it here."""
        with self.lock:
            state = self.state
            if kind is Kind.OFFER and state == "waiting":
                self.state = "receiving"
            if (kind is Kind.OFFER and state == "waiting") or (
                    kind is not Kind.OFFER and state in ("receiving", "prepared")):
                self.arrivals.put((channel, kind, message))
                return
        self._answer(channel, kind, state)

    def _answer(self, channel: Channel, kind: Kind, state: str) -> None:
        """What the main thread does not take: a QUERY hears the outcome, an OFFER why not."""
        try:
            if kind is Kind.QUERY:
                channel.send(Kind.OUTCOME, {"state": "committed" if state == "committed" else "aborted"})
            elif kind is Kind.OFFER:
                tell_refusal(channel, self._why_not(state))
        except LinkError:
            pass
        finally:
            channel.close()

    def _why_not(self, state: str) -> str:
        name = self.target.name
        if state == "committed":
            return f"{name} already arrived here"
        if state == "aborted":
            return f"this receiver is ending: its migration of {name} was aborted"
        return f"busy: {name} is being received from another source"

    def _take(self, channel: Channel, offer: dict) -> str:
        try:
            memory = self._accept(channel, offer)
            return self._transfer(channel, offer, memory)
        except OfferRefused:
            return "refused"
        except Exception as err:  # whatever went wrong, the receiver ends cleanly
            self.target.log(f"migration failed: {err}")
            self.state = "aborted"
            return "aborted"
        finally:
            channel.close()

    def _accept(self, channel: Channel, offer: dict):
        """ACCEPT and the RAM for the VM; a refused offer leaves nothing staged and the receiver waits on."""
        try:
            self.target.check_offer(offer["definition"], offer["memory"], offer["mode"])
            memory = self.target.create_memory(offer["memory"])
        except Exception as err:  # a bad definition may fail in many ways: each is a refusal
            reason = _refusal(err)
            self.target.discard()
            self.target.log(f"refused an offer: {reason}")
            tell_refusal(channel, reason)
            with self.lock:
                self.state = "waiting"
            raise OfferRefused(reason) from None
        channel.send(Kind.ACCEPT)
        return memory

    def _transfer(self, channel: Channel, offer: dict, memory) -> str:
        try:
            self.staged = self._stage()
            machine = self._receive(channel, offer["definition"], memory)
        except BaseException:
            self.target.discard()
            raise
        with self.lock:
            self.state = "prepared"
        return self._await_commit(channel, machine, offer["definition"])

    def _receive(self, channel: Channel, definition: dict, memory):
        self.populator = None
        try:
            return self._receive_frames(channel, definition, memory)
        finally:
            if self.populator:
                self.populator.stop()

    def _receive_frames(self, channel: Channel, definition: dict, memory):
        sections: list[Section] = []  # as they came: the registry refuses a name sent twice
        state_bytes = 0
        size = memory.size if memory else 0
        self.digests = ChunkDigests(size, lambda start, length: memory.view[start:start + length])
        self.steps = Laps()  # this round's, for ROUND_OK
        while True:
            frame = channel.recv_frame()
            if frame.kind is Kind.MEM:
                _check_range(frame.a, frame.b, size)
                self._receive_memory(channel, memory, frame.a, frame.b)
            elif frame.kind is Kind.ZERO:
                _check_range(frame.a, frame.b, size)
                memory.zero(frame.a, frame.b)
                self.digests.moved(frame.a, frame.a + frame.b)
            elif frame.kind is Kind.SECTION:
                state_bytes += frame.b
                if state_bytes > MAX_STATE:
                    return self._fail(channel, f"state sections: more than {MAX_STATE} bytes in all")
                head, data = channel.recv_section(frame)
                if chunks.digest(data) != head["checksum"]:
                    return self._fail(channel, f"section {head['name']}: checksum mismatch in transit")
                sections.append(Section(head["name"], frame.aux, data))
            elif frame.kind is Kind.PLAN:
                self._plan(channel.recv_message(frame)["chunks"], memory)
            elif frame.kind is Kind.ROUND:
                channel.recv_message(frame)
                self.steps.lap("wait")
                # Before the hashing, which the next round overlaps.
                channel.send(Kind.ROUND_OK, {"parts": self.steps.parts})
                self.steps = Laps()
                self.digests.refresh()
            elif frame.kind is Kind.PREPARE:
                return self._prepare(channel, channel.recv_message(frame), definition, memory, sections)
            else:
                raise ProtocolError(f"unexpected {frame.kind.name} while receiving")

    def _plan(self, runs: list[list[int]], memory) -> None:
        """Allocate the announced chunks' pages ahead of the first pass (once, for RAM that exists)."""
        if memory is None or self.populator:
            raise ProtocolError("PLAN: only one, at the start of a migration that moves memory")
        total = chunks.count(memory.size)
        for first, count in runs:
            if count == 0 or first + count > total:
                raise ProtocolError(f"PLAN chunks: {first}+{count} is outside the VM's {total} chunks")
        self.populator = Populator(memory.base_address, runs)

    def _stage(self) -> str | None:
        """Write what the commit needs now, while the first memory is on its way, rather than in
        the downtime; why it failed, if it did, goes to the source at PREPARE. The staged record
        is published only by the commit's rename, so writing it early promises nothing."""
        try:
            self.target.ready()
        except (FerryError, OSError) as err:
            return str(err)
        return None

    def _receive_memory(self, channel: Channel, memory, start: int, length: int) -> None:
        """Into guest RAM at once; a whole chunk is hashed as it lands, while the source sends the
        next, so that PREPARE only hashes chunks that arrived in parts."""
        self.steps.lap("wait")
        memory.prepare_write(start, length)
        self.steps.lap("populate")
        view = memory.view[start:start + length]
        channel.recv_into(view)
        self.steps.lap("receive")
        if length == chunks.CHUNK_SIZE and start % chunks.CHUNK_SIZE == 0:
            self.digests.known(start, chunks.digest(view))
            self.steps.lap("hash")
        else:
            self.digests.moved(start, start + length)

    def _prepare(self, channel: Channel, message: dict, definition: dict, memory, sections):
        laps = Laps()
        wanted = message["chunks"]
        have = self.digests.refresh()
        for index, (want, got) in enumerate(zip(wanted, have)):
            if want != got:
                return self._fail(channel, f"memory chunk {index} differs from the source's")
        if len(wanted) != len(have):
            return self._fail(channel, f"source sent {len(wanted)} chunk digests, expected {len(have)}")
        laps.lap("check")
        try:
            if self.staged:
                raise FerryError(self.staged)
            machine = self.target.build(definition, memory, sections)
            laps.lap("build")
        except (FerryError, ValueError, OSError) as err:
            return self._fail(channel, f"cannot build the VM here: {err}")
        channel.send(Kind.PREPARED, {"parts": laps.parts})
        return machine

    def _fail(self, channel: Channel, reason: str):
        channel.send(Kind.FAIL, {"reason": reason})
        raise ProtocolError(reason)

    def _await_commit(self, channel: Channel, machine, definition: dict) -> str:
        deadline = time.monotonic() + RESOLVE_TIMEOUT
        try:
            channel.expect(Kind.COMMIT)
            return self._commit(channel, machine, definition)
        except ProtocolError as err:
            self.target.log(f"link lost after PREPARED ({err}); waiting for the source to resolve")
        while True:
            try:
                query, kind, _ = self.arrivals.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if kind is Kind.ABORT:
                query.close()
                break
            try:
                query.send(Kind.OUTCOME, {"state": "prepared"})
                query.expect(Kind.COMMIT)
                return self._commit(query, machine, definition)
            except ProtocolError as err:
                self.target.log(f"resolution attempt failed: {err}")
            finally:
                query.close()
        self.state = "aborted"
        self.target.log("no COMMIT from the source: migration aborted, nothing runs here")
        self.gate.close()
        self.target.discard()
        return "aborted"

    def _commit(self, channel: Channel, machine, definition: dict) -> str:
        laps = Laps()
        self.target.commit(machine, definition)
        laps.lap("commit")
        with self.lock:
            self.state = "committed"
        try:
            channel.send(Kind.DONE, {"parts": laps.parts})
        except LinkError:
            pass  # the source will ask, and hear "committed"
        self._answer_queued()
        # For a while the gate stays open, so that a source in doubt hears it is done.
        closer = threading.Timer(ANSWER_GRACE, self.gate.close)
        closer.daemon = True
        closer.start()
        return "committed"

    def _answer_queued(self) -> None:
        """Queries that came in while this one committed."""
        while True:
            try:
                query, kind, _ = self.arrivals.get_nowait()
            except queue.Empty:
                return
            self._answer(query, kind, "committed")


def _refusal(err: Exception) -> str:
    """Why an offer is refused, in one line: a full disk says so, not as an exception's repr."""
    if isinstance(err, FerryError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return f"cannot stage this VM here: {err.strerror}"
    return f"cannot take this VM: {type(err).__name__}: {err}"


def _check_range(offset: int, length: int, size: int) -> None:
    if length == 0 or offset + length > size:
        raise ProtocolError(f"memory range {offset:#x}+{length:#x} is outside the VM's {size:#x} bytes")
