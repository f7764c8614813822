"""Protocol negotiation and authentication, over a real socket pair."""

import socket
import threading

import pytest

from ferry.migration import messages, protocol
from ferry.migration.protocol import Kind, PeerFailed, ProtocolError
from ferry.migration.gate import AuthFailed, answer_handshake
from ferry.migration.sender import handshake, merge
from ferry.migration.transport import Channel, parse_address

TOKEN = b"a-one-time-token-of-some-length"


def pair():
    left, right = socket.socketpair()
    return (Channel(left, True, messages.TO_SOURCE, link_timeout=5),
            Channel(right, True, messages.TO_DESTINATION, link_timeout=5))


def run_receiver(channel, token):
    outcome = {}

    def answer():
        try:
            answer_handshake(channel, token)
            outcome["ok"] = True
        except ProtocolError as err:
            outcome["error"] = err

    thread = threading.Thread(target=answer)
    thread.start()
    return thread, outcome


def test_both_sides_prove_the_token():
    source, destination = pair()
    thread, outcome = run_receiver(destination, TOKEN)
    hello = handshake(source, TOKEN)
    thread.join(5)
    assert outcome == {"ok": True}
    assert hello["version"] == protocol.VERSION and "zero-ranges" in hello["caps"]


def test_wrong_token_is_refused_on_both_ends():
    source, destination = pair()
    thread, outcome = run_receiver(destination, TOKEN)
    with pytest.raises(PeerFailed, match="wrong token"):
        handshake(source, b"another-token-entirely-wrong")
    thread.join(5)
    assert isinstance(outcome["error"], AuthFailed)


def test_a_destination_without_the_token_cannot_fool_the_source():
    source, destination = pair()

    def impostor():
        destination.expect(Kind.HELLO)
        destination.send(Kind.HELLO, {"version": protocol.VERSION, "nonce": "00"})
        destination.expect(Kind.AUTH)
        destination.send(Kind.AUTH_OK, {"proof": "0" * 64})

    threading.Thread(target=impostor).start()
    with pytest.raises(ProtocolError, match="could not prove the token"):
        handshake(source, TOKEN)


def test_versions_without_overlap_are_refused_cleanly():
    source, destination = pair()
    thread, outcome = run_receiver(destination, TOKEN)
    source.send(Kind.HELLO, {"versions": [protocol.VERSION + 1, protocol.VERSION + 3]})
    with pytest.raises(PeerFailed, match="no common protocol version"):
        source.expect(Kind.HELLO)
    thread.join(5)
    assert "no common protocol version" in str(outcome["error"])


def test_the_highest_common_version_wins():
    assert protocol.choose_version([1, 99]) == protocol.VERSION
    with pytest.raises(ProtocolError, match="no common protocol version"):
        protocol.choose_version([protocol.VERSION + 1, protocol.VERSION + 9])


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.2:7000", ("10.0.0.2", 7000)), ("[fd00::2]:7000", ("fd00::2", 7000)), (":7000", ("", 7000))])
def test_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.2", "host:99999", "host:port"])
def test_bad_addresses_name_the_problem(text):
    with pytest.raises(ProtocolError, match="HOST:PORT"):
        parse_address(text)


def test_ranges_merge_so_no_page_travels_twice():
    assert merge([(8192, 12288), (0, 4096), (4096, 8192), (20480, 24576)]) == [(0, 12288), (20480, 24576)]
