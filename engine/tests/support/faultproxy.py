"""A TCP relay that understands migration frames and cuts the link at a chosen one.

It forwards real connections between real hosts; the first connection is
cut, held or stalled at the rule's point (a cut closes both sockets, as a
dead link), and may have messages rewritten; later ones (a source resolving
an in-doubt handover) pass untouched, once a hold is released: while the first
connection's frame is held the link is down for every connection, so a source
that gives up on the held one (its link timeout, on a slow machine) cannot
resolve past the test's back.
"""

from __future__ import annotations

import json
import socket
import threading
import time

from ferry.migration import protocol
from ferry.migration.protocol import Kind


def payload_length(frame: protocol.Frame) -> int:
    if frame.kind is Kind.MEM:
        return frame.b
    if frame.kind is Kind.ZERO:
        return 0
    if frame.kind is Kind.SECTION:
        return frame.a + frame.b
    return frame.a


class FaultProxy:
    """``cut``: (direction, kind, after_bytes): cut when a frame of ``kind`` goes in
    ``direction`` ("out" source->destination, "back" destination->source), once
    ``after_bytes`` of MEM payload have passed; kind None cuts on the byte count alone."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], cut=None,
                 hold: threading.Event | None = None, stall: float | None = None, then: str = "cut",
                 rewrite=None):
        """With ``hold``, the relay stops at the cut point, sets ``reached`` and waits for
        ``hold`` (with ``stall``, that many seconds) before it cuts or, with ``then="pass"``,
        forwards the frame, so a test can act while the frame is in flight. ``rewrite``:
        (direction, kind, function) changes each such JSON message in flight."""
        self.target = target
        self.cut = cut
        self.hold = hold
        self.stall = stall
        self.then = then
        self.rewrite = rewrite
        self.reached = threading.Event()
        self.cuts = 0
        self.connections = 0
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self.server = socket.socket(family, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(listen)
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            threading.Thread(target=self._relay, args=(client, first), daemon=True).start()

    def _relay(self, client: socket.socket, first: bool) -> None:
        if not first and self.hold is not None:
            self.hold.wait(60)
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()  # nothing listens there (a killed receiver): as a refused connection
            return
        upstream.settimeout(None)
        pair = (client, upstream)
        for args in ((client, upstream, "out"), (upstream, client, "back")):
            threading.Thread(target=self._pump, args=(*args, first, pair), daemon=True).start()

    def _pump(self, source, sink, direction, first, pair) -> None:
        memory_bytes, armed = 0, first
        try:
            while True:
                header = _read(source, protocol.HEADER.size)
                frame = protocol.unpack(header)
                if armed and self._at_point(direction, frame, memory_bytes):
                    armed = False
                    if not self._wait_at_point():
                        break
                body = _read(source, payload_length(frame))
                if frame.kind is Kind.MEM:
                    memory_bytes += frame.b
                if first and self.rewrite and self.rewrite[:2] == (direction, frame.kind):
                    header, body = _rewritten(frame, body, self.rewrite[2])
                sink.sendall(header + body)
        except (OSError, EOFError, protocol.ProtocolError):
            pass
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _at_point(self, direction, frame, memory_bytes) -> bool:
        rule = self.cut
        return bool(rule) and rule[0] == direction and (rule[1] is None or frame.kind is rule[1]) \
            and memory_bytes >= rule[2]

    def _wait_at_point(self) -> bool:
        """Hold the frame as told; True if it goes on, False if the link is to be cut."""
        self.cuts += 1
        self.reached.set()
        if self.stall is not None:
            time.sleep(self.stall)
        elif self.hold is not None:
            self.hold.wait(60)
        return self.then == "pass"

    def close(self) -> None:
        self.server.close()


def _rewritten(frame: protocol.Frame, body: bytes, change) -> tuple[bytes, bytes]:
    """A JSON message changed by ``change``, with its header's length to match."""
    payload = protocol.encode(change(json.loads(body)))
    return protocol.pack(frame.kind, frame.aux, len(payload), frame.b), payload


def _read(sock, length: int) -> bytes:
    chunks, got = [], 0
    while got < length:
        data = sock.recv(min(length - got, 1 << 20))
        if not data:
            raise EOFError
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)
