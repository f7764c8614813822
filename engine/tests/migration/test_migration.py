"""Live, warm and cold migration between two lab hosts, on real KVM, over real links."""

import pytest

from support.labhost import PORT, exactly_one_copy, migrate, receive, start_vm, wait_beats

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
