"""Live, warm and cold migration between two lab hosts, on real KVM, over real links."""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from support.labhost import PORT, exactly_one_copy, migrate, receive, receiver_waits_on, start_vm, wait_beats

pytestmark = [pytest.mark.kvm, pytest.mark.lab]


def test_live_migration_of_a_busy_guest(hosts, tmp_path, token):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    receive(h2, token)
    report = migrate(h1, f"{h2.ipv4}:{PORT}", token)
    assert report["outcome"] == "committed" and report["mode"] == "live"
    assert report["downtime_ms"] < report["total_ms"] and report["bytes_on_wire"] > 16 * 2**20
    exactly_one_copy(h2, h1)
    assert h2.ok("status", "m1")["state"] == "running"


def test_what_a_vm_left_behind_is_listed_and_pruned(hosts, tmp_path, token):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    receive(h2, token)
    migrate(h1, f"{h2.ipv4}:{PORT}", token)
    [left] = h1.ok("migrated")
    assert left["name"] == "m1" and left["to"] == f"{h2.ipv4}:{PORT}" and left["bytes"] > 0
    assert h1.ok("migrated", "prune", "--older-than", "1") == []
    assert [entry["name"] for entry in h1.ok("migrated", "prune")] == ["m1"]
    assert h1.ok("migrated") == [] and not list((h1.state_dir / "migrated").iterdir())
    exactly_one_copy(h2, h1)


def test_two_vcpus_migrate(hosts, tmp_path, token):
    h1, h2 = hosts
    start_vm(h1, tmp_path, vcpus=2)
    receive(h2, token)
    migrate(h1, f"{h2.ipv4}:{PORT}", token)
    exactly_one_copy(h2, h1, cpus=(0, 1))


def test_over_ipv6(hosts, tmp_path, token):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    receive(h2, token, address=f"[{h2.ipv6}]:{PORT}")
    migrate(h1, f"[{h2.ipv6}]:{PORT}", token)
    exactly_one_copy(h2, h1)


@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_warm_and_cold(hosts, tmp_path, token, mode):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    if mode == "cold":
        h1.ok("poweroff", "m1")
    receive(h2, token)
    report = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--mode", mode)
    assert report["outcome"] == "committed" and report["rounds"] == []
    assert "m1" not in h1.vm_names()
    if mode == "warm":
        exactly_one_copy(h2, h1)
    else:
        assert h2.ok("status", "m1")["state"] == "stopped"
        h2.ok("start", "m1")
        wait_beats(h2, "m1", 2)


def test_ssh_transport_needs_no_open_port(hosts, tmp_path, token, lab):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    receive(h2, token, address=f"127.0.0.1:{PORT}")
    state = lab.require()
    migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--transport", "ssh", "--ssh-key", state["ssh_key"],
            "--ssh-known-hosts", state["known_hosts"])
    exactly_one_copy(h2, h1)


def ssh_config(path: Path, lab, lines: list[str]) -> Path:
    """An operator's ssh config: ``lines`` for their hosts, then the lab's key and known hosts."""
    state = lab.require()
    path.write_text("\n".join(lines + [
        "Host *", "    User root", f"    IdentityFile {state['ssh_key']}", "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {state['known_hosts']}", "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes", "    BatchMode yes"]) + "\n")
    return path


def test_ssh_transport_reaches_a_destination_only_through_the_jump_host_of_an_ssh_config(
        hosts, jump, tmp_path, token, lab):
    h1, h2 = hosts
    config = ssh_config(tmp_path / "ssh_config", lab, [
        "Host dest", f"    HostName {h2.ipv4}", "    ProxyJump bastion",
        "Host bastion", f"    HostName {jump.ipv4}"])
    start_vm(h1, tmp_path)
    receive(h2, token, address=f"127.0.0.1:{PORT}")
    h1.sh(f"ip route add prohibit {h2.ipv4}/32")  # h1 reaches h2 only by way of the jump host
    try:
        assert h1.sh(f"ssh -F {config} -o ConnectTimeout=2 {h2.ipv4} true; echo $?").strip() == "255"
        report = migrate(h1, f"dest:{PORT}", token, "m1", "--transport", "ssh", "--ssh-config", str(config))
    finally:
        h1.sh(f"ip route del prohibit {h2.ipv4}/32")
    assert report["outcome"] == "committed"
    exactly_one_copy(h2, h1)


@pytest.fixture
def agent(tmp_path, lab):
    """An ssh-agent holding the lab's key, which the engine is then never given as a file."""
    socket_path = tmp_path / "agent.sock"
    # Without -D it returns once its socket listens, printing its pid.
    started = subprocess.run(["ssh-agent", "-s", "-a", str(socket_path)], check=True, capture_output=True,
                             text=True, timeout=30)
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", started.stdout).group(1))
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", lab.require()["ssh_key"]], env=env, check=True, capture_output=True, timeout=30)
        yield env
    finally:
        os.kill(pid, signal.SIGTERM)


def test_ssh_transport_with_the_key_only_in_an_ssh_agent(hosts, tmp_path, token, lab, agent):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    arrival = receive(h2, token, address=f"127.0.0.1:{PORT}")
    flags = ("--transport", "ssh", "--ssh-known-hosts", lab.require()["known_hosts"])
    no_agent = {key: value for key, value in agent.items() if key != "SSH_AUTH_SOCK"}
    denied = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", *flags, expect_ok=False, env=no_agent)
    assert denied.returncode != 0
    assert json.loads(denied.stderr)["error"] == f"ssh to {h2.ipv4}: root@{h2.ipv4}: Permission denied (publickey)."
    assert h1.ok("status", "m1")["state"] == "running" and arrival["pid"] in h2.vm_processes()
    report = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", *flags, env=agent)
    assert report["outcome"] == "committed"
    exactly_one_copy(h2, h1)


def test_a_refused_host_key_is_one_line_and_the_vm_runs_on_at_the_source(hosts, tmp_path, token, lab):
    h1, h2 = hosts
    state = lab.require()
    start_vm(h1, tmp_path)
    arrival = receive(h2, token, address=f"127.0.0.1:{PORT}")
    wrong = tmp_path / "known_hosts"  # h2's address with another key: what a man in the middle shows
    wrong.write_text(f"{h2.ipv4} {' '.join(Path(state['ssh_key'] + '.pub').read_text().split()[:2])}\n")
    done = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--transport", "ssh", "--ssh-key", state["ssh_key"],
                   "--ssh-known-hosts", str(wrong), expect_ok=False)
    assert done.returncode != 0
    assert json.loads(done.stderr)["error"] == (f"ssh to {h2.ipv4}: Host key for {h2.ipv4} has changed and you have "
                                                "requested strict checking.; Host key verification failed.")
    receiver_waits_on(h2, arrival["pid"])
    exactly_one_copy(h1, h2)


def test_slow_link_auto_converges_a_busy_guest(hosts, tmp_path, token, lab):
    h1, h2 = hosts
    start_vm(h1, tmp_path, memory=128, cmdline="fill=60 rate=max hb=100")
    lab.link(h2.name, rate="200mbit")
    receive(h2, token)
    report = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--max-downtime", "100")
    assert report["outcome"] == "committed"
    assert report["throttle"] >= 0.2, f"no auto-converge: {report['rounds']}"
    exactly_one_copy(h2, h1)


def test_progress_on_the_source_and_a_plot_of_the_rounds(hosts, tmp_path, token, lab):
    import time
    h1, h2 = hosts
    start_vm(h1, tmp_path, memory=128, cmdline="fill=60 rate=max hb=100")
    lab.link(h2.name, rate="200mbit")
    receive(h2, token)
    plot = tmp_path / "rounds.png"
    process = h1.popen("migrate", "m1", "--to", f"{h2.ipv4}:{PORT}", "--token-file", str(token),
                       "--max-downtime", "50", "--plot", str(plot))
    seen = None
    deadline = time.monotonic() + 60
    while seen is None and process.poll() is None and time.monotonic() < deadline:
        status = h1.ok("status", "m1") if "m1" in h1.vm_names() else {}
        if status.get("migration", {}).get("bytes_sent"):
            seen = status["migration"]
        time.sleep(0.2)
    assert process.wait(120) == 0, process.stderr.read()
    assert seen and seen["phase"] == "precopy" and seen["rate"] >= 0
    assert seen["step"] in ("first-pass", "pre-copy", "stop-and-copy")
    assert {"round", "throttle", "dirty_rate", "bytes_total"} <= set(seen)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    exactly_one_copy(h2, h1)


def test_tls_transport_with_certificates(hosts, tmp_path, token):
    import subprocess
    h1, h2 = hosts
    key, cert = tmp_path / "dest.key", tmp_path / "dest.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={h2.ipv4}", "-addext", f"subjectAltName=IP:{h2.ipv4}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    start_vm(h1, tmp_path)
    receive(h2, token, extra=("--tls-cert", str(cert), "--tls-key", str(key)))
    untrusted = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--transport", "tls", expect_ok=False)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
    migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--transport", "tls", "--tls-ca", str(cert))
    exactly_one_copy(h2, h1)


def test_a_lazily_restored_vm_migrates(hosts, tmp_path, token):
    """Its RAM is a copy-on-write mapping of the snapshot file, read through /proc/PID/mem."""
    h1, h2 = hosts
    start_vm(h1, tmp_path, memory=128, cmdline="fill=30 rate=max hb=100")
    h1.ok("snapshot", "create", "m1", "--snapshot", "s", "--exit")
    h1.ok("restore", "m1", "s")
    receive(h2, token)
    migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--max-downtime", "100")
    exactly_one_copy(h2, h1)
