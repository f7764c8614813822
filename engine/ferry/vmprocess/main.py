"""The VM process's entry point, started by ``launcher`` (``Host.start``, ``restore``,
``ferry receive``):

    python -m ferry.vmprocess.main --state-dir DIR [--restore SNAPSHOT | --incoming ADDR:PORT ...] NAME
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from ..errors import FerryError
from ..machine.vcpu import install_kick_handler
from ..store import statedir
from ..store.token import read_token
from .process import VmProcess, log


def _detach_stdio(ready_fd: int, message: str) -> None:
    os.write(ready_fd, (message + "\n").encode())
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferry-vm")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--restore", type=Path, help="start from this snapshot directory")
    parser.add_argument("--eager", action="store_true", help="copy snapshot memory in before running")
    parser.add_argument("--no-verify", action="store_true", help="skip memory checksums on restore")
    parser.add_argument("--incoming", metavar="ADDR:PORT", help="wait for a migration of NAME here")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--accept-timeout", type=float, default=600.0)
    parser.add_argument("--link-timeout", type=float, default=30.0)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--tls-ca", type=Path)
    parser.add_argument("name")
    args = parser.parse_args(argv)
    if args.incoming:
        return receive_main(args)
    vmdir = statedir.VmDir(Path(args.state_dir), args.name)
    stdout = os.dup(1)
    if vmdir.hold_lock() is None:
        _detach_stdio(stdout, "already running")
        return 0
    install_kick_handler()
    try:
        process = VmProcess(vmdir)
        if args.restore:
            process.restore(args.restore, lazy=not args.eager, verify_memory=not args.no_verify)
        else:
            process.boot()
    except Exception as err:
        message = str(err) if isinstance(err, (FerryError, OSError)) else f"{type(err).__name__}: {err}"
        if not args.restore:  # a refused restore changed nothing: the VM stays as it was
            vmdir.write_status(state="crashed", error=message, stopped_at=time.time())
        traceback.print_exc()
        _detach_stdio(stdout, f"error: {message}")
        return 1
    _poweroff_on_sigterm(process)
    process.server.start()
    _detach_stdio(stdout, "ready")
    return process.run()


def _poweroff_on_sigterm(process: VmProcess) -> None:
    # A thread: the handler runs in the main thread, which may hold the process's lock.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=process.poweroff_signal).start())


def receive_main(args) -> int:
    """Wait for NAME to arrive; on commit, go on as its VM process.

    Short of a commit the staging folder goes, whatever ended the wait: no
    listener, no migration in time, a failed one, an unexpected error, SIGTERM.
    """
    from ..migration.receiver import Receiver
    from ..migration.transport import Listener, TlsFiles
    from .incoming import Incoming

    stdout = os.dup(1)
    install_kick_handler()
    incoming = Incoming(Path(args.state_dir), args.name, log)
    try:
        token = read_token(args.token_file)
        if incoming.final.exists():
            raise FerryError(f"name: a VM named {args.name!r} is already defined on this host")
        incoming.staging.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if incoming.staging.hold_lock() is None:
            raise FerryError(f"{args.name}: another receiver is already waiting for it")
        incoming.discard()  # what a receiver killed before us staged: never committed, so none of it stays
    except FerryError as err:
        _detach_stdio(stdout, f"error: {err}")
        return 1
    # SystemExit, unlike the default action, runs the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    outcome, listening = "aborted", False
    try:
        listener = Listener(args.incoming, TlsFiles(args.tls_cert, args.tls_key, args.tls_ca), args.link_timeout)
        log(f"waiting for {args.name} on {args.incoming} (port {listener.port})")
        _detach_stdio(stdout, f"listening {listener.port}")
        listening = True
        outcome = Receiver(listener, token, incoming, args.accept_timeout).run()
    except Exception as err:
        message = str(err) if isinstance(err, FerryError) else f"{type(err).__name__}: {err}"
        if listening:
            log(f"no migration: {message}")
        else:
            _detach_stdio(stdout, f"error: {message}")
    finally:
        if outcome != "committed":
            statedir.remove_tree(incoming.root, incoming.staging.path)
    if outcome != "committed":
        return 1
    if incoming.process is None:
        return 0
    _poweroff_on_sigterm(incoming.process)
    return incoming.process.run()


if __name__ == "__main__":
    sys.exit(main())
