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

MAX_SOCKET_PATH = 100


class ControlError(FerryError):
    pass


def _short_path(path: Path) -> tuple[str, int | None]:
    if len(str(path)) < MAX_SOCKET_PATH:
        return str(path), None
    folder = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    return f"/proc/self/fd/{folder}/{path.name}", folder


def request(path: Path, op: str, timeout: float = 30.0, **args) -> dict:
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


Handler = Callable[[dict], dict]


class ControlServer:
    def __init__(self, path: Path, handle: Handler):
        self.path = path
        self.handle = handle
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
        with conn:
            try:
                line = conn.makefile("rb").readline()
                reply = {"ok": True, "result": self.handle(json.loads(line))}
            except FerryError as err:
                reply = {"ok": False, "error": str(err)}
            except Exception as err:  # the VM must outlive a bad request
                reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
