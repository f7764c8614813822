"""The fault matrix: whatever fails in whichever phase of a migration, exactly one copy of
the VM exists afterwards, no page of it is corrupt, and nothing is left in staging.

Phase points are frames in flight, found by a relay that knows the protocol (see
support.faultproxy): it cuts the link there, holds the frame while the test kills a
process, fills a disk or types a conflicting command, stalls it past the link timeout,
or rewrites a message. Kills, refusals and full disks are the real thing. Each row ends
with one of the shared checks of support.labhost: ``exactly_one_copy`` (one host runs
it, heartbeats continue, sequence unbroken, no CORRUPT, nothing on the other host),
``one_stopped_copy`` (the VM itself was killed or powered off), or
``receiver_waits_on`` (a receiver that never took an offer waits for the right
source, holding only its lock) followed by ``exactly_one_copy``.

Conflicting operations during precopy and the handover are in
test_busy_during_migration.py, hostile packets to the receiver in
test_receiver_safety.py; they are not repeated here.
"""

import os
import signal
import threading

import pytest

from ferry.migration import protocol
from ferry.migration.protocol import Kind
from support.labhost import (PORT, assert_busy, drop_small_disk, exactly_one_copy, fill_disk, free_disk, migrate,
                             one_stopped_copy, receive, receiver_waits_on, small_disk, start_migration, start_vm)

pytestmark = [pytest.mark.kvm, pytest.mark.lab]
BUSY = "fill=60 rate=max hb=100"
ROUNDS = ("--max-downtime", "5")  # the busy guest never fits 5 ms: pre-copy rounds happen
STALL = 7.0  # seconds a frame is held: longer than the tests' --link-timeout of 5

# Where in the protocol a fault lands: (direction, frame kind, MEM bytes that passed before).
POINTS = {
    "hello": ("out", Kind.HELLO, 0),
    "auth-ok": ("back", Kind.AUTH_OK, 0),
    "offer": ("out", Kind.OFFER, 0),
    "accept": ("back", Kind.ACCEPT, 0),
    "plan": ("out", Kind.PLAN, 0),
    "first pass": ("out", Kind.MEM, 8 * 2**20),
    "round": ("out", Kind.ROUND, 0),
    "round-ok": ("back", Kind.ROUND_OK, 0),
    "stop-and-copy": ("out", Kind.SECTION, 0),
    "prepare": ("out", Kind.PREPARE, 0),
    "prepared": ("back", Kind.PREPARED, 0),
    "commit": ("out", Kind.COMMIT, 0),
    "done": ("back", Kind.DONE, 0),
}
BEFORE_OFFER = ("hello", "auth-ok", "offer")  # the receiver has taken nothing yet: it waits on
AFTER_HANDOVER = ("commit", "done")            # the source is in doubt: the destination decides

# What remains after a row's fault.
SOURCE = "source runs it"
WAITS = "source runs it, the receiver waits on"
DESTINATION = "destination runs it"
STOPPED = "one stopped copy at the source"


def settle(hosts, outcome: str, arrival: dict) -> None:
    h1, h2 = hosts
    if outcome == DESTINATION:
        exactly_one_copy(h2, h1)
        return
    if outcome == STOPPED:
        one_stopped_copy(h1, h2)
        return
    if outcome == WAITS:
        receiver_waits_on(h2, arrival["pid"])
    exactly_one_copy(h1, h2)


def before_offer_or(point: str, outcome: str) -> str:
    return WAITS if point in BEFORE_OFFER else outcome


def begin(hosts, tmp_path, token, memory=128, cmdline=BUSY) -> dict:
    h1, h2 = hosts
    start_vm(h1, tmp_path, memory=memory, cmdline=cmdline)
    return receive(h2, token)


def held_at(relay, hosts, token, point: str, **options):
    """``ferry migrate`` started through a relay that holds the frame at ``point``; returns
    the process, the relay's address and the event that releases the frame."""
    hold = threading.Event()
    proxy, address = relay(POINTS[point], hold, **options)
    process = start_migration(hosts[0], address, token, *ROUNDS)
    assert proxy.reached.wait(60), f"the migration never reached {point}: {process.stderr.read()[-500:]}"
    return process, address, hold


def resolve(host, address, token, token_file=None):
    return host.run("--json", "migrate", "m1", "--to", address, "--token-file", str(token_file or token),
                    "--link-timeout", "5", "--resolve")


def no_traceback(process) -> None:
    error = process.stderr.read()
    assert "Traceback" not in error, error


# --- link cut, at every point ---

CUTS = {point: before_offer_or(point, DESTINATION if point in AFTER_HANDOVER else SOURCE) for point in POINTS}


@pytest.mark.parametrize("point", list(CUTS))
def test_link_cut(hosts, tmp_path, token, relay, point):
    arrival = begin(hosts, tmp_path, token)
    proxy, address = relay(POINTS[point])
    done = migrate(hosts[0], address, token, "m1", *ROUNDS, expect_ok=False)
    assert proxy.cuts == 1, "the relay never reached its cut point"
    assert "Traceback" not in done.stderr, done.stderr
    # After the handover the source asks again (the relay lets later connections through).
    assert (done.returncode == 0) == (CUTS[point] == DESTINATION), done.stderr
    settle(hosts, CUTS[point], arrival)


# --- a stall: the frame is held past --link-timeout, then the link is cut ---

STALLS = {"first pass": SOURCE, "prepare": SOURCE, "commit": DESTINATION, "done": DESTINATION}


@pytest.mark.parametrize("point", list(STALLS))
def test_stall(hosts, tmp_path, token, relay, point):
    arrival = begin(hosts, tmp_path, token)
    proxy, address = relay(POINTS[point], stall=STALL)
    done = migrate(hosts[0], address, token, "m1", *ROUNDS, expect_ok=False)
    assert proxy.cuts == 1, "the relay never reached its stall point"
    assert (done.returncode == 0) == (STALLS[point] == DESTINATION), done.stderr
    settle(hosts, STALLS[point], arrival)


# --- the receiver killed -9, at every point before COMMIT reaches it ---

RECEIVER_KILLS = [point for point in POINTS if point != "done"]


@pytest.mark.parametrize("point", RECEIVER_KILLS)
def test_receiver_killed(hosts, tmp_path, token, relay, point):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    process, address, hold = held_at(relay, hosts, token, point)
    os.kill(arrival["pid"], signal.SIGKILL)
    hold.set()
    if point == "commit":
        # COMMIT was sent, so the source is in doubt and asks until a receiver answers:
        # a new one on the destination knows of no commit and says aborted.
        arrival = receive(h2, token)
        settle_with = WAITS
    else:
        settle_with = SOURCE
    assert process.wait(120) != 0
    no_traceback(process)
    settle(hosts, settle_with, arrival)


# --- the sender (ferry migrate) killed -9, at every point ---

SENDER_KILLS = {point: before_offer_or(point, DESTINATION if point in AFTER_HANDOVER else SOURCE)
                for point in POINTS}


@pytest.mark.parametrize("point", list(SENDER_KILLS))
def test_sender_killed(hosts, tmp_path, token, relay, point):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    process, address, hold = held_at(relay, hosts, token, point)
    process.kill()
    process.wait(10)
    hold.set()
    if point in AFTER_HANDOVER:
        status = h1.ok("status", "m1")
        assert status["state"] == "paused" and status["migration"]["phase"] in ("handover", "in-doubt")
        settled = resolve(h1, address, token)
        assert settled.returncode == 0, settled.stderr
    if point == "prepared":
        # The destination holds a prepared copy, never started, until its resolve window ends.
        receiver_waits_on(h2, arrival["pid"], staged=None)
    settle(hosts, SENDER_KILLS[point], arrival)


# --- the source's VM process killed -9 ---

VM_KILLS = {"first pass": STOPPED, "commit": DESTINATION, "done": DESTINATION}


@pytest.mark.parametrize("point", list(VM_KILLS))
def test_source_vm_killed(hosts, tmp_path, token, relay, point):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    process, address, hold = held_at(relay, hosts, token, point)
    os.kill(h1.ok("status", "m1")["pid"], signal.SIGKILL)
    hold.set()
    process.wait(120)
    no_traceback(process)
    if point in AFTER_HANDOVER:
        # The handover is durable: the dead VM's folder waits for the destination's word.
        assert_busy(h1.run("start", "m1"), "handover", "in-doubt")
        settled = resolve(h1, address, token)
        assert settled.returncode == 0, settled.stderr
    settle(hosts, VM_KILLS[point], arrival)


# --- wrong token ---

def wrong_token(tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("x" * 64)
    wrong.chmod(0o600)
    return wrong


def test_wrong_token_is_refused_and_the_receiver_keeps_waiting(hosts, tmp_path, token):
    h1, h2 = hosts
    begin(hosts, tmp_path, token, memory=64, cmdline="fill=50 rate=max hb=100")
    refused = migrate(h1, f"{h2.ipv4}:{PORT}", wrong_token(tmp_path), expect_ok=False)
    assert refused.returncode != 0 and "wrong token" in refused.stderr
    assert h1.ok("status", "m1")["state"] == "running"
    assert "refused a connection" in h2.sh("cat /var/lib/ferry/receive-m1.log")
    migrate(h1, f"{h2.ipv4}:{PORT}", token)
    exactly_one_copy(h2, h1)


def test_wrong_token_at_the_resolve_step(hosts, tmp_path, token, relay):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    process, address, hold = held_at(relay, hosts, token, "commit")
    process.kill()
    process.wait(10)
    hold.set()
    refused = resolve(h1, address, token, wrong_token(tmp_path))
    # At once, not after a minute of retries: asking again with that token cannot help.
    assert refused.returncode != 0 and "wrong token" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    status = h1.ok("status", "m1")
    assert status["state"] == "paused" and status["migration"]["phase"] == "in-doubt"
    settled = resolve(h1, address, token)
    assert settled.returncode == 0, settled.stderr
    settle(hosts, DESTINATION, arrival)


# --- protocol version mismatch, either way ---

VERSIONS = {
    # The source offers only versions newer than the destination speaks.
    "source too new": ("out", Kind.HELLO,
                       lambda hello: {**hello, "versions": [protocol.VERSION + 1, protocol.VERSION + 2]}),
    # The destination answers with a version the source never offered.
    "destination too new": ("back", Kind.HELLO, lambda hello: {**hello, "version": protocol.VERSION + 1}),
}


@pytest.mark.parametrize("way", list(VERSIONS))
def test_version_mismatch(hosts, tmp_path, token, relay, way):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    proxy, address = relay(None, rewrite=VERSIONS[way])
    refused = migrate(h1, address, token, "m1", *ROUNDS, expect_ok=False)
    assert refused.returncode != 0 and "no common protocol version" in refused.stderr, refused.stderr
    settle(hosts, WAITS, arrival)


# --- destination short of memory or disk ---

def test_destination_without_memory_refuses_and_waits_on(hosts, tmp_path, token):
    h1, h2 = hosts
    # More than the machine has: the source only runs it overcommitted, the destination refuses.
    start_vm(h1, tmp_path, memory=30 * 1024, cmdline="fill=1 rate=0 hb=200", start_args=("--overcommit",))
    arrival = receive(h2, token)
    refused = migrate(h1, f"{h2.ipv4}:{PORT}", token, expect_ok=False)
    assert refused.returncode != 0 and "out of memory" in refused.stderr
    assert list(h2.vm_processes()) == [arrival["pid"]], "the receiver should wait on for another source"
    settle(hosts, WAITS, arrival)


@pytest.fixture
def small_destination(lab, hosts):
    small_disk(hosts[1])
    yield hosts[1]
    drop_small_disk(hosts[1], lab.hosts[1])


def test_destination_disk_full_at_the_offer(hosts, tmp_path, token, small_destination):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    fill_disk(h2)
    refused = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", *ROUNDS, expect_ok=False)
    assert refused.returncode != 0 and "No space left on device" in refused.stderr, refused.stderr
    free_disk(h2)
    settle(hosts, WAITS, arrival)


def test_destination_disk_full_at_the_commit_still_commits(hosts, tmp_path, token, relay, small_destination):
    h1, h2 = hosts
    begin(hosts, tmp_path, token)
    process, address, hold = held_at(relay, hosts, token, "commit", then="pass")
    fill_disk(h2)
    hold.set()
    assert process.wait(120) == 0, process.stderr.read()
    # The guest's lines printed while the disk was full are lost from its log, not from the guest.
    free_disk(h2)
    exactly_one_copy(h2, h1, gaps=True)


# --- a conflicting operation in stop-and-copy (precopy and the handover: test_busy_during_migration) ---

CONFLICTS = [("pause", "stop-and-copy"), ("pause", "prepare"), ("poweroff", "stop-and-copy"), ("poweroff", "prepare")]


@pytest.mark.parametrize("op,point", CONFLICTS, ids=[f"{op} at {point}" for op, point in CONFLICTS])
def test_conflicting_operation_in_stop_and_copy(hosts, tmp_path, token, relay, op, point):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    process, address, hold = held_at(relay, hosts, token, point, then="pass")
    if op == "pause":
        assert_busy(h1.run("pause", "m1"), "stop-and-copy")
    else:
        h1.ok("poweroff", "m1")  # a cancel: the sender's next step is refused, no COMMIT goes
    hold.set()
    code = process.wait(120)
    error = process.stderr.read()
    assert "Traceback" not in error, error
    if op == "pause":
        assert code == 0, error
        settle(hosts, DESTINATION, arrival)
    else:
        assert code != 0 and "cancelled" in error, error
        settle(hosts, STOPPED, arrival)


# --- no convergence within --timeout ---

def test_timeout_gives_up_cleanly(hosts, tmp_path, token, lab):
    h1, h2 = hosts
    arrival = begin(hosts, tmp_path, token)
    lab.link(h2.name, rate="200mbit")  # the first pass outlasts the timeout, which is checked after it
    done = migrate(h1, f"{h2.ipv4}:{PORT}", token, "m1", "--timeout", "1", *ROUNDS, expect_ok=False)
    assert done.returncode != 0 and "did not converge within 1 s" in done.stderr
    settle(hosts, SOURCE, arrival)
