"""Connections for migration: TCP (IPv4/IPv6), TLS, or stdio forwarding through the system's
OpenSSH client (``ssh -W``), which honours the operator's ssh config, agent and jump hosts.
The same ssh client also runs a command on the far host and talks to its stdin and stdout
(``ssh HOST ferry checkpoint receive --stdio``), whose end there is a ``StdioLink``.

``Channel`` frames messages over any of them and moves memory with
sendfile where the connection is a plain socket.
"""

from __future__ import annotations

import math
import os
import re
import select
import shlex
import socket
import ssl
import subprocess
import tempfile
import time
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
    """What ``ssh`` is told on its command line; whatever is None is left to the ssh config."""
    user: str | None = None
    key: Path | None = None
    known_hosts: Path | None = None
    port: int | None = None
    config: Path | None = None
    options: tuple[str, ...] = ()  # KEY=VALUE, each passed as -o


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

    def send_file(self, a: int, fd: int, length: int) -> None:
        """A MEM frame whose ``a`` the protocol gives its meaning (a chunk's index, say), then
        the first ``length`` bytes of the file ``fd``."""
        self._sendall(protocol.pack(Kind.MEM, a=a, b=length))
        if self.plain:
            self._sendfile(fd, 0, length)
        else:
            self._sendall(os.pread(fd, length, 0))

    def pace(self, bytes_per_s: float | None, since: float) -> None:
        """Wait while more has been sent since ``since`` (a monotonic time) than the cap allows."""
        if bytes_per_s:
            ahead = self.sent / bytes_per_s - (time.monotonic() - since)
            if ahead > 0:
                time.sleep(ahead)

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
        except OSError as err:
            raise self._failed(err) from None

    def _sendall(self, data) -> None:
        try:
            self.conn.sendall(data)
        except (OSError, EOFError) as err:
            raise self._failed(err) from None
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
                count = self.conn.recv_into(view[got:], length - got)
                if count == 0:
                    raise self._failed(None)
                got += count
        except (OSError, EOFError) as err:
            raise self._failed(err) from None
        self.received += length

    def _failed(self, err: Exception | None) -> LinkError:
        """The link broke (``err``; None: the peer closed it). Over ssh, ssh's own words say
        why when it gave up (a refused host key, a denied login), rather than a broken pipe."""
        said = self.conn.failure(err) if isinstance(self.conn, SshLink) else ""
        if said:
            return LinkError(said)
        if isinstance(self.conn, ssl.SSLSocket) and not self.received and not self.conn.server_side:
            # Under TLS 1.3 a receiver that refuses our certificate says so only after the
            # handshake, by closing: the first read is where the source learns it.
            return LinkError(f"TLS: the receiver closed the connection before its first answer ({err or 'EOF'}): "
                             "it admits only a certificate (--tls-cert) that chains to its --tls-ca")
        return LinkError(f"link: {err}" if err else "link closed by the peer")

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
        return Channel(SshLink(host, ssh_argv(host, port, ssh or SshOptions(), timeout)), True, reads, link_timeout)
    raise ProtocolError(f"transport: {transport!r} is not one of tcp, tls, ssh")


SSH_EXIT_WAIT = 5.0  # seconds ssh gets to pass on what it holds and end, once its stdin closes
SSH_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*=[^\x00-\x1f\x7f]+")


def check_ssh(options: SshOptions) -> None:
    """Refuse bad ssh settings in one line naming the option, before the VM is touched."""
    for value in options.options:
        if not SSH_OPTION.fullmatch(value):
            raise ProtocolError(f"ssh-option: {value!r} is not KEY=VALUE (an ssh_config keyword, "
                                "then a value on one line)")
    if options.user is not None and (not options.user or _has_control(options.user)):
        raise ProtocolError(f"ssh-user: {options.user!r} is not a user name on one line")
    if options.port is not None and not 0 < options.port < 65536:
        raise ProtocolError(f"ssh-port: {options.port} is not a port (1-65535)")
    known_hosts = str(options.known_hosts or "")
    if _has_control(known_hosts) or '"' in known_hosts:
        raise ProtocolError(f"ssh-known-hosts: {known_hosts!r} is not a path on one line without double quotes")
    for option, path in (("ssh-config", options.config), ("ssh-key", options.key)):
        if path is not None:
            _readable(option, path)


def _has_control(text: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


def ssh_argv(host: str, port: int, options: SshOptions, timeout: float) -> list[str]:
    """``ssh -W`` to the receiver on the destination's loopback."""
    argv = ["ssh", "-W", f"127.0.0.1:{port}", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    return _operator_options(argv, options, timeout) + ["--", host]  # a host such as "-oProxyCommand=..." stays a host


def ssh_command_argv(host: str, command: list[str], options: SshOptions, timeout: float) -> list[str]:
    """``ssh HOST COMMAND``: the far host's shell gets ``command`` as one line, each word
    quoted, so nothing in a word is read by that shell."""
    argv = _operator_options(["ssh", "-o", "BatchMode=yes"], options, timeout)
    return argv + ["--", host, " ".join(shlex.quote(word) for word in command)]


def _operator_options(argv: list[str], options: SshOptions, timeout: float) -> list[str]:
    """ssh keeps the first value it sees for a keyword: first what must hold (``argv``: never
    prompt), then the operator's flags and options, then our connect timeout, and last the
    ssh config files."""
    argv = list(argv)
    if options.config is not None:
        argv += ["-F", str(options.config)]
    if options.user is not None:
        argv += ["-l", options.user]
    if options.port is not None:
        argv += ["-p", str(options.port)]
    if options.key is not None:
        argv += ["-i", str(options.key)]
    if options.known_hosts is not None:
        argv += ["-o", f'UserKnownHostsFile="{options.known_hosts}"']  # quoted: ssh splits it at spaces
    for option in options.options:
        argv += ["-o", option]
    return argv + ["-o", f"ConnectTimeout={max(1, math.ceil(timeout))}"]


class SshLink:
    """Our end of a socketpair whose other end is the stdin and stdout of ``ssh`` (``-W``, or
    a command on the far host): a plain socket to ``Channel`` (sendfile works on AF_UNIX),
    with the ssh process tied to it."""

    def __init__(self, host: str, argv: list[str]):
        self.host = host
        self.sock, theirs = socket.socketpair()
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: ssh never blocks on it
        try:
            # A session of its own: a Ctrl-C meant for ferry must not cut the link it aborts over.
            self.process = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=self.stderr,
                                            start_new_session=True)
        except OSError as err:
            self.sock.close()
            self.stderr.close()
            raise LinkError(f"ssh to {host}: cannot run {argv[0]}: {err.strerror}") from None
        finally:
            theirs.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def settimeout(self, timeout: float) -> None:
        self.sock.settimeout(timeout)

    def sendall(self, data) -> None:
        self.sock.sendall(data)

    def recv_into(self, view, length: int) -> int:
        return self.sock.recv_into(view, length)

    def failure(self, err: Exception | None) -> str:
        """What ssh said when it gave up, in one line; "" when it did not (still running, or
        the far end closed the link)."""
        try:
            # A link that timed out has ssh still waiting too: no words to wait for.
            self.process.wait(0 if isinstance(err, TimeoutError) else SSH_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return ""
        if self.process.returncode == 0:
            return ""
        self.stderr.seek(0)
        lines = [line.strip() for line in self.stderr.read().decode(errors="replace").splitlines()]
        # ssh ends with the cause, then the outcome ("Host key for X has changed ...", "Host key
        # verification failed."); warning banners before them would make a screenful.
        said = "; ".join([line for line in lines if line][-2:])
        return f"ssh to {self.host}: {said or f'ssh exited with status {self.process.returncode}'}"

    def close(self) -> None:
        self.sock.close()  # EOF on ssh's stdin: it passes on what it holds, then ends
        try:
            self.process.wait(SSH_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


class StdioLink:
    """The far end of ``ssh HOST COMMAND``: the command's stdin and stdout, pipes or sockets
    as sshd made them, each read and write waiting at most the link timeout."""

    def __init__(self, read_fd: int, write_fd: int):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.timeout: float | None = None

    def fileno(self) -> int:
        return self.write_fd

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def _wait(self, fd: int, writing: bool) -> None:
        ready = select.select([] if writing else [fd], [fd] if writing else [], [], self.timeout)
        if not any(ready):
            raise TimeoutError(f"no progress for {self.timeout:.0f} s")

    def recv_into(self, view, length: int) -> int:
        self._wait(self.read_fd, writing=False)
        return os.readv(self.read_fd, [view[:length]])

    def sendall(self, data) -> None:
        view = memoryview(data)
        while view:
            self._wait(self.write_fd, writing=True)
            view = view[os.write(self.write_fd, view):]

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            os.close(fd)


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
            # A server context asks for no client certificate by default: with a CA given, the
            # source must present one that chains to it (mutual TLS), else the token alone admits.
            self.context.verify_mode = ssl.CERT_REQUIRED if tls.ca else ssl.CERT_NONE
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
