"""Keys, one Debian sshd and one cron daemon per lab host.

Each sshd runs inside its host's network namespace and in a private mount
namespace where the standard Ferry paths are bind mounts of the host's own
directories, so everything started over SSH lives "on" that host.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time

from ..errors import FerryError
from .net import first_line, run

SSHD = "/usr/sbin/sshd"
CRON = "/usr/sbin/cron"
CRON_PIDFILE = "/run/crond.pid"  # Debian cron's, fixed; each host's cron gets a file of its own bound there
START_TIMEOUT = 10.0

TOOLS = {"ip": "iproute2", "ssh-keygen": "openssh-client", "setsid": "util-linux",
         "unshare": "util-linux", "nsenter": "util-linux"}

# Standard path on the host -> directory name under DIR/hosts/hK/.
HOST_PATHS = {
    "/var/lib/ferry": "var-lib-ferry",
    "/etc/ferry": "etc-ferry",
    "/run/ferry": "run-ferry",
    "/opt/ferry": "opt-ferry",
    "/etc/cron.d": "etc-cron.d",
}


def generate_key(path: str, comment: str) -> str:
    """Create an ed25519 key pair (no passphrase); returns the public key line."""
    if not os.path.exists(path):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    with open(path + ".pub") as handle:
        return handle.read().strip()


def host_dirs(host_root: str) -> dict[str, str]:
    dirs = {}
    for target, name in HOST_PATHS.items():
        source = os.path.join(host_root, name)
        os.makedirs(source, exist_ok=True)
        dirs[target] = source
    return dirs


def write_config(path: str, host: dict, host_key: str, authorized_keys: str) -> None:
    lines = [
        "Port 22",
        f"ListenAddress {host['ipv4']}",
        f"ListenAddress {host['ipv6']}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        # Without PAM no session module can fail inside a namespace; root's "*" password
        # is not "locked", so key login still works.
        "UsePAM no",
        # Lab directories often sit under a world-writable parent such as /tmp.
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        "Subsystem sftp internal-sftp",
        "AcceptEnv LANG LC_*",
        "PidFile " + host["sshd_pidfile"],
        "LogLevel INFO",
    ]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def mount_script(dirs: dict[str, str], config: str, log: str) -> str:
    steps = ["set -e",
             # The copied mount table holds every named network namespace of the machine
             # (/run/netns/*); dropping them keeps this host from pinning other labs' namespaces.
             "awk '$0 ~ / - nsfs / {print $5}' /proc/self/mountinfo | xargs -r -n1 umount -l"]
    for target, source in dirs.items():
        # The mount point must exist in the shared filesystem; it stays an empty directory there.
        steps.append(f"mkdir -p {shlex.quote(target)}")
        steps.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
    steps.append("mkdir -p -m 0755 /run/sshd")
    steps.append(f"exec {SSHD} -D -f {shlex.quote(config)} -E {shlex.quote(log)}")
    return "; ".join(steps)


def launch(host: dict, dirs: dict[str, str], config: str, log: str) -> None:
    """Start the host's sshd detached: a new session, reparented away from us."""
    if os.path.exists(host["sshd_pidfile"]):
        os.unlink(host["sshd_pidfile"])
    argv = ["setsid", "-f", "ip", "netns", "exec", host["ns"],
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", mount_script(dirs, config, log)]
    # Its output goes to the log, never to our pipes: callers reading our output would hang.
    with open(log, "ab") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              close_fds=True, timeout=START_TIMEOUT)
    if proc.returncode != 0:
        raise FerryError(f"could not start sshd for {host['name']}: {last_line(log)}")


def cron_script(host_root: str) -> str:
    """Cron in a mount namespace of its own below the host's: its pid file (which cron locks,
    so two crons would refuse each other) and an empty /etc/crontab (the machine's daily jobs
    are not the host's) are private; /etc/cron.d is the host's own already."""
    pidfile, crontab = os.path.join(host_root, "crond.pid"), os.path.join(host_root, "crontab")
    for path in (pidfile, crontab):
        open(path, "a").close()
    return "; ".join(["set -e", f"touch {CRON_PIDFILE}",
                      f"mount --bind {shlex.quote(pidfile)} {CRON_PIDFILE}",
                      f"mount --bind {shlex.quote(crontab)} /etc/crontab", f"exec {CRON} -f"])


def launch_cron(enter: list[str], host_root: str) -> int:
    """Start the host's cron daemon detached, inside the host (``enter``: the nsenter argv
    prefix); returns its pid, once it has written it."""
    log, pidfile = os.path.join(host_root, "cron.log"), os.path.join(host_root, "crond.pid")
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    argv = ["setsid", "-f", *enter, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", cron_script(host_root)]
    with open(log, "ab") as out:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
                       timeout=START_TIMEOUT, check=False)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = read_pid(pidfile)
        if pid:
            return pid
        time.sleep(0.02)
    raise FerryError(f"cron of {os.path.basename(host_root)} did not start in {START_TIMEOUT:.0f} s: "
                     f"{last_line(log)}")


def wait_ready(host: dict, log: str) -> int:
    # sshd writes its pid file once its sockets are bound; then a connect confirms it.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = read_pid(host["sshd_pidfile"])
        if pid and accepts(host["ipv4"]):
            return pid
        time.sleep(0.02)
    raise FerryError(f"sshd of {host['name']} did not start in {START_TIMEOUT:.0f} s: {last_line(log)}")


def read_pid(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def accepts(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def alive(pid: int | None, ns: str) -> bool:
    """Whether ``pid`` is still the sshd running in namespace ``ns``."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/comm") as handle:
            if handle.read().strip() != "sshd":
                return False
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


def check_tools() -> None:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise FerryError(f"{tool} not found: install {package}")
    for path, package in ((SSHD, "openssh-server"), (CRON, "cron")):
        if not os.access(path, os.X_OK):
            raise FerryError(f"{path} not found: install {package}")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    if proc.returncode != 0:
        raise FerryError(f"mount namespaces unavailable: {first_line(proc.stderr)}")
