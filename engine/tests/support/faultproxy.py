"""A TCP relay that understands migration frames and cuts the link at a chosen one.

It forwards real connections between real hosts; the first connection is
cut at the rule's point (both sockets closed, as a dead link), later ones
(a source resolving an in-doubt handover) pass untouched.
"""

from __future__ import annotations

import socket
import threading

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
                 hold: threading.Event | None = None):
        """With ``hold``, the relay stops at the cut point, sets ``reached`` and waits for
        ``hold`` before cutting, so a test can act while the frame is in flight."""
        self.target = target
        self.cut = cut
        self.hold = hold
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
            upstream = socket.create_connection(self.target)
            armed = self.cut if self.connections == 1 else None
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(client, upstream, "out", armed, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "back", armed, pair), daemon=True).start()

    def _pump(self, source, sink, direction, rule, pair) -> None:
        memory_bytes = 0
        try:
            while True:
                header = _read(source, protocol.HEADER.size)
                frame = protocol.unpack(header)
                if rule and rule[0] == direction and (rule[1] is None or frame.kind is rule[1]) \
                        and memory_bytes >= rule[2]:
                    self.cuts += 1
                    self.reached.set()
                    if self.hold is not None:
                        self.hold.wait(60)
                    break
                body = _read(source, payload_length(frame))
                if frame.kind is Kind.MEM:
                    memory_bytes += frame.b
                sink.sendall(header + body)
        except (OSError, EOFError, protocol.ProtocolError):
            pass
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.server.close()


def _read(sock, length: int) -> bytes:
    chunks, got = [], 0
    while got < length:
        data = sock.recv(min(length - got, 1 << 20))
        if not data:
            raise EOFError
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)
