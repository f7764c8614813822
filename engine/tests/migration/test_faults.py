"""Whatever fails during a migration, exactly one copy of the VM runs afterwards.

Link cuts come from a relay that knows the protocol's frames (so the cut
lands exactly at the first pass, a round, the final copy or the handover);
process kills and refusals are the real thing.
"""

import signal

import pytest

from ferry.migration.protocol import Kind
from support.labhost import PORT, exactly_one_copy, migrate, receive, start_migration, start_vm, wait_progress

pytestmark = [pytest.mark.kvm, pytest.mark.lab]
BUSY = "fill=60 rate=max hb=100"


CUTS = {
    "first pass": (("out", Kind.MEM, 8 * 2**20), "h1"),
    "mid-round": (("out", Kind.ROUND, 0), "h1"),
    "final copy": (("out", Kind.SECTION, 0), "h1"),
    "before PREPARED reaches the source": (("back", Kind.PREPARED, 0), "h1"),
    "COMMIT lost": (("out", Kind.COMMIT, 0), "h2"),
    "DONE lost": (("back", Kind.DONE, 0), "h2"),
}


@pytest.mark.parametrize("where", sorted(CUTS))
def test_link_cut(hosts, tmp_path, token, relay, where):
    h1, h2 = hosts
    cut, survivor = CUTS[where]
    start_vm(h1, tmp_path, memory=128, cmdline=BUSY)
    receive(h2, token)
    proxy, address = relay(cut)
    done = migrate(h1, address, token, "m1", "--max-downtime", "5", expect_ok=False)
    assert proxy.cuts == 1, "the relay never reached its cut point"
    if survivor == "h1":
        assert done.returncode != 0 and "Traceback" not in done.stderr
        exactly_one_copy(h1, h2)
    else:
        assert done.returncode == 0, done.stderr
        exactly_one_copy(h2, h1)


@pytest.mark.parametrize("victim", ["receiver", "sender"])
def test_killed_mid_transfer(hosts, tmp_path, token, lab, victim):
    h1, h2 = hosts
    start_vm(h1, tmp_path, memory=128, cmdline=BUSY)
    lab.link(h2.name, rate="100mbit")
    arrival = receive(h2, token)
    process = start_migration(h1, f"{h2.ipv4}:{PORT}", token)
    wait_progress(process, "first-pass")
    if victim == "receiver":
        h2.lab.exec(h2.name, ["kill", "-9", str(arrival["pid"])])
        assert process.wait(60) != 0
    else:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    exactly_one_copy(h1, h2)
    assert h1.ok("status", "m1")["state"] == "running"


def test_wrong_token_is_refused_and_the_receiver_keeps_waiting(hosts, tmp_path, token):
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    receive(h2, token)
    wrong = tmp_path / "wrong"
    wrong.write_text("x" * 64)
    wrong.chmod(0o600)
    refused = migrate(h1, f"{h2.ipv4}:{PORT}", wrong, expect_ok=False)
    assert refused.returncode != 0 and "wrong token" in refused.stderr
    assert h1.ok("status", "m1")["state"] == "running"
    assert "refused a connection" in h2.sh("cat /var/lib/ferry/receive-m1.log")
    migrate(h1, f"{h2.ipv4}:{PORT}", token)
    exactly_one_copy(h2, h1)


def test_destination_without_memory_refuses_and_waits_on(hosts, tmp_path, token):
    h1, h2 = hosts
    # More than the machine has: the source only runs it overcommitted, the destination refuses.
    start_vm(h1, tmp_path, memory=30 * 1024, cmdline="fill=1 rate=0 hb=200", start_args=("--overcommit",))
    arrival = receive(h2, token)
    refused = migrate(h1, f"{h2.ipv4}:{PORT}", token, expect_ok=False)
    assert refused.returncode != 0 and "out of memory" in refused.stderr
    assert h1.ok("status", "m1")["state"] == "running"
    assert "m1" not in h2.vm_names()
    assert list(h2.vm_processes()) == [arrival["pid"]], "the receiver should wait on for another source"
    assert h2.sh("ls /var/lib/ferry/incoming/m1").split() == ["vm.lock"], "the refused offer left files staged"


def test_timeout_gives_up_cleanly(hosts, tmp_path, token, lab):
    h1, h2 = hosts
    start_vm(h1, tmp_path, memory=128, cmdline=BUSY)
    lab.link(h2.name, rate="50mbit")
    receive(h2, token)
    done = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--timeout", "1", expect_ok=False)
    assert done.returncode != 0 and "did not converge within 1 s" in done.stderr
    exactly_one_copy(h1, h2)


def test_sender_killed_during_handover_is_resolved_later(hosts, tmp_path, token, relay):
    import threading
    h1, h2 = hosts
    start_vm(h1, tmp_path)
    receive(h2, token)
    hold = threading.Event()
    proxy, address = relay(("out", Kind.COMMIT, 0), hold)
    process = start_migration(h1, address, token)
    assert proxy.reached.wait(60), "the migration never reached its handover"
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    hold.set()
    status = h1.ok("status", "m1")
    assert status["state"] == "paused" and status["migration"]["phase"] in ("handover", "in-doubt")
    assert "m1" not in h2.vm_names(), "the destination must not run it before COMMIT"
    settled = h1.ok("migrate", "m1", "--to", address, "--token-file", str(token), "--resolve")
    assert settled["outcome"] == "committed"
    exactly_one_copy(h2, h1)
