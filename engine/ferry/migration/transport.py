"""Connections for migration: TCP (IPv4/IPv6), TLS, or a channel through SSH.

``Channel`` frames messages over any of them and moves memory with
sendfile where the connection is a plain socket.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from . import messages, protocol
from .protocol import Frame, Kind, PeerFailed, ProtocolError

LINK_TIMEOUT = 30.0  # a link that moves nothing for this long is taken as cut


class LinkError(ProtocolError):
    pass


class HandshakeFailed(LinkError):
    """One peer failed to set up its connection (TLS); the listener keeps waiting."""


def parse_address(text: str, default_host: str = "") -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProtocolError(f"address {text!r}: expected HOST:PORT or [IPV6]:PORT")
    host = host.strip("[]") or default_host
    return host, int(port)


@dataclass
class TlsFiles:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


@dataclass
class SshOptions:
    user: str = "root"
    key: Path | None = None
    known_hosts: Path | None = None
    port: int = 22


class Channel:
    """``reads`` is the schema table of what this end receives (``messages.TO_SOURCE`` or
    ``TO_DESTINATION``); messages are capped at PRE_AUTH_MAX until ``authenticated``."""

    def __init__(self, conn, plain_socket: bool, reads: dict, link_timeout: float = LINK_TIMEOUT):
        self.conn = conn
        self.plain = plain_socket
        self.reads = reads
        self.limit = messages.PRE_AUTH_MAX
        self.link_timeout = link_timeout
        conn.settimeout(link_timeout)
        self.sent = 0
        self.received = 0

    def authenticated(self) -> None:
        self.limit = messages.POST_AUTH_MAX

    # --- sending ---

    def send(self, kind: Kind, message: dict | None = None) -> None:
        payload = protocol.encode(message or {})
        self._sendall(protocol.pack(kind, a=len(payload)) + payload)

    def send_zero(self, offset: int, length: int) -> None:
        self._sendall(protocol.pack(Kind.ZERO, a=offset, b=length))

    def send_section(self, name: str, version: int, checksum: str, data: bytes) -> None:
        head = protocol.encode({"name": name, "checksum": checksum})
        self._sendall(protocol.pack(Kind.SECTION, aux=version, a=len(head), b=len(data)) + head + data)

    def send_memory(self, offset: int, length: int, memory) -> None:
        self._sendall(protocol.pack(Kind.MEM, a=offset, b=length))
        if self.plain and memory.fd is not None:
            self._sendfile(memory.fd, offset, length)
        else:
            self._sendall(memory.read(offset, length))

    def _sendfile(self, fd: int, offset: int, length: int) -> None:
        end = offset + length
        try:
            while offset < end:
                try:
                    sent = os.sendfile(self.conn.fileno(), fd, offset, end - offset)
                except BlockingIOError:
                    # A socket with a timeout is non-blocking underneath: wait until it drains.
                    if not select.select([], [self.conn], [], self.link_timeout)[1]:
                        raise LinkError(f"link: no progress for {self.link_timeout:.0f} s") from None
                    continue
                if sent == 0:
                    raise LinkError("link closed while sending memory")
                offset += sent
                self.sent += sent
        except (OSError, socket.timeout) as err:
            raise LinkError(f"link: {err}") from None

    def _sendall(self, data) -> None:
        try:
            self.conn.sendall(data)
        except (OSError, socket.timeout, EOFError) as err:
            raise LinkError(f"link: {err}") from None
        self.sent += len(data)

    # --- receiving ---

    def recv_frame(self) -> Frame:
        """The next frame header, refused before its payload is read if its kind or sizes are not allowed."""
        frame = protocol.unpack(self.recv_exact(protocol.HEADER.size))
        messages.check_header(frame, self.reads, self.limit)
        return frame

    def recv_message(self, frame: Frame) -> dict:
        return messages.read(self.reads, frame.kind, self.recv_exact(frame.a))

    def recv_section(self, frame: Frame) -> tuple[dict, bytes]:
        """A SECTION's checked JSON head (name, checksum) and its data."""
        return self.recv_message(frame), self.recv_exact(frame.b)

    def expect(self, *kinds: Kind) -> tuple[Kind, dict]:
        frame = self.recv_frame()
        refusal = frame.kind in (Kind.REFUSE, Kind.FAIL, Kind.AUTH_FAIL)
        if frame.kind not in kinds and not refusal:
            raise ProtocolError(f"expected {'/'.join(k.name for k in kinds)}, got {frame.kind.name}")
        message = self.recv_message(frame)
        if frame.kind not in kinds:
            raise PeerFailed(f"destination: {message['reason'] or frame.kind.name}")
        return frame.kind, message

    def recv_exact(self, length: int) -> bytes:
        buffer = bytearray(length)
        self.recv_into(memoryview(buffer))
        return bytes(buffer)

    def recv_into(self, view: memoryview) -> None:
        got, length = 0, len(view)
        try:
            while got < length:
                if hasattr(self.conn, "recv_into"):
                    count = self.conn.recv_into(view[got:], length - got)
                else:
                    data = self.conn.recv(min(length - got, 1 << 20))
                    count = len(data)
                    view[got:got + count] = data
                if count == 0:
                    raise LinkError("link closed by the peer")
                got += count
        except (OSError, socket.timeout, EOFError) as err:
            raise LinkError(f"link: {err}") from None
        self.received += length

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


# --- opening connections ---

def _tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise LinkError(f"cannot connect to {host}:{port}: {err}") from None
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def connect(address: str, transport: str = "tcp", tls: TlsFiles | None = None,
            ssh: SshOptions | None = None, timeout: float = 10.0,
            link_timeout: float = LINK_TIMEOUT) -> Channel:
    host, port = parse_address(address)
    reads = messages.TO_SOURCE
    if transport == "tcp":
        return Channel(_tcp_connect(host, port, timeout), True, reads, link_timeout)
    if transport == "tls":
        context = tls_context(ssl.Purpose.SERVER_AUTH, tls or TlsFiles())
        try:
            conn = context.wrap_socket(_tcp_connect(host, port, timeout), server_hostname=host)
        except (ssl.SSLError, OSError) as err:
            raise LinkError(f"TLS with {host}:{port}: {err}") from None
        return Channel(conn, False, reads, link_timeout)
    if transport == "ssh":
        return Channel(_ssh_channel(host, port, ssh or SshOptions(), timeout), False, reads, link_timeout)
    raise ProtocolError(f"transport: {transport!r} is not one of tcp, tls, ssh")


def _ssh_channel(host: str, port: int, options: SshOptions, timeout: float):
    """A direct-tcpip channel to the receiver on the destination's loopback."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_system_host_keys()
    if options.known_hosts:
        client.load_host_keys(str(options.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host, port=options.port, username=options.user,
                       key_filename=str(options.key) if options.key else None, timeout=timeout,
                       allow_agent=False, look_for_keys=options.key is None)
        channel = client.get_transport().open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0))
    except (paramiko.SSHException, OSError) as err:
        client.close()
        raise LinkError(f"SSH to {host}: {err}") from None
    channel.ssh_client = client  # keeps the SSH connection alive as long as the channel
    return channel


def tls_context(purpose: ssl.Purpose, tls: TlsFiles) -> ssl.SSLContext:
    """A TLS context from the given files; any problem with one is a line naming its option."""
    for option, path in (("tls-cert", tls.cert), ("tls-key", tls.key), ("tls-ca", tls.ca)):
        if path is not None:
            _readable(option, path)
    try:
        context = ssl.create_default_context(purpose, cafile=tls.ca)
    except ssl.SSLError:
        raise ProtocolError(f"tls-ca: {tls.ca} holds no PEM certificate") from None
    if tls.key and not tls.cert:
        raise ProtocolError("tls-key: given without --tls-cert")
    if tls.cert:
        try:
            context.load_cert_chain(tls.cert, tls.key)
        except ssl.SSLError as err:
            raise ProtocolError(_cert_problem(tls, err)) from None
    return context


def _readable(option: str, path: Path) -> None:
    try:
        Path(path).read_bytes()
    except OSError as err:
        raise ProtocolError(f"{option}: cannot read {path}: {err.strerror}") from None


def _cert_problem(tls: TlsFiles, err: ssl.SSLError) -> str:
    """Which of the two files ``load_cert_chain`` refused, told from their content."""
    if b"-----BEGIN CERTIFICATE-----" not in Path(tls.cert).read_bytes():
        return f"tls-cert: {tls.cert} holds no PEM certificate"
    key = tls.key or tls.cert
    if b"PRIVATE KEY-----" not in Path(key).read_bytes():
        return f"tls-key: {key} holds no PEM private key"
    if "KEY_VALUES_MISMATCH" in str(err):
        return f"tls-key: {key} does not match the certificate in {tls.cert}"
    return f"tls-cert: {tls.cert}: {err.reason or err}"


class Listener:
    """The listening socket of a receiver; ``accept`` hands out raw connections at once,
    ``channel`` does the (slow, peer-paced) TLS handshake, in the caller's thread."""

    BACKLOG = 128

    def __init__(self, address: str, tls: TlsFiles | None = None, link_timeout: float = LINK_TIMEOUT):
        self.link_timeout = link_timeout
        self.context = None
        if tls and (tls.key or tls.ca) and not tls.cert:
            raise ProtocolError("tls-cert: required on the receiver when --tls-key or --tls-ca is given")
        if tls and tls.cert:
            self.context = tls_context(ssl.Purpose.CLIENT_AUTH, tls)
            if not tls.ca:
                self.context.verify_mode = ssl.CERT_NONE
        host, port = parse_address(address, default_host="::")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            self.sock.bind((host, port))
        except OSError as err:
            self.sock.close()
            raise ProtocolError(f"listen on {address}: {err.strerror}") from None
        self.sock.listen(self.BACKLOG)
        self.port = self.sock.getsockname()[1]

    def accept(self) -> tuple[socket.socket, str]:
        """The next connection; OSError once the listener is closed."""
        conn, peer = self.sock.accept()
        return conn, peer[0]

    def channel(self, conn: socket.socket, peer: str) -> Channel:
        conn.settimeout(self.link_timeout)
        if self.context is None:
            return Channel(conn, True, messages.TO_DESTINATION, self.link_timeout)
        try:
            conn = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as err:
            conn.close()
            raise HandshakeFailed(f"TLS from {peer}: {err}") from None
        return Channel(conn, False, messages.TO_DESTINATION, self.link_timeout)

    def close(self) -> None:
        """Stop listening; a thread blocked in ``accept`` wakes with an OSError."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
