"""The receiving side: authenticate, take memory and sections, check them, hand over.

``target`` is the destination host as the receiver needs it
(``runtime.incoming`` implements it): ``check_offer``, ``create_memory``,
``build`` (a paused machine from memory and sections), ``commit`` (record
the phase durably, then run), ``discard``, ``log``.
"""

from __future__ import annotations

import secrets
import threading
import time

from .. import __version__
from ..errors import FerryError
from ..machine.state import Section
from ..snapshot import format as fmt
from . import protocol
from ..snapshot.digests import ChunkDigests
from .protocol import Kind, ProtocolError
from .transport import Channel, HandshakeFailed, LinkError, Listener

RESOLVE_TIMEOUT = 60.0
ANSWER_GRACE = 60.0


class AuthFailed(ProtocolError):
    pass


def answer_handshake(channel: Channel, token: bytes) -> None:
    _, hello = channel.expect(Kind.HELLO)
    try:
        version = protocol.choose_version(hello.get("versions"))
    except ProtocolError as err:
        channel.send(Kind.REFUSE, {"reason": str(err)})
        raise
    mine = secrets.token_hex(16)
    channel.send(Kind.HELLO, {"version": version, "engine": __version__, "caps": list(protocol.CAPABILITIES),
                              "nonce": mine})
    _, auth = channel.expect(Kind.AUTH)
    their = auth.get("nonce")
    if not isinstance(their, str) or not protocol.proof_ok(protocol.proof(token, "source", mine, their),
                                                           auth.get("proof")):
        channel.send(Kind.AUTH_FAIL, {"reason": "wrong token"})
        raise AuthFailed("a peer failed to prove the migration token")
    channel.send(Kind.AUTH_OK, {"proof": protocol.proof(token, "destination", their, mine)})


class Receiver:
    def __init__(self, listener: Listener, token: bytes, target, accept_timeout: float):
        self.listener = listener
        self.token = token
        self.target = target
        self.deadline = time.monotonic() + accept_timeout
        self.state = "waiting"

    def run(self) -> str:
        """Wait for a migration and take it; 'committed' once the VM runs here."""
        while True:
            channel = self._authenticated(self.deadline)
            try:
                kind, message = channel.expect(Kind.OFFER, Kind.QUERY)
                if kind is Kind.QUERY:
                    channel.send(Kind.OUTCOME, {"state": "aborted"})
                    continue
                return self._take(channel, message)
            except (ProtocolError, FerryError, OSError) as err:
                self.target.log(f"migration failed: {err}")
                self.state = "aborted"
                return "aborted"
            finally:
                channel.close()

    def _authenticated(self, deadline: float) -> Channel:
        while True:
            try:
                channel, peer = self.listener.accept(max(deadline - time.monotonic(), 0.01))
            except HandshakeFailed as err:
                self.target.log(f"refused a connection: {err}")
                continue
            try:
                answer_handshake(channel, self.token)
                return channel
            except (ProtocolError, OSError) as err:
                self.target.log(f"refused a connection from {peer}: {err}")
                channel.close()

    def _take(self, channel: Channel, offer: dict) -> str:
        try:
            self.target.check_offer(offer["definition"], offer["memory"], offer.get("mode", "live"))
            memory = self.target.create_memory(offer["memory"])
        except FerryError as err:
            channel.send(Kind.REFUSE, {"reason": str(err)})
            raise
        channel.send(Kind.ACCEPT)
        self.state = "receiving"
        try:
            machine = self._receive(channel, offer["definition"], memory)
        except BaseException:
            self.target.discard(memory)
            raise
        self.state = "prepared"
        return self._await_commit(channel, machine, offer["definition"])

    def _receive(self, channel: Channel, definition: dict, memory):
        sections: dict[str, Section] = {}
        size = memory.size if memory else 0
        self.digests = ChunkDigests(size, lambda start, length: memory.view[start:start + length])
        while True:
            frame = channel.recv_frame()
            if frame.kind is Kind.MEM:
                _check_range(frame.a, frame.b, size)
                memory.prepare_write(frame.a, frame.b)
                channel.recv_into(memory.view[frame.a:frame.a + frame.b])
                self.digests.moved(frame.a, frame.a + frame.b)
            elif frame.kind is Kind.ZERO:
                _check_range(frame.a, frame.b, size)
                memory.zero(frame.a, frame.b)
                self.digests.moved(frame.a, frame.a + frame.b)
            elif frame.kind is Kind.SECTION:
                head = protocol.decode(channel.recv_exact(frame.a))
                data = channel.recv_exact(frame.b)
                if fmt.digest(data) != head.get("checksum"):
                    return self._fail(channel, f"section {head.get('name')}: checksum mismatch in transit")
                sections[head["name"]] = Section(head["name"], frame.aux, data)
            elif frame.kind is Kind.ROUND:
                channel.recv_message(frame)
                self.digests.refresh()
            elif frame.kind is Kind.PREPARE:
                return self._prepare(channel, channel.recv_message(frame), definition, memory, sections)
            else:
                raise ProtocolError(f"unexpected {frame.kind.name} while receiving")

    def _prepare(self, channel: Channel, message: dict, definition: dict, memory, sections):
        wanted = message.get("chunks", [])
        have = self.digests.refresh()
        for index, (want, got) in enumerate(zip(wanted, have)):
            if want != got:
                return self._fail(channel, f"memory chunk {index} differs from the source's")
        if len(wanted) != len(have):
            return self._fail(channel, f"source sent {len(wanted)} chunk digests, expected {len(have)}")
        try:
            machine = self.target.build(definition, memory, sections)
        except (FerryError, ValueError, OSError) as err:
            return self._fail(channel, f"cannot build the VM here: {err}")
        channel.send(Kind.PREPARED)
        return machine

    def _fail(self, channel: Channel, reason: str):
        channel.send(Kind.FAIL, {"reason": reason})
        raise ProtocolError(reason)

    def _await_commit(self, channel: Channel, machine, definition: dict) -> str:
        deadline = time.monotonic() + RESOLVE_TIMEOUT
        try:
            channel.expect(Kind.COMMIT)
            return self._commit(channel, machine, definition)
        except (LinkError, ProtocolError) as err:
            self.target.log(f"link lost after PREPARED ({err}); waiting for the source to resolve")
        while time.monotonic() < deadline:
            try:
                query = self._authenticated(deadline)
            except LinkError:
                break
            try:
                kind, _ = query.expect(Kind.QUERY, Kind.ABORT)
                if kind is Kind.ABORT:
                    break
                query.send(Kind.OUTCOME, {"state": "prepared"})
                query.expect(Kind.COMMIT)
                return self._commit(query, machine, definition)
            except (LinkError, ProtocolError) as err:
                self.target.log(f"resolution attempt failed: {err}")
            finally:
                query.close()
        self.state = "aborted"
        self.target.log("no COMMIT from the source: migration aborted, nothing runs here")
        self.listener.close()
        self.target.discard(machine)
        return "aborted"

    def _commit(self, channel: Channel, machine, definition: dict) -> str:
        self.target.commit(machine, definition)
        self.state = "committed"
        try:
            channel.send(Kind.DONE)
        except LinkError:
            pass  # the source will ask, and hear "committed"
        threading.Thread(target=self._answer_queries, daemon=True, name="outcome").start()
        return "committed"

    def _answer_queries(self) -> None:
        """For a while after committing, tell a source in doubt that it is done."""
        deadline = time.monotonic() + ANSWER_GRACE
        while time.monotonic() < deadline:
            try:
                channel = self._authenticated(deadline)
            except (LinkError, OSError):
                break
            try:
                channel.expect(Kind.QUERY)
                channel.send(Kind.OUTCOME, {"state": self.state})
            except (LinkError, ProtocolError):
                pass
            finally:
                channel.close()
        self.listener.close()


def _check_range(offset: int, length: int, size: int) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise ProtocolError(f"memory range {offset:#x}+{length:#x} is outside the VM's {size:#x} bytes")
