"""The whole Sender <-> Receiver exchange in one process, over socket pairs, with a fake
source VM and a fake destination host: every message of the protocol crosses a real
socket and its schema, and RAM arrives byte for byte. A contract test keeps both fakes
true to the interfaces the real ones implement."""

import inspect
import os
import queue
import socket
import threading

import pytest

from ferry.machine.state import Section
from ferry.memory import GuestMemory
from ferry.migration import interfaces, messages, sender
from ferry.migration.protocol import PeerFailed
from ferry.migration.populate import chunk_runs
from ferry.migration.protocol import ProtocolError
from ferry.migration.receiver import Receiver
from ferry.migration.source_memory import SourceMemory
from ferry.migration.transport import Channel, LinkError
from ferry.vmprocess.incoming import Incoming
from ferry.host.migrate import SourceVm, StoppedVm

MIB = 2**20
SIZE = 8 * MIB
TOKEN = b"t" * 32


class FakeSource:
    """A VM of 8 MiB in a memfd whose guest writes one page between rounds."""

    def __init__(self):
        fd = os.memfd_create("fake-guest")
        os.ftruncate(fd, SIZE)
        os.pwrite(fd, os.urandom(3 * MIB), MIB)           # data in chunk 0 and 1, zero chunks after
        self.memory = SourceMemory(SIZE, fd=fd)
        self.calls: list[str] = []
        self.dirtied = 2
        self.pause_parts: dict = {}

    def _note(self, name):
        self.calls.append(name)

    def begin(self, live):
        self._note("begin")

    def dirty(self):
        self._note("dirty")
        if not self.dirtied:
            return []
        self.dirtied -= 1
        os.pwrite(self.memory.fd, os.urandom(4096), 5 * MIB)  # one page, as a running guest would
        return [(5 * MIB, 5 * MIB + 4096)]

    def throttle(self, share):
        self._note("throttle")

    def pause(self):
        self._note("pause")
        self.pause_parts = {"pause": 0.25, "dirty_scan": 0.5, "capture": 0.125}  # as the VM process times them
        return []

    def sections(self):
        self._note("sections")
        return [Section("vcpu.0", 1, b'{"regs": "00"}'), Section("serial.com1", 1, b"{}")]

    def resume(self):
        self._note("resume")

    def handover(self):
        self._note("handover")

    def finish(self, outcome, report):
        self._note(f"finish {outcome}")

    def progress(self, progress):
        pass


class FakeTarget:
    """A destination host that keeps what arrives in a real GuestMemory."""

    name = "vm1"

    def __init__(self):
        self.lines: list[str] = []
        self.log = self.lines.append
        self.memory = None
        self.sections = None
        self.steps: list[str] = []

    def check_offer(self, values, memory, mode):
        self.steps.append("check_offer")

    def create_memory(self, size):
        self.memory = GuestMemory(size)
        return self.memory

    def build(self, values, memory, sections):
        self.sections = sections
        return "machine"

    def ready(self):
        self.steps.append("ready")

    def commit(self, machine, values):
        self.steps.append("commit")

    def discard(self):
        self.steps.append("discard")


class PairListener:
    """A listener whose connections are socket pairs made on demand by ``connect``."""

    def __init__(self):
        self.waiting: queue.Queue = queue.Queue()

    def connect(self) -> Channel:
        mine, theirs = socket.socketpair()
        self.waiting.put(theirs)
        return Channel(mine, True, messages.TO_SOURCE, link_timeout=10)

    def accept(self):
        conn = self.waiting.get()
        if conn is None:
            raise OSError("closed")
        return conn, "pair"

    def channel(self, conn, peer):
        return Channel(conn, True, messages.TO_DESTINATION, link_timeout=10)

    def close(self):
        self.waiting.put(None)


def migrate(mode="live", max_downtime_ms=0.0001):
    source, target, listener = FakeSource(), FakeTarget(), PairListener()
    receiver = Receiver(listener, TOKEN, target, accept_timeout=30)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(receiver.run()), daemon=True)
    thread.start()
    options = sender.Options(mode=mode, max_downtime_ms=max_downtime_ms, token=TOKEN)
    report = sender.Sender(source, listener.connect, options).run({"name": "vm1", "vcpus": 1, "memory": 8})
    thread.join(30)
    return source, target, report, outcome


@pytest.mark.parametrize("mode", ["live", "warm"])
def test_every_byte_and_section_arrives_and_the_handover_commits(mode):
    source, target, report, outcome = migrate(mode)
    assert outcome == ["committed"] and report.outcome == "committed"
    assert bytes(target.memory.view[:SIZE]) == os.pread(source.memory.fd, SIZE, 0)
    assert sorted(section.name for section in target.sections) == ["serial.com1", "vcpu.0"]
    assert target.steps == ["check_offer", "ready", "commit"]
    assert source.calls[0] == "begin" and source.calls[-2:] == ["handover", "finish committed"]
    if mode == "live":
        assert "dirty" in source.calls and len(report.rounds) >= 2, "the dirtied pages must take rounds"
    else:
        assert "dirty" not in source.calls and report.rounds == []


def test_the_report_splits_the_downtime_into_its_steps_in_order():
    _, _, report, _ = migrate("live")
    parts = report.downtime_parts
    assert list(parts) == list(sender.DOWNTIME_PARTS), "every step, in the order they happen"
    assert all(value >= 0 for value in parts.values())
    # The steps follow one another without gaps: together they are the downtime.
    assert sum(parts.values()) == pytest.approx(report.downtime_ms, abs=5)
    source_side = ("pause", "dirty_scan", "capture", "control", "last_send", "device_state", "digests")
    assert report.stop_copy_ms == pytest.approx(sum(parts[name] for name in source_side))
    assert (parts["pause"], parts["dirty_scan"], parts["capture"]) == (0.25, 0.5, 0.125)
    assert tuple(report.setup_parts) == sender.SETUP_PARTS
    assert report.setup_ms == pytest.approx(sum(report.setup_parts.values()))
    assert 0 < report.setup_ms < report.total_ms


def test_each_round_says_where_its_time_went_on_both_ends():
    _, _, report, _ = migrate("live")
    first = report.rounds[0].parts
    assert set(first["source"]) == {"read", "digest", "send", "sync"}
    assert set(first["destination"]) == {"wait", "populate", "receive", "hash"}
    for side in first.values():
        assert all(value >= 0 for value in side.values())
    assert sum(first["source"].values()) <= report.rounds[0].duration_ms + 1


def test_a_destination_that_cannot_stage_fails_at_prepare_and_the_source_resumes():
    source, target, listener = FakeSource(), FakeTarget(), PairListener()

    def full_disk():
        raise OSError(28, "No space left on device")

    target.ready = full_disk
    receiver = Receiver(listener, TOKEN, target, accept_timeout=30)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(receiver.run()), daemon=True)
    thread.start()
    with pytest.raises(PeerFailed, match="cannot build the VM here: .*No space left on device"):
        sender.Sender(source, listener.connect, sender.Options(token=TOKEN)).run({"name": "vm1"})
    thread.join(30)
    assert outcome == ["aborted"] and target.steps[-1] == "discard"
    assert "resume" in source.calls and "handover" not in source.calls


def test_the_plan_names_every_chunk_the_first_pass_touches_once():
    assert chunk_runs([(0, 4096), (MIB, 3 * MIB), (3 * MIB, 5 * MIB + 1), (8 * MIB, 10 * MIB)]) == [[0, 3], [4, 1]]
    assert chunk_runs([]) == []


@pytest.mark.parametrize("runs, named", [
    ([[3, 2]], r"PLAN chunks: 3\+2 is outside the VM's 4 chunks"),
    ([[0, 0]], r"PLAN chunks: 0\+0 is outside"),
    ([[2**40, 1]], "outside the VM's 4 chunks"),
])
def test_a_plan_outside_the_vms_ram_is_refused(runs, named):
    receiver = Receiver(PairListener(), TOKEN, FakeTarget(), accept_timeout=1)
    memory = GuestMemory(SIZE)
    with pytest.raises(ProtocolError, match=named):
        receiver._plan(runs, memory)
    assert receiver.populator is None, "nothing is allocated for a refused plan"
    memory.close()


def test_a_second_plan_or_one_without_ram_is_refused():
    receiver = Receiver(PairListener(), TOKEN, FakeTarget(), accept_timeout=1)
    with pytest.raises(ProtocolError, match="PLAN: only one"):
        receiver._plan([[0, 1]], None)
    memory = GuestMemory(SIZE)
    receiver._plan([[0, 4]], memory)
    try:
        with pytest.raises(ProtocolError, match="PLAN: only one"):
            receiver._plan([[0, 1]], memory)
    finally:
        receiver.populator.stop()
    # The thread allocated every planned page: the RAM reads as zero, in memory now.
    assert bytes(memory.view[:SIZE]) == bytes(SIZE)
    memory.close()


def rounds_taken(dirty_sizes, bytes_per_s=500e6, max_downtime_ms=300.0) -> int:
    """How many pre-copy rounds (first pass included) the sender takes before the pause when
    each round leaves the next of ``dirty_sizes`` bytes dirty, the link moving ``bytes_per_s``."""
    worker = sender.Sender(FakeSource(), None, sender.Options(max_downtime_ms=max_downtime_ms))
    worker.report.rounds.append(sender.Round(0, 100 * MIB, 100, 0, 0))
    for dirty in dirty_sizes:
        if dirty / bytes_per_s * 1000 <= max_downtime_ms and worker._last_round(dirty / bytes_per_s * 1000, dirty):
            break
        worker.report.rounds.append(sender.Round(len(worker.report.rounds), dirty, 1, dirty, 0))
    return len(worker.report.rounds)


def test_pre_copy_goes_on_while_the_rest_halves_and_is_worth_a_round():
    assert rounds_taken([20 * MIB, 4 * MIB, 1 * MIB]) == 3, "20 and 4 MiB halved and take over 5 ms: two more rounds"
    assert rounds_taken([1 * MIB]) == 1, "a 1 ms copy is not worth another round"
    assert rounds_taken([40 * MIB, 30 * MIB]) == 2, "30 MiB after 40 did not halve: pause now"
    assert rounds_taken([40 * MIB, 20 * MIB, 10 * MIB, 5 * MIB, 2 * MIB]) == sender.MAX_ROUNDS
    assert rounds_taken([400 * MIB, 30 * MIB], max_downtime_ms=300) == 3, "over the target, rounds go on anyway"


def test_a_wrong_token_is_refused_and_the_source_resumes():
    source, target, listener = FakeSource(), FakeTarget(), PairListener()
    receiver = Receiver(listener, TOKEN, target, accept_timeout=2)
    ended = []

    def wait():
        try:
            receiver.run()
        except LinkError as err:  # its --timeout: the wrong peer never counted as an arrival
            ended.append(str(err))

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    options = sender.Options(mode="live", token=b"w" * 32)
    with pytest.raises(PeerFailed, match="wrong token"):
        sender.Sender(source, listener.connect, options).run({"name": "vm1", "vcpus": 1, "memory": 8})
    assert "handover" not in source.calls and target.steps == []
    thread.join(10)  # the receiver logs the refusal after it has sent it: read its lines once it is done
    assert any("failed to prove the migration token" in line for line in target.lines)
    assert ended and "no migration arrived" in ended[0]


def _members(protocol) -> set[str]:
    return {name for name in dir(protocol) if not name.startswith("_")} | set(protocol.__annotations__)


@pytest.mark.parametrize("protocol, implementations", [
    (interfaces.LiveSource, [FakeSource, SourceVm]),
    (interfaces.Source, [StoppedVm]),
    (interfaces.Target, [FakeTarget, Incoming]),
], ids=["live source", "source", "target"])
def test_the_fakes_and_the_real_ends_implement_the_same_interface(protocol, implementations):
    for implementation in implementations:
        methods = {name for name, _ in inspect.getmembers(implementation, inspect.isfunction)}
        missing = {m for m in _members(protocol) if callable(getattr(protocol, m, None))} - methods
        assert not missing, f"{implementation.__name__} lacks {sorted(missing)}"
        for name in methods & {m for m in dir(protocol) if not m.startswith("_")}:
            want = list(inspect.signature(getattr(protocol, name)).parameters)
            have = list(inspect.signature(getattr(implementation, name)).parameters)
            assert have == want, f"{implementation.__name__}.{name}{have} differs from {protocol.__name__}"
