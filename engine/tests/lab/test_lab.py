"""The lab on real namespaces, bridges and sshd: reachability, private host
directories, processes that outlive SSH, link control, clean teardown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ferry.errors import FerryError
from ferry.lab import Lab

pytestmark = pytest.mark.lab

VENV_BIN = os.path.dirname(sys.executable)
SSH_TIMEOUT = 20


def ferry(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # The full ``ferry`` command when every feature module imports, else the lab commands alone.
    module = "ferry.cli"
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"ferry {' '.join(args)} failed: {proc.stderr}")
    return proc


def ssh(lab_dir, host: str, command: str, timeout: float = SSH_TIMEOUT, connect_timeout: int = 2,
        **kwargs) -> subprocess.CompletedProcess:
    argv = ["ssh", "-F", os.path.join(lab_dir, "ssh_config"), "-o", f"ConnectTimeout={connect_timeout}",
            host, command]
    return subprocess.run(argv, capture_output=True, timeout=timeout, **kwargs)


def reaches(lab: Lab, source: str, address: str) -> bool:
    """Whether ``source`` reaches ``address`` from inside its namespace (ping, else a TCP connect)."""
    if shutil.which("ping"):
        argv = ["ping", "-c", "1", "-W", "1", address]
    else:
        argv = ["python3", "-c", f"import socket; socket.create_connection(({address!r}, 22), timeout=1)"]
    return lab.exec(source, argv, capture_output=True, timeout=10).returncode == 0


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate, limit: float = 5.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def leftovers(lab_id: str, lab_dir: str) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if lab_id in line]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f"fl{lab_id}" in line]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found += [f"process {line.strip()}" for line in ps.splitlines() if lab_dir in line or lab_id in line]
    with open("/proc/mounts") as handle:
        found += [f"mount {line.split()[1]}" for line in handle if lab_dir in line or lab_id in line]
    return found


@pytest.fixture(scope="module")
def lab(lab_ready, tmp_path_factory):
    lab_dir = str(tmp_path_factory.mktemp("lab") / "lab")
    started = time.monotonic()
    ferry("lab", "up", "--hosts", "2", "--dir", lab_dir)
    print(f"lab up in {time.monotonic() - started:.2f} s")
    lab = Lab(lab_dir)
    yield lab
    lab.down()


def addresses(lab: Lab, name: str) -> dict:
    return next(host for host in lab.hosts if host["name"] == name)


def test_up_writes_inventory_ssh_config_and_state(lab):
    state = json.loads(open(os.path.join(lab.dir, "lab.json")).read())
    assert [h["name"] for h in state["hosts"]] == ["h1", "h2"]
    assert state["subnet_ipv4"].startswith("10.213.") and state["subnet_ipv6"].startswith("fd")
    import yaml

    inventory = yaml.safe_load(open(os.path.join(lab.dir, "inventory.yml")))
    hosts = inventory["all"]["children"]["hypervisors"]["hosts"]
    assert hosts["h1"]["ansible_host"] == addresses(lab, "h1")["ipv4"]
    assert hosts["h2"]["ferry_lab_ipv6"] == addresses(lab, "h2")["ipv6"]
    assert hosts["h1"]["ansible_user"] == "root"
    assert "UserKnownHostsFile=" in hosts["h1"]["ansible_ssh_common_args"]
    assert hosts["h1"]["ansible_python_interpreter"] == "/usr/bin/python3"


def test_ssh_works_and_h1_reaches_h2_over_ipv4_and_ipv6(lab):
    assert ssh(lab.dir, "h1", "true").returncode == 0
    assert ssh(lab.dir, "h2-6", "true").returncode == 0
    h2 = addresses(lab, "h2")
    assert reaches(lab, "h1", h2["ipv4"])
    assert reaches(lab, "h1", h2["ipv6"])


def test_namespaces_have_no_route_off_the_lab(lab):
    for family in ("-4", "-6"):
        routes = lab.exec("h1", ["ip", family, "route", "show", "table", "all"],
                          capture_output=True, text=True, timeout=10).stdout
        assert "default" not in routes


def test_host_directories_are_private(lab):
    marker = f"marker-{os.getpid()}"
    assert ssh(lab.dir, "h1", f"echo on-h1 > /var/lib/ferry/{marker}").returncode == 0
    assert lab.exec("h1", ["cat", f"/var/lib/ferry/{marker}"], capture_output=True,
                    text=True, timeout=10).stdout == "on-h1\n"
    assert lab.exec("h2", ["test", "-e", f"/var/lib/ferry/{marker}"], timeout=10).returncode != 0
    assert not os.path.exists(f"/var/lib/ferry/{marker}")
    assert os.path.exists(os.path.join(lab.dir, "hosts", "h1", "var-lib-ferry", marker))
    mounts = lab.exec("h1", ["cat", "/proc/self/mountinfo"], capture_output=True, text=True, timeout=10).stdout
    mounted = {line.split()[4] for line in mounts.splitlines()}
    assert {"/var/lib/ferry", "/etc/ferry", "/run/ferry", "/opt/ferry", "/etc/cron.d"} <= mounted
    assert lab.exec("h1", ["test", "-d", "/run/sshd"], timeout=10).returncode == 0


def test_process_started_over_ssh_outlives_the_session_inside_h1(lab):
    out = ssh(lab.dir, "h1", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!", text=True)
    assert out.returncode == 0
    pid = int(out.stdout.strip())
    try:
        time.sleep(0.2)
        assert os.path.exists(f"/proc/{pid}")
        h1 = addresses(lab, "h1")
        assert ns_inode(f"/proc/{pid}/ns/net") == ns_inode(f"/run/netns/{h1['ns']}")
        sshd_pid = json.load(open(os.path.join(lab.dir, "lab.json")))["hosts"][0]["sshd_pid"]
        assert ns_inode(f"/proc/{pid}/ns/mnt") == ns_inode(f"/proc/{sshd_pid}/ns/mnt")
        assert ns_inode(f"/proc/{pid}/ns/mnt") != ns_inode("/proc/self/ns/mnt")
        status = lab.status()
        assert pid in [p["pid"] for p in status["hosts"][0]["processes"]]
        assert all(h["sshd_alive"] for h in status["hosts"])
    finally:
        os.kill(pid, 9)


def test_link_down_cuts_h2_and_up_restores_it(lab):
    h2 = addresses(lab, "h2")
    ferry("lab", "link", "h2", "--down", "--dir", lab.dir)
    try:
        assert ssh(lab.dir, "h2", "true", timeout=10, connect_timeout=1).returncode != 0
        assert not reaches(lab, "h1", h2["ipv4"])
        assert lab.status()["hosts"][1]["link_up"] is False
    finally:
        ferry("lab", "link", "h2", "--up", "--dir", lab.dir)
    assert wait_for(lambda: ssh(lab.dir, "h2", "true", timeout=10).returncode == 0)
    assert reaches(lab, "h1", h2["ipv6"])


def timed_upload(lab_dir, host: str, payload: bytes) -> float:
    started = time.monotonic()
    proc = ssh(lab_dir, host, "cat > /dev/null", timeout=30, input=payload)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - started


def test_rate_limit_slows_a_transfer(lab):
    payload = os.urandom(2 * 1024 * 1024)
    baseline = timed_upload(lab.dir, "h2", payload)
    ferry("lab", "link", "h2", "--rate", "10mbit", "--dir", lab.dir)
    try:
        shaped = timed_upload(lab.dir, "h2", payload)
        # 2 MiB at 10 Mbit/s is at least 1.68 s on the wire.
        print(f"2 MiB over ssh: {baseline:.2f} s unshaped, {shaped:.2f} s at 10mbit")
        assert shaped > 1.2
        assert shaped > baseline + 0.8
        assert lab.status()["hosts"][1]["rate"] == "10mbit"
        ferry("lab", "link", "h2", "--rate", "1gbit", "--dir", lab.dir)
        assert timed_upload(lab.dir, "h2", payload) < shaped
    finally:
        ferry("lab", "link", "h2", "--clear", "--dir", lab.dir)
    assert lab.status()["hosts"][1]["rate"] is None


def test_delay_adds_latency_or_says_netem_is_missing(lab):
    proc = ferry("lab", "link", "h2", "--delay", "30ms", "--dir", lab.dir, check=False)
    if proc.returncode != 0:
        assert "netem" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        pytest.skip("this kernel has no netem qdisc")
    try:
        h2 = addresses(lab, "h2")
        out = lab.exec("h1", ["ping", "-c", "1", "-W", "2", h2["ipv4"]], capture_output=True,
                       text=True, timeout=10).stdout
        rtt = float(out.split("time=")[1].split()[0])
        assert rtt >= 25
    finally:
        ferry("lab", "link", "h2", "--clear", "--dir", lab.dir)


def test_link_rejects_bad_arguments(lab):
    assert "exactly one" in ferry("lab", "link", "h2", "--dir", lab.dir, check=False).stderr
    assert "exactly one" in ferry("lab", "link", "h2", "--down", "--up", "--dir", lab.dir, check=False).stderr
    assert "not a tc rate" in ferry("lab", "link", "h2", "--rate", "fast", "--dir", lab.dir, check=False).stderr
    assert "no host" in ferry("lab", "link", "h9", "--down", "--dir", lab.dir, check=False).stderr


def test_up_twice_in_one_directory_is_refused(lab):
    proc = ferry("lab", "up", "--dir", lab.dir, check=False)
    assert proc.returncode == 1 and "already up" in proc.stderr


def test_status_json(lab):
    status = json.loads(ferry("lab", "status", "--dir", lab.dir, "--json").stdout)
    assert [h["name"] for h in status["hosts"]] == ["h1", "h2"]
    assert all(h["sshd_alive"] and h["link_up"] for h in status["hosts"])


def test_ansible_ping(lab):
    ansible = os.path.join(VENV_BIN, "ansible")
    if not os.path.exists(ansible):
        pytest.skip("ansible is not installed next to this Python")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    proc = subprocess.run([ansible, "-i", os.path.join(lab.dir, "inventory.yml"), "hypervisors", "-m", "ping"],
                          capture_output=True, text=True, timeout=120, cwd=lab.dir, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 2


def test_second_lab_coexists_with_its_own_subnet(lab, tmp_path):
    other = Lab(str(tmp_path / "other"))
    try:
        result = other.up(1)
        first = lab.status()
        assert result["subnet_ipv4"] != first["subnet_ipv4"]
        assert result["subnet_ipv6"] != first["subnet_ipv6"]
        assert result["bridge"] != first["bridge"]
        assert ssh(other.dir, "h1", "true").returncode == 0
        assert ssh(lab.dir, "h1", "true").returncode == 0
        # Separate bridges: the labs do not see each other.
        assert not reaches(other, "h1", addresses(lab, "h1")["ipv4"])
    finally:
        other.down()
    assert leftovers(other.id, other.dir) == []


def test_down_kills_everything_and_twice_is_fine(lab_ready, tmp_path):
    lab_dir = str(tmp_path / "gone")
    ferry("lab", "up", "--hosts", "2", "--dir", lab_dir)
    lab = Lab(lab_dir)
    vm = ssh(lab_dir, "h2", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!", text=True)
    pid = int(vm.stdout.strip())
    ferry("lab", "link", "h1", "--rate", "50mbit", "--dir", lab_dir)
    started = time.monotonic()
    ferry("lab", "down", "--dir", lab_dir)
    print(f"lab down in {time.monotonic() - started:.2f} s")
    assert not running(pid)
    assert leftovers(lab.id, lab_dir) == []
    assert not os.path.exists(lab_dir)
    again = ferry("lab", "down", "--dir", lab_dir)
    assert "nothing to do" in again.stdout


def test_down_cleans_a_half_made_lab(lab_ready, tmp_path):
    lab = Lab(str(tmp_path / "half"))
    lab.up(1)
    # As if up had been killed before writing its state, or the state was lost.
    os.unlink(os.path.join(lab.dir, "lab.json"))
    subprocess.run(["ip", "netns", "add", f"ferry-{lab.id}-h7"], check=True)
    result = lab.down()
    assert f"ferry-{lab.id}-h1" in result["removed_namespaces"]
    assert f"ferry-{lab.id}-h7" in result["removed_namespaces"]
    assert leftovers(lab.id, lab.dir) == []


def test_commands_on_a_missing_lab_fail_in_one_line(lab_ready, tmp_path):
    for args in (["status"], ["link", "h1", "--down"]):
        proc = ferry("lab", *args, "--dir", str(tmp_path / "none"), check=False)
        assert proc.returncode == 1
        assert proc.stderr.startswith("ferry: no lab in") and proc.stderr.count("\n") == 1
    with pytest.raises(FerryError, match="no lab"):
        Lab(str(tmp_path / "none")).status()
