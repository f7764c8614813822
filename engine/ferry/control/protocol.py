"""The per-VM control socket: one JSON request line in, one JSON reply line out.

The socket file is mode 0600 in the VM's folder. Paths longer than a unix
socket address allows are reached through ``/proc/self/fd`` of the folder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Callable

from ..errors import FerryError
from .operations import ON_SOCKET

MAX_SOCKET_PATH = 100


class ControlError(FerryError):
    pass


def _short_path(path: Path) -> tuple[str, int | None]:
    if len(str(path)) < MAX_SOCKET_PATH:
        return str(path), None
    folder = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    return f"/proc/self/fd/{folder}/{path.name}", folder


def _known(op: str) -> None:
    """Clients name only operations of the one table (``operations.TABLE``) the server serves."""
    if op not in ON_SOCKET:
        raise ControlError(f"op: {op!r} is not a control operation")


def request(path: Path, op: str, timeout: float = 30.0, **args) -> dict:
    _known(op)
    address, folder = _short_path(path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(address)
            conn.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            reply = conn.makefile("rb").readline()
    except (OSError, socket.timeout) as err:
        raise ControlError(f"VM control socket {path}: {err}") from None
    finally:
        if folder is not None:
            os.close(folder)
    if not reply:
        raise ControlError(f"VM control socket {path}: no reply to {op!r}")
    answer = json.loads(reply)
    if not answer.get("ok"):
        raise ControlError(answer.get("error", f"{op} failed"))
    return answer.get("result") or {}


class Session:
    """A control connection kept open for several requests (a migration holds one).

    A reply may carry file descriptors (SCM_RIGHTS), e.g. the guest RAM memfd.
    """

    def __init__(self, path: Path, timeout: float = 30.0):
        address, folder = _short_path(path)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
        except OSError as err:
            self.sock.close()
            raise ControlError(f"VM control socket {path}: {err}") from None
        finally:
            if folder is not None:
                os.close(folder)
        self.buffer = b""

    def call(self, op: str, **args) -> tuple[dict, list[int]]:
        _known(op)
        try:
            self.sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            fds = []
            while b"\n" not in self.buffer:
                data, new_fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 4)
                if not data:
                    raise ControlError(f"VM control socket {self.path}: closed during {op!r}")
                self.buffer += data
                fds += new_fds
        except (OSError, socket.timeout) as err:
            raise ControlError(f"VM control socket {self.path}: {op}: {err}") from None
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not answer.get("ok"):
            raise ControlError(answer.get("error", f"{op} failed"))
        return answer.get("result") or {}, fds

    def close(self) -> None:
        self.sock.close()


REPLY_GRACE = 2.0  # seconds a closing server waits for replies still being sent
Handler = Callable[[dict, dict], dict]


class ControlServer:
    """Serves requests; ``handle(request, session)`` gets a dict private to the connection,
    and ``on_close(session)`` runs when that connection ends."""

    def __init__(self, path: Path, handle: Handler, on_close: Callable[[dict], None] | None = None):
        self.path = path
        self.handle = handle
        self.on_close = on_close
        # Replies handled but not yet sent: the process must not end before they are out
        # (a snapshot with exit answers, then the VM process ends at once).
        self._unsent = 0
        self._sent = threading.Condition()
        address, folder = _short_path(path)
        try:
            path.unlink(missing_ok=True)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_mask = os.umask(0o177)
            try:
                self.sock.bind(address)
            finally:
                os.umask(old_mask)
        finally:
            if folder is not None:
                os.close(folder)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        session: dict = {}
        with conn:
            for line in conn.makefile("rb"):
                fds = []
                with self._sent:
                    self._unsent += 1
                try:
                    result = self.handle(json.loads(line), session)
                    fds = (result or {}).pop("_fds", []) if isinstance(result, dict) else []
                    reply = {"ok": True, "result": result}
                except FerryError as err:
                    reply = {"ok": False, "error": str(err)}
                except Exception as err:  # the VM must outlive a bad request
                    reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
                if not self._send(conn, reply, fds):
                    break
        if self.on_close and session:
            self.on_close(session)

    def _send(self, conn: socket.socket, reply: dict, fds: list) -> bool:
        try:
            payload = json.dumps(reply).encode() + b"\n"
            if fds:
                socket.send_fds(conn, [payload], fds)
            else:
                conn.sendall(payload)
            return True
        except OSError:
            return False
        finally:
            with self._sent:
                self._unsent -= 1
                self._sent.notify_all()

    def close(self) -> None:
        """Stop listening, and give the replies being sent a moment to leave."""
        self.sock.close()
        self.path.unlink(missing_ok=True)
        with self._sent:
            self._sent.wait_for(lambda: self._unsent == 0, timeout=REPLY_GRACE)
