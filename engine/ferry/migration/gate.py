"""The receiver's door: several peers at once, each with a few seconds to prove the token.

One thread accepts connections; each gets a thread of its own for the TLS
handshake, HELLO and AUTH, which must be over within HANDSHAKE_TIMEOUT. At
most MAX_PENDING peers may be at that stage: when one more arrives, the one
that has been at it longest is cut. So idle or hostile peers hold a slot
for a few seconds at most, never keep a new peer out, and cannot delay the
real source, whose handshake takes milliseconds. An authenticated peer's
first message (OFFER, QUERY or ABORT) goes to ``arrived(channel, kind,
message)``, which owns the channel from then on.
"""

from __future__ import annotations

import secrets
import socket
import threading

from .. import __version__
from . import protocol
from .protocol import Kind, ProtocolError
from .transport import Channel, LinkError, Listener

HANDSHAKE_TIMEOUT = 5.0
MAX_PENDING = 32
FIRST = (Kind.OFFER, Kind.QUERY, Kind.ABORT)


class AuthFailed(ProtocolError):
    """The peer was told AUTH_FAIL."""


class Refused(ProtocolError):
    """The peer was told REFUSE, with this reason."""


def answer_handshake(channel: Channel, token: bytes) -> None:
    """HELLO and AUTH from the destination's side; a bad message is answered REFUSE naming it."""
    try:
        _answer(channel, token)
    except (LinkError, AuthFailed):
        raise
    except ProtocolError as err:
        tell_refusal(channel, str(err))
        raise Refused(str(err)) from None


def _answer(channel: Channel, token: bytes) -> None:
    _, hello = channel.expect(Kind.HELLO)
    version = protocol.choose_version(hello["versions"])
    mine = secrets.token_hex(16)
    channel.send(Kind.HELLO, {"version": version, "engine": __version__, "caps": list(protocol.CAPABILITIES),
                              "nonce": mine})
    _, auth = channel.expect(Kind.AUTH)
    if not protocol.proof_ok(protocol.proof(token, "source", mine, auth["nonce"]), auth["proof"]):
        channel.send(Kind.AUTH_FAIL, {"reason": "wrong token"})
        raise AuthFailed("a peer failed to prove the migration token")
    channel.send(Kind.AUTH_OK, {"proof": protocol.proof(token, "destination", auth["nonce"], mine)})
    channel.authenticated()


def tell_refusal(channel: Channel, reason: str) -> None:
    """REFUSE with a reason, if the link still carries it."""
    try:
        channel.send(Kind.REFUSE, {"reason": reason})
    except LinkError:
        pass


class Pending:
    """A connection still authenticating, and why it was cut, if it was."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.why: str | None = None

    def cut(self, why: str) -> None:
        """End the connection under the thread reading it."""
        self.why = why
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Gate:
    def __init__(self, listener: Listener, token: bytes, log, arrived):
        self.listener = listener
        self.token = token
        self.log = log
        self.arrived = arrived
        self.lock = threading.Lock()
        self.pending: list[Pending] = []  # oldest first

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="gate").start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return  # the listener was closed
            pending = Pending(conn)
            with self.lock:
                if len(self.pending) >= MAX_PENDING:
                    self._cut(self.pending[0], f"{MAX_PENDING} newer peers arrived while it was authenticating")
                self.pending.append(pending)
            threading.Thread(target=self._serve, args=(pending, peer), daemon=True, name=f"peer {peer}").start()

    def _cut(self, pending: Pending, why: str) -> None:
        """Called with the lock held, so a peer that finished in time is never cut."""
        if pending in self.pending:
            self.pending.remove(pending)
            pending.cut(why)

    def _expire(self, pending: Pending) -> None:
        with self.lock:
            self._cut(pending, f"did not authenticate within {HANDSHAKE_TIMEOUT:.0f} s")

    def _finished(self, pending: Pending) -> bool:
        """Whether the peer finished before it was cut; either way it no longer holds a slot."""
        with self.lock:
            if pending not in self.pending:
                return False
            self.pending.remove(pending)
            return True

    def _serve(self, pending: Pending, peer: str) -> None:
        channel = self._authenticate(pending, peer)
        if channel is None:
            return
        try:
            kind, message = channel.expect(*FIRST)
        except Exception as err:  # whatever the peer sent, this thread ends cleanly
            self._refuse(channel, peer, err)
            return
        self.arrived(channel, kind, message)

    def _authenticate(self, pending: Pending, peer: str) -> Channel | None:
        """The peer's channel once it proved the token, or None (logged) if it did not in time."""
        watchdog = threading.Timer(HANDSHAKE_TIMEOUT, self._expire, (pending,))
        watchdog.daemon = True
        watchdog.start()
        channel = None
        try:
            channel = self.listener.channel(pending.conn, peer)
            answer_handshake(channel, self.token)
            if self._finished(pending):
                return channel
            raise LinkError(pending.why)
        except Exception as err:  # a hostile peer must not end the receiver, whatever it sends
            self._finished(pending)
            self._refuse(channel, peer, LinkError(pending.why) if pending.why else err)
            pending.conn.close()
            return None
        finally:
            watchdog.cancel()

    def _refuse(self, channel: Channel | None, peer: str, err: Exception) -> None:
        """Log why, tell the peer if the link still works, and hang up."""
        reason = str(err) if isinstance(err, ProtocolError) else f"{type(err).__name__}: {err}"
        self.log(f"refused a connection from {peer}: {reason}")
        if channel is None:
            return
        if not isinstance(err, (LinkError, AuthFailed, Refused)):
            tell_refusal(channel, reason)
        channel.close()
