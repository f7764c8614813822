"""A lab of hypervisor hosts on one machine, reached by Ansible over real SSH.

Everything a lab creates is named from a hash of its directory, so a lab
can be torn down even when its lab.json is lost or it was only half made.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

import yaml

from ..errors import FerryError
from . import net, sshd

LOCK_PATH = "/run/ferry-lab.lock"
STATE = "lab.json"
# Files and directories a lab writes in its directory (and removes on down).
LAB_FILES = ("lab.json", "inventory.yml", "ssh_config", "known_hosts",
             "id_ed25519", "id_ed25519.pub", "authorized_keys")
LAB_DIRS = ("hosts",)
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+@:,=-]+$")


class Lab:
    def __init__(self, dir: str = "lab"):
        self.dir = os.path.abspath(dir)
        self.id = net.lab_id(self.dir)
        self.names = net.names(self.id)

    # --- state -------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def load(self) -> dict | None:
        try:
            with open(self.path(STATE)) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise FerryError(f"{self.path(STATE)} is unreadable: {err}") from None

    def require(self) -> dict:
        state = self.load()
        if state is None:
            raise FerryError(f"no lab in {self.dir} (ferry lab up --dir {self.dir} creates one)")
        return state

    def save(self, state: dict) -> None:
        tmp = self.path(STATE + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, self.path(STATE))

    @property
    def hosts(self) -> list[dict]:
        state = self.load()
        if state is None:
            return []
        return [{key: host[key] for key in ("name", "ipv4", "ipv6", "ns", "veth", "root")}
                for host in state["hosts"]]

    def host(self, name: str, state: dict | None = None) -> dict:
        state = state or self.require()
        for host in state["hosts"]:
            if host["name"] == name:
                return host
        known = ", ".join(h["name"] for h in state["hosts"])
        raise FerryError(f"no host {name!r} in the lab in {self.dir} (hosts: {known})")

    # --- up ----------------------------------------------------------------

    def up(self, hosts: int = 2) -> dict:
        check_root()
        sshd.check_tools()
        if not 1 <= hosts <= net.MAX_HOSTS:
            raise FerryError(f"--hosts must be between 1 and {net.MAX_HOSTS}")
        if not SAFE_PATH.match(self.dir):
            raise FerryError(f"lab directory {self.dir!r} must not contain spaces or shell characters")
        if self.load() is not None:
            raise FerryError(f"a lab is already up in {self.dir} (ferry lab down --dir {self.dir} removes it)")
        leftovers = self.leftovers()
        if leftovers:
            raise FerryError(f"{', '.join(leftovers)} already exist for {self.dir}: "
                             f"run ferry lab down --dir {self.dir} first")
        created_dir = not os.path.isdir(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        try:
            return self.build(hosts, created_dir)
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        try:
            self.down()
        except FerryError as err:
            print(f"ferry: cleaning up the half-made lab failed too: {err}", file=sys.stderr)

    def leftovers(self) -> list[str]:
        found = [ns for ns in net.list_netns() if ns.startswith(self.names["ns_prefix"])]
        return found + net.list_links(self.names["link_prefix"])

    def build(self, count: int, created_dir: bool) -> dict:
        started = time.monotonic()
        with machine_lock():
            index, net4, net6 = net.pick_subnet(self.id)
            state = self.plan(count, created_dir, net4, net6)
            # Saved before anything exists, so down can undo a half-made lab.
            self.save(state)
            net.create_bridge(state["bridge"], state["root_ipv4"], state["root_ipv6"], net4, net6)
        for host in state["hosts"]:
            net.create_host(host, state["bridge"], net4, net6)
        client_key = sshd.generate_key(self.path("id_ed25519"), f"ferry-lab-{self.id}")
        write_file(self.path("authorized_keys"), client_key + "\n", 0o600)
        host_keys = self.start_hosts(state)
        self.write_known_hosts(state, host_keys)
        self.write_ssh_config(state)
        self.write_inventory(state)
        state["state"] = "up"
        state["seconds_to_up"] = round(time.monotonic() - started, 3)
        self.save(state)
        return self.summary(state)

    def plan(self, count: int, created_dir: bool, net4, net6) -> dict:
        root4, root6 = net.root_addresses(net4, net6)
        hosts = []
        for index in range(1, count + 1):
            host = net.host_names(self.id, index)
            host["ipv4"], host["ipv6"] = net.host_addresses(net4, net6, index)
            host["root"] = self.path("hosts", host["name"])
            host["sshd_pidfile"] = os.path.join(host["root"], "sshd.pid")
            host["sshd_pid"] = None
            host["link"] = {"up": True, "rate": None, "delay": None}
            hosts.append(host)
        return {
            "dir": self.dir, "id": self.id, "state": "creating", "created_dir": created_dir,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "bridge": self.names["bridge"], "subnet_ipv4": str(net4), "subnet_ipv6": str(net6),
            "root_ipv4": root4, "root_ipv6": root6,
            "ssh_key": self.path("id_ed25519"), "ssh_config": self.path("ssh_config"),
            "known_hosts": self.path("known_hosts"), "inventory": self.path("inventory.yml"),
            "hosts": hosts,
        }

    def start_hosts(self, state: dict) -> dict[str, str]:
        host_keys, pending = {}, []
        for host in state["hosts"]:
            os.makedirs(host["root"], exist_ok=True)
            dirs = sshd.host_dirs(host["root"])
            key = os.path.join(host["root"], "ssh_host_ed25519_key")
            host_keys[host["name"]] = sshd.generate_key(key, f"ferry-lab-{self.id}-{host['name']}")
            config = os.path.join(host["root"], "sshd_config")
            sshd.write_config(config, host, key, self.path("authorized_keys"))
            log = os.path.join(host["root"], "sshd.log")
            sshd.launch(host, dirs, config, log)
            pending.append((host, log))
        for host, log in pending:
            host["sshd_pid"] = sshd.wait_ready(host, log)
        for host in state["hosts"]:
            host["cron_pid"] = sshd.launch_cron(self.enter(host), host["root"])
        return host_keys

    def write_known_hosts(self, state: dict, host_keys: dict[str, str]) -> None:
        lines = []
        for host in state["hosts"]:
            key = " ".join(host_keys[host["name"]].split()[:2])
            lines.append(f"{host['ipv4']},{host['ipv6']} {key}")
        write_file(self.path("known_hosts"), "\n".join(lines) + "\n", 0o644)

    def write_ssh_config(self, state: dict) -> None:
        lines = [f"# Lab in {self.dir}: ssh -F {self.path('ssh_config')} h1 (h1-6 over IPv6)"]
        for host in state["hosts"]:
            lines += [f"Host {host['name']}", f"    HostName {host['ipv4']}",
                      f"Host {host['name']}-6", f"    HostName {host['ipv6']}"]
        lines += [
            "Host *",
            "    User root",
            f"    IdentityFile {self.path('id_ed25519')}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {self.path('known_hosts')}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking accept-new",
            "    BatchMode yes",
            "    ConnectTimeout 5",
            "    LogLevel ERROR",
        ]
        write_file(self.path("ssh_config"), "\n".join(lines) + "\n", 0o644)

    def write_inventory(self, state: dict) -> None:
        common = " ".join([
            f"-o UserKnownHostsFile={shlex.quote(self.path('known_hosts'))}",
            "-o StrictHostKeyChecking=accept-new",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o IdentitiesOnly=yes",
        ])
        hosts = {}
        for host in state["hosts"]:
            hosts[host["name"]] = {
                "ansible_host": host["ipv4"],
                "ferry_lab_ipv4": host["ipv4"],
                "ferry_lab_ipv6": host["ipv6"],
                "ansible_user": "root",
                "ansible_ssh_private_key_file": self.path("id_ed25519"),
                "ansible_ssh_common_args": common,
                "ansible_python_interpreter": "/usr/bin/python3",
            }
        inventory = {"all": {"children": {"hypervisors": {
            "hosts": hosts,
            "vars": {"ferry_lab_dir": self.dir, "ferry_lab_subnet_ipv4": state["subnet_ipv4"],
                     "ferry_lab_subnet_ipv6": state["subnet_ipv6"]},
        }}}}
        text = f"# Lab in {self.dir} (ferry lab up); removed by ferry lab down\n"
        write_file(self.path("inventory.yml"), text + yaml.safe_dump(inventory, sort_keys=False), 0o644)

    def summary(self, state: dict) -> dict:
        result = {key: state[key] for key in ("dir", "id", "state", "bridge", "subnet_ipv4", "subnet_ipv6",
                                                "root_ipv4", "root_ipv6", "inventory", "ssh_config",
                                                "ssh_key", "known_hosts")}
        result["hosts"] = [{key: host[key] for key in ("name", "ns", "ipv4", "ipv6", "sshd_pid")}
                           for host in state["hosts"]]
        result["seconds_to_up"] = state.get("seconds_to_up")
        result["warnings"] = [] if os.path.exists("/dev/kvm") else [
            "/dev/kvm is missing: the hosts work for Ansible but cannot run VMs"]
        result["usage"] = [
            f"ssh -F {state['ssh_config']} h1",
            f"ansible -i {state['inventory']} hypervisors -m ping",
            f"ferry lab status --dir {self.dir}",
            f"ferry lab down --dir {self.dir}",
        ]
        return result

    # --- down --------------------------------------------------------------

    def down(self) -> dict:
        check_root()
        state = self.load() or {}
        namespaces = [h["ns"] for h in state.get("hosts", [])]
        namespaces += [ns for ns in net.list_netns()
                       if ns.startswith(self.names["ns_prefix"]) and ns not in namespaces]
        links = [h["veth"] for h in state.get("hosts", [])] + [state.get("bridge") or self.names["bridge"]]
        links += [name for name in net.list_links(self.names["link_prefix"]) if name not in links]
        killed = []
        for ns in namespaces:
            if os.path.exists(f"/run/netns/{ns}"):
                killed += net.kill_netns_processes(ns)
        removed_links = [name for name in links if net.link_exists(name) and net.delete_link(name)]
        removed_ns = [ns for ns in namespaces if os.path.exists(f"/run/netns/{ns}") and net.delete_netns(ns)]
        removed_files = self.remove_files(state.get("created_dir", False))
        found = bool(state or killed or removed_links or removed_ns or removed_files)
        return {
            "dir": self.dir, "was_up": found,
            "message": f"lab in {self.dir} removed" if found else f"no lab in {self.dir}; nothing to do",
            "killed_pids": sorted(killed), "removed_links": removed_links,
            "removed_namespaces": removed_ns, "removed_files": removed_files,
        }

    def remove_files(self, created_dir: bool) -> list[str]:
        removed = []
        for name in LAB_DIRS:
            if os.path.isdir(self.path(name)):
                shutil.rmtree(self.path(name), ignore_errors=True)
                removed.append(self.path(name))
        # lab.json last: until then a later down can still find what is left.
        for name in LAB_FILES[1:] + ("lab.json.tmp", LAB_FILES[0]):
            try:
                os.unlink(self.path(name))
                removed.append(self.path(name))
            except FileNotFoundError:
                pass
        if created_dir:
            try:
                os.rmdir(self.dir)
            except OSError:
                pass
        return removed

    # --- status ------------------------------------------------------------

    def status(self) -> dict:
        state = self.require()
        hosts = [self.host_status(host) for host in state["hosts"]]
        return {
            "dir": self.dir, "id": self.id, "state": state["state"], "bridge": state["bridge"],
            "bridge_present": net.link_exists(state["bridge"]),
            "subnet_ipv4": state["subnet_ipv4"], "subnet_ipv6": state["subnet_ipv6"],
            "root_ipv4": state["root_ipv4"], "root_ipv6": state["root_ipv6"],
            "inventory": state["inventory"], "ssh_config": state["ssh_config"],
            "hosts": hosts,
        }

    def host_status(self, host: dict) -> dict:
        ns_present = os.path.exists(f"/run/netns/{host['ns']}")
        pids = net.netns_pids(host["ns"]) if ns_present else []
        daemons = (host["sshd_pid"], host.get("cron_pid"))
        processes = [{"pid": pid, "cmd": cmdline(pid)} for pid in pids if pid not in daemons]
        return {
            "name": host["name"], "ns": host["ns"], "veth": host["veth"],
            "ipv4": host["ipv4"], "ipv6": host["ipv6"], "namespace": ns_present,
            "sshd_pid": host["sshd_pid"], "sshd_alive": sshd.alive(host["sshd_pid"], host["ns"]),
            "cron_pid": host.get("cron_pid"), "cron_alive": host.get("cron_pid") in pids,
            "link_up": net.link_is_up(host["veth"]),
            "rate": host["link"]["rate"], "delay": host["link"]["delay"],
            "processes": [p for p in processes if p["cmd"]],
        }

    # --- link --------------------------------------------------------------

    def link(self, host: str, rate: str | None = None, delay: str | None = None,
             down: bool = False, up: bool = False, clear: bool = False) -> dict:
        check_root()
        actions = [bool(rate or delay), down, up, clear]
        if sum(actions) != 1:
            raise FerryError("give exactly one of --rate/--delay, --down, --up, --clear")
        state = self.require()
        entry = self.host(host, state)
        if down or up:
            net.set_link(entry["veth"], up)
            entry["link"]["up"] = up
        elif clear:
            net.clear_shaping(entry["ns"], entry["veth"])
            entry["link"].update(rate=None, delay=None)
        else:
            rate = net.check_rate(rate) if rate else None
            delay = net.check_delay(delay) if delay else None
            net.shape(entry["ns"], entry["veth"], rate, delay)
            entry["link"].update(rate=rate, delay=delay)
        self.save(state)
        return {"host": entry["name"], "veth": entry["veth"], **entry["link"]}

    # --- running commands on a host -----------------------------------------

    def command(self, host: str, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` inside the host's network and mount namespaces."""
        entry = self.host(host)
        if not sshd.alive(entry["sshd_pid"], entry["ns"]):
            raise FerryError(f"sshd of {host} is not running, so its mount namespace is gone "
                             f"(ferry lab down and up again)")
        return [*self.enter(entry), *argv]

    @staticmethod
    def enter(entry: dict) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{entry['ns']}", f"--mount=/proc/{entry['sshd_pid']}/ns/mnt", "--"]

    def exec(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(host, argv), **kwargs)

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(host, argv), **kwargs)


def check_root() -> None:
    if os.geteuid() != 0:
        raise FerryError("ferry lab needs root (namespaces, bridges and mounts)")


@contextmanager
def machine_lock():
    """Serialise subnet choice between labs created at the same time."""
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_file(path: str, text: str, mode: int) -> None:
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
