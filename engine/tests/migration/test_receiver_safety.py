"""A real ``ferry receive`` process against hostile, idle and wrong peers on 127.0.0.1.

Whatever a peer sends, the receiver logs why it refused it, keeps listening,
keeps nothing staged from it, and the real source's live migration then
succeeds into it.
"""

import json
import os
import re
import socket
import time

import pytest

from ferry.migration import protocol, transport
from ferry.migration.gate import HANDSHAKE_TIMEOUT
from ferry.migration.protocol import Kind, PeerFailed
from ferry.migration.sender import handshake
from ferry.host.api import Host
from ferry.machine.sections import REGISTRY
from ferry.memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST, digest
from support.cli import Ferry

pytestmark = pytest.mark.kvm
QUIET = "fill=1 rate=0 hb=100"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Ends:
    """A source state directory with running VMs, and a destination with a detached receiver."""

    def __init__(self, tmp_path, token):
        self.tmp = tmp_path
        self.token = token
        self.source = Ferry(tmp_path / "source")
        self.destination = Ferry(tmp_path / "destination")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.receiver = None

    def start_vm(self, name="m1", cmdline=QUIET):
        self.source.define(self.tmp, name=name, vcpus=1, memory=64, kernel="builtin:selfcheck", cmdline=cmdline)
        self.source.ok("start", name)
        self.source.wait_heartbeats(name, 3)

    def receive(self, name="m1"):
        self.receiver = self.destination.ok("receive", name, "--listen", self.address, "--token-file",
                                            str(self.token), "--detach", "--timeout", "120", "--link-timeout", "5")
        return self.receiver

    def migrate(self, name="m1"):
        return self.source.run("--json", "migrate", name, "--to", self.address, "--token-file", str(self.token),
                               "--link-timeout", "5", timeout=120)

    def accepted(self):
        """A channel whose offer of GOOD (MEMORY bytes) the receiver accepted."""
        channel = transport.connect(self.address, link_timeout=5)
        try:
            handshake(channel, self.token.read_bytes().strip())
            channel.send(Kind.OFFER, {"definition": GOOD, "memory": MEMORY})
            channel.expect(Kind.ACCEPT)
        except BaseException:
            channel.close()
            raise
        return channel

    def log(self, name="m1") -> str:
        return (self.destination.state_dir / f"receive-{name}.log").read_text()

    def logged(self, *parts: str, wait: float = 2) -> bool:
        """A line of the receiver's log holds all ``parts`` (it logs just after hanging up)."""
        deadline = time.monotonic() + wait
        while True:
            if any(all(part in line for part in parts) for line in self.log().splitlines()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def staged(self, name="m1") -> list[str]:
        folder = self.destination.state_dir / "incoming" / name
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def assert_waiting(self):
        """The receiver process lives, accepts connections, and stages nothing."""
        os.kill(self.receiver["pid"], 0)
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        assert self.staged() == ["vm.lock"], self.staged()

    def assert_gone(self, name="m1"):
        """The receiver ended without a VM and took its staging folder with it."""
        folder = self.destination.state_dir / "incoming" / name
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and folder.exists():
            time.sleep(0.1)
        assert not folder.exists(), f"staging left behind: {sorted(p.name for p in folder.iterdir())}"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()

    def assert_arrived(self, name="m1"):
        done = self.migrate(name)
        assert done.code == 0, done.err
        assert json.loads(done.out.strip().splitlines()[-1])["outcome"] == "committed"
        assert self.destination.ok("status", name)["state"] == "running"
        self.destination.wait_heartbeats(name, 3)
        assert name not in [vm["name"] for vm in self.source.ok("list")]
        assert not (self.destination.state_dir / "incoming" / name).exists(), "staging left behind"

    def cleanup(self):
        for tool in (self.source, self.destination):
            host = Host(tool.state_dir)
            for name in host.names():
                try:
                    host.poweroff(name, timeout=10)
                except Exception:
                    pass
        if self.receiver:
            try:
                os.kill(self.receiver["pid"], 9)
            except ProcessLookupError:
                pass


@pytest.fixture
def ends(tmp_path, token):
    pair = Ends(tmp_path, token)
    yield pair
    pair.cleanup()


def frame(kind, payload=b"", a=None, b=0) -> bytes:
    return protocol.pack(kind, a=len(payload) if a is None else a, b=b) + payload


def message(kind, values) -> bytes:
    return frame(kind, json.dumps(values).encode())


def send_raw(port: int, *chunks: bytes) -> bytes:
    """Send the chunks (a response read after each), then wait for the receiver to hang up."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT + 5) as conn:
        for chunk in chunks:
            conn.sendall(chunk)
            if chunk is not chunks[-1]:
                answer += conn.recv(65536)
        try:
            conn.shutdown(socket.SHUT_WR)
            while data := conn.recv(65536):
                answer += data
        except OSError:
            pass  # reset, or not connected any more: the receiver hung up with our bytes unread
    return answer


HELLO = message(Kind.HELLO, {"versions": [protocol.VERSION, protocol.VERSION]})
UNAUTHENTICATED = [
    ([message(Kind.HELLO, {"versions": {}})], "HELLO versions: expected a list"),
    ([frame(Kind.HELLO, b'{"versions": [1, 1e400]}')], "HELLO versions[1]: expected a whole number, got inf"),
    ([frame(Kind.HELLO, b"[" * 3000 + b"]" * 1000)], "nested deeper than 8 levels"),
    ([frame(Kind.HELLO, b'{"versions": [1, 1], "caps": ' + b"[" * 2000 + b"]" * 2000 + b"}")],
     "nested deeper than 8 levels"),
    ([HELLO, message(Kind.AUTH, {"nonce": "ab", "proof": "é" * 64})], "AUTH proof: expected lowercase hex"),
    ([HELLO, message(Kind.AUTH, {"nonce": ["ab"], "proof": "0" * 64})], "AUTH nonce: expected text"),
    ([HELLO, message(Kind.AUTH, {"nonce": "ab", "proof": "0" * 64})], "failed to prove the migration token"),
    ([message(Kind.HELLO, {"versions": [1, 2**64]})], "HELLO versions[1]: 18446744073709551616 is out of range"),
    ([message(Kind.HELLO, {"versions": ["1", 1]})], "HELLO versions[0]: expected a whole number"),
    ([message(Kind.HELLO, {"versions": [7, 9]})], "no common protocol version"),
    ([frame(Kind.HELLO, a=2**63)], "HELLO: message of 9223372036854775808 bytes, at most 4096 allowed"),
    ([frame(Kind.HELLO, b"x" * 5000)], "HELLO: message of 5000 bytes, at most 4096 allowed"),
    ([frame(Kind.SECTION, a=16, b=2**62)], "SECTION: 4611686018427387904 bytes of data"),
    ([frame(Kind.MEM, a=0, b=2**40)], "expected HELLO, got MEM"),
    ([frame(Kind.OFFER, b"{}")], "expected HELLO, got OFFER"),
    ([b"\xff" * protocol.HEADER.size], "unknown frame type 255"),
    ([frame(Kind.HELLO, b"\x00\xff garbage \x80")], "HELLO: bad message: not JSON"),
    ([frame(Kind.HELLO, b'{"versions": [1, NaN]}')], "NaN is not a number"),
    ([frame(Kind.HELLO)[:10]], "link closed by the peer"),
    ([frame(Kind.HELLO, a=100) + b'{"versions": '], "link closed by the peer"),
]


def offer(ends, values) -> str:
    """Authenticate with the real token, send an OFFER, return the receiver's refusal."""
    channel = transport.connect(ends.address, link_timeout=5)
    try:
        handshake(channel, ends.token.read_bytes().strip())
        channel.send(Kind.OFFER, values)
        with pytest.raises(PeerFailed) as refusal:
            channel.expect(Kind.ACCEPT)
        return str(refusal.value)
    finally:
        channel.close()


GOOD = {"name": "m1", "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "cmdline": QUIET}
AUTHENTICATED = [
    ({"memory": 64 << 20}, "OFFER definition: required, missing"),
    ({"definition": GOOD, "memory": "x"}, "OFFER memory: expected a whole number, got 'x'"),
    ({"definition": GOOD, "memory": 1e30}, "OFFER memory: expected a whole number"),
    ({"definition": GOOD, "memory": 2**80}, "OFFER memory: 1208925819614629174706176 is out of range"),
    ({"definition": GOOD, "memory": 64 << 20, "mode": "hot"}, "OFFER mode: 'hot' is not one of live, warm, cold"),
    ({"definition": {**GOOD, "name": "other"}, "memory": 64 << 20}, "name: this receiver waits for 'm1'"),
    ({"definition": {**GOOD, "vcpus": "two"}, "memory": 64 << 20}, "vcpus: expected a whole number"),
    ({"definition": {**GOOD, "kernel": 5}, "memory": 64 << 20}, "kernel: expected a file path"),
    ({"definition": GOOD, "memory": 3}, "memory: the offer is for 3 bytes"),
    ({"definition": {**GOOD, "memory": 2**20}, "memory": 2**40}, "out of memory"),
    ({"definition": {"x": [[[[[[[[[]]]]]]]]]}, "memory": 0}, "nested deeper than 8 levels"),
]


def test_hostile_peers_are_refused_and_the_real_source_still_arrives(ends):
    ends.start_vm(cmdline="fill=50 rate=max hb=100")
    ends.receive()
    for chunks, reason in UNAUTHENTICATED:
        began = time.monotonic()
        send_raw(ends.port, *chunks)
        assert time.monotonic() - began < HANDSHAKE_TIMEOUT + 2
        assert ends.logged("refused a connection from 127.0.0.1: ", reason), reason
        ends.assert_waiting()
    for values, reason in AUTHENTICATED:
        assert reason in offer(ends, values)
        assert ends.logged("refused a", reason), reason
        ends.assert_waiting()
    ends.assert_arrived()


def test_a_refused_vm_is_told_why_and_the_right_one_arrives_after(ends):
    ends.start_vm("other")
    ends.start_vm("m1")
    ends.receive()
    refused = ends.migrate("other")
    assert refused.code != 0 and "Traceback" not in refused.err
    assert "name: this receiver waits for 'm1', the source sent 'other'" in refused.err
    assert ends.source.ok("status", "other")["state"] == "running"
    ends.assert_waiting()
    ends.assert_arrived()


def test_idle_peers_do_not_delay_the_real_source(ends):
    ends.start_vm()
    ends.receive()
    idle = [socket.create_connection(("127.0.0.1", ends.port), timeout=5) for _ in range(50)]
    try:
        time.sleep(0.5)  # all of them accepted and waiting on the handshake
        began = time.monotonic()
        ends.assert_arrived()
        took = time.monotonic() - began
    finally:
        for conn in idle:
            conn.close()
    assert took < 10, f"the migration took {took:.1f} s behind 50 idle peers"
    assert ends.logged("refused a connection from 127.0.0.1: 32 newer peers arrived while it was authenticating")


def test_an_idle_peer_is_cut_after_the_handshake_timeout(ends):
    ends.receive()
    with socket.create_connection(("127.0.0.1", ends.port), timeout=HANDSHAKE_TIMEOUT + 5) as conn:
        began = time.monotonic()
        assert conn.recv(1) == b""
        assert HANDSHAKE_TIMEOUT - 0.5 < time.monotonic() - began < HANDSHAKE_TIMEOUT + 2
    assert ends.logged(f"refused a connection from 127.0.0.1: did not authenticate within {HANDSHAKE_TIMEOUT:.0f} s")
    ends.assert_waiting()


def test_a_second_authenticated_offer_is_refused_busy(ends):
    ends.receive()
    first = transport.connect(ends.address, link_timeout=5)
    try:
        handshake(first, ends.token.read_bytes().strip())
        first.send(Kind.OFFER, {"definition": GOOD, "memory": 64 << 20})
        first.expect(Kind.ACCEPT)
        assert "busy: m1 is being received from another source" in offer(ends, {"definition": GOOD,
                                                                               "memory": 64 << 20})
    finally:
        first.close()


def test_a_terminated_receiver_leaves_nothing_staged(ends):
    ends.receive()
    os.kill(ends.receiver["pid"], 15)
    ends.assert_gone()


MEMORY = 64 << 20
IN_TRANSFER = [
    (frame(Kind.MEM, a=MEMORY - 4096, b=8192), "memory range 0x3fff000+0x2000 is outside the VM's 0x4000000 bytes"),
    (frame(Kind.MEM, a=2**64 - 1, b=1), "is outside the VM's"),
    (frame(Kind.ZERO, a=0, b=0), "memory range 0x0+0x0 is outside"),
    (frame(Kind.SECTION, a=40, b=2**40), "SECTION: 1099511627776 bytes of data, at most 16777216 allowed"),
    (message(Kind.SECTION, {"name": "cpu", "checksum": "../x"}), "SECTION checksum: expected lowercase hex"),
    (message(Kind.ROUND, {"round": -1}), "ROUND round: -1 is out of range"),
    (message(Kind.PREPARE, {"chunks": "all"}), "PREPARE chunks: expected a list"),
    (message(Kind.HELLO, {"versions": [1, 1]}), "unexpected HELLO while receiving"),
    (bytes([99]) + bytes(23), "unknown frame type 99"),
]


@pytest.mark.parametrize("case", range(len(IN_TRANSFER)))
def test_a_bad_frame_during_the_transfer_aborts_and_leaves_nothing_staged(ends, case):
    data, reason = IN_TRANSFER[case]
    ends.receive()
    channel = ends.accepted()
    try:
        channel.conn.sendall(data)
        assert ends.logged("migration failed: ", reason, wait=15), ends.log()
    finally:
        channel.close()
    ends.assert_gone()


def test_state_sections_are_bounded_in_all(ends):
    ends.receive()
    data = bytes(16 << 20)
    head = json.dumps({"name": "", "checksum": digest(data)})
    channel = ends.accepted()
    try:
        for index in range(4):
            channel.send_section(f"s{index}", 1, digest(data), data)
        channel.conn.sendall(frame(Kind.SECTION, head.encode(), b=len(data)))
        with pytest.raises(PeerFailed, match="state sections: more than 67108864 bytes in all"):
            channel.expect(Kind.PREPARED)
    finally:
        channel.close()
    ends.assert_gone()


ONE_VCPU = REGISTRY.names(1)
WRONG_SECTIONS = {
    "a vCPU the definition lacks": ([(name, 1) for name in ONE_VCPU + ["vcpu.1"]],
                                    "section vcpu.1: the machine has 1 vCPUs (vcpu.0)"),
    "a newer version": ([(name, 2 if name == "pit" else 1) for name in ONE_VCPU],
                        "section pit: version 2 is newer than what this engine reads (versions 1)"),
    "no vCPU": ([(name, 1) for name in ONE_VCPU if name != "vcpu.0"], "section vcpu.0: missing"),
    "an unknown section": ([(name, 1) for name in ONE_VCPU + ["../../vms/m1"]],
                           "section ../../vms/m1: unknown to this engine"),
    "one sent twice": ([(name, 1) for name in ONE_VCPU + ["pit"]], "section pit: appears twice"),
}


@pytest.mark.parametrize("case", list(WRONG_SECTIONS))
def test_sections_that_do_not_fit_the_definition_are_refused_by_name(ends, case):
    """Checked by the section registry before any is applied, as a restore checks a snapshot's."""
    sections, reason = WRONG_SECTIONS[case]
    ends.receive()
    channel = ends.accepted()
    try:
        for name, version in sections:
            channel.send_section(name, version, digest(b"{}"), b"{}")
        channel.send(Kind.PREPARE, {"chunks": [ZERO_CHUNK_DIGEST] * (MEMORY // CHUNK_SIZE)})
        with pytest.raises(PeerFailed, match=f"cannot build the VM here: {re.escape(reason)}"):
            channel.expect(Kind.PREPARED)
    finally:
        channel.close()
    ends.assert_gone()
