"""The one way VM processes are started (``ferry start``, ``restore``, ``ferry receive``).

The process is detached (its own session, so it outlives the shell or SSH
connection that started it), runs under the engine's own interpreter
whoever starts it (the CLI, or an Ansible module under the host's
python3), and says on its first line of output whether it is up.

It is forked from the caller when that is safe: the caller runs the engine's
interpreter, has no other thread (a fork copies only the forking one, and
whatever lock another held stays held for ever), and its command line can be
rewritten to the VM process's, so ``ps`` and ``pgrep -f`` show the VM and not
the command that started it. That spares the VM process a fresh interpreter
and its imports (most of a restore's time at small sizes). Otherwise it is a
fresh ``python -m ferry.vmprocess.main``.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..store import statedir

PACKAGE = Path(__file__).resolve().parents[1]
ENTRY = "ferry.vmprocess.main"


def engine_python(package: Path = PACKAGE) -> str:
    """The interpreter of the virtual environment the engine is installed in (the folder
    above it that holds ``pyvenv.cfg``), else this one (a checkout, a system install)."""
    for folder in package.parents:
        if (folder / "pyvenv.cfg").is_file():
            python = folder / "bin" / "python"
            return str(python) if python.exists() else sys.executable
    return sys.executable


@dataclass
class Launched:
    process: subprocess.Popen | Forked
    line: str          # its first line: "ready", "listening PORT", "error: ..."; "" if none in time
    answered: bool     # False: no line within the time allowed
    forked: bool       # True: forked from the caller; False: a fresh interpreter


class Forked:
    """A forked VM process, with the part of ``Popen``'s interface its callers use."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(ENTRY, timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, 9)


def command_line(root: Path, args: list[str]) -> list[str]:
    return [engine_python(), "-m", ENTRY, "--state-dir", str(root), *args]


def launch(root: Path, args: list[str], log: Path, timeout: float) -> Launched:
    """Start ``vmprocess.main`` with ``args`` (its stderr appended to ``log``) and wait for its first line."""
    argv = command_line(root, args)
    read_end, write_end = os.pipe()
    try:
        with open_log(log) as stderr:
            forked = can_fork(argv)
            process = _fork(argv, write_end, stderr.fileno()) if forked else _exec(argv, write_end, stderr)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as ready_pipe:
        ready, _, _ = select.select([ready_pipe], [], [], timeout)
        line = ready_pipe.readline().decode(errors="replace").strip() if ready else ""
    return Launched(process, line, bool(ready), forked)


def can_fork(argv: list[str]) -> bool:
    """Forking is safe here: the engine's interpreter, one thread, room for the VM's command line."""
    return (argv[0] == sys.executable and threading.active_count() == 1
            and len(_joined(argv)) <= _title_room())


def _exec(argv: list[str], ready_fd: int, stderr) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=ready_fd, stderr=stderr,
                            start_new_session=True, close_fds=True)


def _fork(argv: list[str], ready_fd: int, log_fd: int) -> Forked:
    import importlib
    main = importlib.import_module(ENTRY).main  # imported once, here, for every child to come
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the caller's pending output again
    pid = os.fork()
    if pid:
        return Forked(pid)
    code = 1
    try:
        _become_vm_process(argv, ready_fd, log_fd)
        code = main(argv[3:])
        _join_threads()  # as an interpreter's exit does: a poweroff on SIGTERM finishes
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)  # never back into the caller's code


def _join_threads() -> None:
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()


def _become_vm_process(argv: list[str], ready_fd: int, log_fd: int) -> None:
    """What a fresh ``Popen`` would have given it: a session, /dev/null in, the ready pipe
    out, the log as stderr, no other descriptor (the caller's locks above all), its argv."""
    os.setsid()
    _fresh_signals()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(ready_fd, 1)
    os.dup2(log_fd, 2)
    # The caller's garbage goes now, while its descriptors are still its own; what is left
    # is never collected, so no object of the caller's can close a descriptor reused since.
    gc.collect()
    gc.freeze()
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    _fresh_stdio()
    _set_title(argv)


def _fresh_stdio() -> None:
    """Python's streams on descriptors 0-2, as a fresh interpreter's: the caller may have
    replaced them (a test runner capturing output)."""
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")


def _fresh_signals() -> None:
    """The handlers a fresh interpreter starts with, whatever the caller had set."""
    faulthandler.disable()  # it writes to a descriptor of the caller's, closed below
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# --- the command line shown by ps: the kernel reads it from the process's own memory ---

_libc = ctypes.CDLL(None, use_errno=True)
_kept: list = []  # the environment's new home, alive as long as the process


def _arg_area() -> tuple[int, int, int]:
    """Where the kernel reads /proc/self/cmdline: its start, the arguments' end, the environment's end."""
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    # Fields 48-51 of proc(5): arg_start arg_end env_start env_end (field 3 is fields[0] here).
    arg_start, arg_end, _, env_end = (int(value) for value in fields[45:49])
    return arg_start, arg_end, env_end


def _title_room() -> int:
    try:
        start, _, env_end = _arg_area()
    except (OSError, ValueError, IndexError):
        return 0
    return env_end - start - 1


def _joined(argv: list[str]) -> bytes:
    return "\0".join(argv).encode()


def _set_title(argv: list[str]) -> None:
    """Write ``argv`` over the arguments (and the environment after them when it is longer),
    after moving the C environment elsewhere: as setproctitle(3) does."""
    start, arg_end, env_end = _arg_area()
    title = _joined(argv)
    if len(title) >= arg_end - start:
        # Past the arguments' end the kernel reads up to the first NUL only.
        title = title.replace(b"\0", b" ")
        _move_environment()
        arg_end = env_end
    ctypes.memset(start, 0, arg_end - start)
    ctypes.memmove(start, title, len(title))


def _move_environment() -> None:
    entries = [key + b"=" + value for key, value in os.environb.items()]
    table = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
    _kept.append(table)
    ctypes.c_void_p.in_dll(_libc, "environ").value = ctypes.addressof(table)


def open_log(path: Path):
    return os.fdopen(statedir.open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")
