"""The lab's network: a bridge in the root namespace, one namespace per host
joined to it by a veth pair, and link shaping with tc.

Only connected routes exist: no default route, no NAT, no forwarding, so
lab traffic cannot leave the machine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time

from ..errors import FerryError

# A ULA /48 ("ferry" in ASCII); each lab takes one /64 in it.
ULA_PREFIX = "fd66:6572:7279"
IPV4_PREFIX = "10.213"
HOST_OFFSET = 10
MAX_HOSTS = 200
COMMAND_TIMEOUT = 30

RATE_RE = re.compile(r"^\d+(\.\d+)?([kmgt]i?)?(bit|bps)$", re.IGNORECASE)
DELAY_RE = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        package = "iproute2" if argv[0] in ("ip", "tc") else "it"
        raise FerryError(f"{argv[0]} not found: install {package}") from None
    except subprocess.TimeoutExpired:
        raise FerryError(f"{' '.join(argv)} did not finish in {COMMAND_TIMEOUT} s") from None
    if check and proc.returncode != 0:
        raise FerryError(f"{' '.join(argv)}: {first_line(proc.stderr)}")
    return proc


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed"


def lab_id(directory: str) -> str:
    return hashlib.sha1(directory.encode()).hexdigest()[:6]


def names(ident: str) -> dict:
    # Interface names are limited to 15 characters: "fl" + 6 + "h200" fits.
    return {
        "bridge": f"fl{ident}br",
        "link_prefix": f"fl{ident}",
        "ns_prefix": f"ferry-{ident}-",
    }


def host_names(ident: str, index: int) -> dict:
    return {"name": f"h{index}", "ns": f"ferry-{ident}-h{index}", "veth": f"fl{ident}h{index}"}


# --- choosing a subnet -------------------------------------------------------


def used_networks() -> list:
    """Every network configured in the root namespace and in every named namespace."""
    nets = []
    sources = [["ip", "-j", "addr", "show"], ["ip", "-j", "route", "show", "table", "all"],
               ["ip", "-j", "-6", "route", "show", "table", "all"]]
    for ns in list_netns():
        sources.append(["ip", "-n", ns, "-j", "addr", "show"])
    for argv in sources:
        proc = run(argv, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            continue
        nets.extend(networks_in(json.loads(proc.stdout)))
    return nets


def networks_in(entries: list) -> list:
    nets = []
    for entry in entries:
        for info in entry.get("addr_info", []):
            if info.get("local") and info.get("prefixlen") is not None:
                nets.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
        dst = entry.get("dst")
        if dst and dst not in ("default", "unreachable"):
            try:
                nets.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
    return nets


def pick_subnet(ident: str) -> tuple[int, ipaddress.IPv4Network, ipaddress.IPv6Network]:
    used = used_networks()
    start = int(ident, 16) % 254
    for step in range(254):
        index = (start + step) % 254 + 1
        net4 = ipaddress.ip_network(f"{IPV4_PREFIX}.{index}.0/24")
        net6 = ipaddress.ip_network(f"{ULA_PREFIX}:{index}::/64")
        if not any(net.version == 4 and net.overlaps(net4) for net in used) and \
                not any(net.version == 6 and net.overlaps(net6) for net in used):
            return index, net4, net6
    raise FerryError(f"no free subnet left in {IPV4_PREFIX}.0.0/16 for another lab")


def root_addresses(net4, net6) -> tuple[str, str]:
    return str(net4.network_address + 1), str(net6.network_address + 1)


def host_addresses(net4, net6, index: int) -> tuple[str, str]:
    # IPv6 host part spelled with the same digits as the IPv4 one (h1: .11 and ::11).
    number = index + HOST_OFFSET
    return str(net4.network_address + number), str(ipaddress.ip_address(f"{net6.network_address}{number}"))


# --- creating and removing ---------------------------------------------------


def list_netns() -> list[str]:
    proc = run(["ip", "-j", "netns", "list"], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(proc.stdout)]


def list_links(prefix: str) -> list[str]:
    proc = run(["ip", "-j", "link", "show"], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return [entry["ifname"] for entry in json.loads(proc.stdout) if entry["ifname"].startswith(prefix)]


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def create_bridge(bridge: str, addr4: str, addr6: str, net4, net6) -> None:
    run(["ip", "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    write_sysctl(f"/proc/sys/net/ipv6/conf/{bridge}/accept_ra", "0")
    run(["ip", "addr", "add", f"{addr4}/{net4.prefixlen}", "dev", bridge])
    run(["ip", "addr", "add", f"{addr6}/{net6.prefixlen}", "dev", bridge, "nodad"])
    run(["ip", "link", "set", bridge, "up"])


def write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except OSError:
        pass


def create_host(host: dict, bridge: str, net4, net6) -> None:
    ns, veth = host["ns"], host["veth"]
    proc = run(["ip", "netns", "add", ns], check=False)
    if proc.returncode != 0:
        raise FerryError(f"network namespaces unavailable: ip netns add {ns}: {first_line(proc.stderr)}")
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    # nodad: the address is usable at once, and again right after a link comes back up.
    run(["ip", "-n", ns, "addr", "add", f"{host['ipv4']}/{net4.prefixlen}", "dev", "eth0"])
    run(["ip", "-n", ns, "addr", "add", f"{host['ipv6']}/{net6.prefixlen}", "dev", "eth0", "nodad"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])


def netns_pids(ns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", ns], check=False)
    if proc.returncode != 0:
        return []
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def kill_netns_processes(ns: str, grace: float = 1.0, limit: float = 5.0) -> list[int]:
    """Stop every process in the namespace: TERM, then KILL after ``grace`` seconds."""
    killed: set[int] = set()
    deadline = time.monotonic() + limit
    sig = signal.SIGTERM
    term_sent_at = None
    while True:
        pids = netns_pids(ns)
        if not pids:
            return sorted(killed)
        if time.monotonic() > deadline:
            raise FerryError(f"processes {pids} in namespace {ns} did not exit")
        if term_sent_at is not None and time.monotonic() - term_sent_at > grace:
            sig = signal.SIGKILL
        for pid in pids:
            try:
                os.kill(pid, sig)
                killed.add(pid)
            except ProcessLookupError:
                pass
        term_sent_at = term_sent_at or time.monotonic()
        reap(pids)
        time.sleep(0.05)


def reap(pids: list[int]) -> None:
    # Processes this Python process started (e.g. via Lab.exec with Popen) would stay zombies.
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def delete_link(name: str) -> bool:
    return run(["ip", "link", "del", name], check=False).returncode == 0


def delete_netns(ns: str) -> bool:
    return run(["ip", "netns", "del", ns], check=False).returncode == 0


# --- link state and shaping --------------------------------------------------


def set_link(veth: str, up: bool) -> None:
    run(["ip", "link", "set", veth, "up" if up else "down"])


def link_is_up(veth: str) -> bool | None:
    proc = run(["ip", "-j", "link", "show", "dev", veth], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return "UP" in json.loads(proc.stdout)[0].get("flags", [])


def check_rate(rate: str) -> str:
    if not RATE_RE.match(rate):
        raise FerryError(f"rate {rate!r} is not a tc rate like 100mbit or 512kbit")
    return rate


def check_delay(delay: str) -> str:
    if not DELAY_RE.match(delay):
        raise FerryError(f"delay {delay!r} is not a duration like 20ms")
    return delay


def rate_bits(rate: str) -> float:
    match = re.match(r"^(\d+(?:\.\d+)?)([kmgt]i?)?(bit|bps)$", rate, re.IGNORECASE)
    number, unit, kind = float(match.group(1)), (match.group(2) or "").lower(), match.group(3).lower()
    base = 1024 if unit.endswith("i") else 1000
    scale = {"": 1, "k": base, "m": base ** 2, "g": base ** 3, "t": base ** 4}[unit.rstrip("i")]
    return number * scale * (8 if kind == "bps" else 1)


def shaping_qdisc(rate: str | None, delay: str | None) -> list[str]:
    if delay:
        args = ["netem", "limit", "10000", "delay", delay]
        return args + (["rate", rate] if rate else [])
    # tbf needs a bucket of at least rate/HZ bytes; 20 ms worth is enough for any HZ >= 50.
    burst = max(32 * 1024, int(rate_bits(rate) / 8 / 50))
    return ["tbf", "rate", rate, "burst", str(burst), "latency", "200ms"]


def shape(ns: str, veth: str, rate: str | None, delay: str | None) -> None:
    """Shape both directions of the host's link, like a real link of that rate and delay."""
    qdisc = shaping_qdisc(rate, delay)
    for argv in (["tc", "qdisc", "replace", "dev", veth, "root", *qdisc],
                 ["tc", "-n", ns, "qdisc", "replace", "dev", "eth0", "root", *qdisc]):
        proc = run(argv, check=False)
        if proc.returncode == 0:
            continue
        if "kind is unknown" in proc.stderr:
            raise FerryError(f"this kernel has no {qdisc[0]} qdisc (sch_{qdisc[0]}): "
                             + ("--delay is unavailable here, --rate alone works" if delay else "cannot shape"))
        raise FerryError(f"{' '.join(argv)}: {first_line(proc.stderr)}")


def clear_shaping(ns: str, veth: str) -> None:
    for argv in (["tc", "qdisc", "del", "dev", veth, "root"],
                 ["tc", "-n", ns, "qdisc", "del", "dev", "eth0", "root"]):
        proc = run(argv, check=False)
        if proc.returncode != 0 and "No such file" not in proc.stderr and \
                "Cannot delete qdisc with handle of zero" not in proc.stderr:
            raise FerryError(f"{' '.join(argv)}: {first_line(proc.stderr)}")
