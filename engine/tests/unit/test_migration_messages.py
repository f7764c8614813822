"""Every migration message is checked against its schema before use: whatever arrives,
the result is a checked message or a ProtocolError naming the problem, never another exception."""

import json
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.migration import messages, protocol
from ferry.migration.gate import Refused, answer_handshake
from ferry.migration.protocol import Frame, Kind, ProtocolError
from ferry.migration.transport import Channel

TOKEN = b"a-one-time-token-of-some-length"
HELLO = {"versions": [1, 1], "engine": "0.1", "caps": ["zero-ranges"]}
OFFER = {"definition": {"name": "m1", "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck"},
         "memory": 64 << 20, "mode": "live"}


def read(kind, message, reads=messages.TO_DESTINATION):
    return messages.read(reads, kind, json.dumps(message).encode() if isinstance(message, dict) else message)


def test_a_good_message_comes_back_with_only_its_fields():
    assert read(Kind.HELLO, {**HELLO, "extra": [1, 2]}) == HELLO
    assert read(Kind.OFFER, OFFER) == OFFER
    assert read(Kind.OFFER, {k: v for k, v in OFFER.items() if k != "mode"})["mode"] == "live"


@pytest.mark.parametrize("kind, message, named", [
    (Kind.HELLO, {"versions": {}}, "HELLO versions: expected a list"),
    (Kind.HELLO, b'{"versions": [1, 1e400]}', r"HELLO versions\[1\]: expected a whole number, got inf"),
    (Kind.HELLO, {"versions": [1, 2**64]}, r"HELLO versions\[1\]: .* out of range"),
    (Kind.HELLO, {"versions": [1]}, "HELLO versions: 1 items, allowed 2 to 2"),
    (Kind.HELLO, {"versions": [True, 1]}, r"HELLO versions\[0\]: expected a whole number"),
    (Kind.HELLO, {}, "HELLO versions: required, missing"),
    (Kind.HELLO, {"versions": [1, 1], "caps": ["x" * 33]}, r"HELLO caps\[0\]: 33 characters, at most 32"),
    (Kind.AUTH, {"nonce": "ab", "proof": "é" * 64}, "AUTH proof: expected lowercase hex"),
    (Kind.AUTH, {"nonce": "ab", "proof": 7}, "AUTH proof: expected text"),
    (Kind.AUTH, {"nonce": "ab"}, "AUTH proof: required, missing"),
    (Kind.OFFER, {"memory": 1}, "OFFER definition: required, missing"),
    (Kind.OFFER, {**OFFER, "memory": "x"}, "OFFER memory: expected a whole number"),
    (Kind.OFFER, {**OFFER, "memory": -1}, "OFFER memory: -1 is out of range"),
    (Kind.OFFER, {**OFFER, "mode": "hot"}, "OFFER mode: 'hot' is not one of live, warm, cold"),
    (Kind.OFFER, {**OFFER, "definition": []}, "OFFER definition: expected an object"),
    (Kind.ROUND, b'{"waited_ms": 1e400}', "ROUND waited_ms: expected a finite number"),
    (Kind.PREPARE, {"chunks": ["XYZ"]}, r"PREPARE chunks\[0\]: expected lowercase hex"),
    (Kind.SECTION, {"name": "cpu", "checksum": None}, "SECTION checksum: expected text"),
    (Kind.HELLO, b'{"versions": [1, NaN]}', "not JSON: NaN is not a number"),
    (Kind.HELLO, b"[" * 5000 + b"]" * 5000, "nested deeper than 8 levels"),
    (Kind.HELLO, json.dumps({"a": [[[[[[[[[]]]]]]]]]}).encode(), "nested deeper than 8 levels"),
    (Kind.HELLO, b'{"versions": "\\ud800"}', "not valid UTF-8"),
    (Kind.HELLO, b"\xff\xfe garbage", "not JSON"),
    (Kind.HELLO, b"[1, 2]", "not an object"),
    (Kind.HELLO, b'{"versions": [1, ' + b"9" * 5000 + b"]}", "not JSON"),
    (Kind.REFUSE, {"reason": "x"}, "REFUSE: not a message this side receives"),
])
def test_a_bad_message_is_refused_naming_the_field(kind, message, named):
    with pytest.raises(ProtocolError, match=named):
        read(kind, message)


def test_a_destinations_timings_come_back_checked():
    parts = {"check": 0.5, "build": 2, "ready": 0.01}
    assert read(Kind.PREPARED, {"parts": parts}, messages.TO_SOURCE) == {"parts": parts}
    assert read(Kind.DONE, {}, messages.TO_SOURCE) == {"parts": {}}
    assert read(Kind.ROUND_OK, {"extra": 1}, messages.TO_SOURCE) == {"parts": {}}


@pytest.mark.parametrize("kind, message, named", [
    (Kind.PREPARED, {"parts": [1, 2]}, "PREPARED parts: expected an object"),
    (Kind.PREPARED, {"parts": {"check": -1}}, "PREPARED parts 'check': -1 is out of range"),
    (Kind.PREPARED, {"parts": {"check": "fast"}}, "PREPARED parts 'check': expected a finite number"),
    (Kind.DONE, b'{"parts": {"commit": 1e400}}', "DONE parts 'commit': expected a finite number"),
    (Kind.DONE, {"parts": {"../" * 20: 1}}, "DONE parts key: 60 characters, at most 32"),
    (Kind.DONE, {"parts": {f"p{i}": 1 for i in range(17)}}, "DONE parts: 17 keys, at most 16"),
])
def test_a_destinations_bad_timings_are_refused_naming_the_field(kind, message, named):
    with pytest.raises(ProtocolError, match=named):
        read(kind, message, messages.TO_SOURCE)


@pytest.mark.parametrize("message, named", [
    ({"chunks": [[0, 1, 2]]}, r"PLAN chunks\[0\]: 3 items, allowed 2 to 2"),
    ({"chunks": [[-1, 1]]}, r"PLAN chunks\[0\]\[0\]: -1 is out of range"),
    ({"chunks": [["0", 1]]}, r"PLAN chunks\[0\]\[0\]: expected a whole number"),
    ({"chunks": {"0": 1}}, "PLAN chunks: expected a list"),
    ({}, "PLAN chunks: required, missing"),
])
def test_a_bad_plan_is_refused_naming_the_field(message, named):
    with pytest.raises(ProtocolError, match=named):
        read(Kind.PLAN, message)


def test_what_a_source_reads_is_checked_too():
    with pytest.raises(ProtocolError, match="OUTCOME state: 'maybe' is not one of"):
        read(Kind.OUTCOME, {"state": "maybe"}, messages.TO_SOURCE)
    with pytest.raises(ProtocolError, match="HELLO nonce: required"):
        read(Kind.HELLO, {"version": 1}, messages.TO_SOURCE)


@pytest.mark.parametrize("frame, limit, named", [
    (Frame(Kind.HELLO, a=messages.PRE_AUTH_MAX + 1), messages.PRE_AUTH_MAX, "HELLO: message of 4097 bytes, at most 4096"),
    (Frame(Kind.OFFER, a=2**64 - 1), messages.POST_AUTH_MAX, "OFFER: message of .* bytes, at most 16777216"),
    (Frame(Kind.SECTION, a=10, b=2**40), messages.POST_AUTH_MAX, "SECTION: 1099511627776 bytes of data"),
    (Frame(Kind.DONE), messages.POST_AUTH_MAX, "DONE: not a message this side receives"),
])
def test_a_frame_header_is_refused_before_its_payload_is_read(frame, limit, named):
    with pytest.raises(ProtocolError, match=named):
        messages.check_header(frame, messages.TO_DESTINATION, limit)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=30)
KINDS = st.sampled_from(list(Kind))
TABLES = st.sampled_from([messages.TO_SOURCE, messages.TO_DESTINATION])


def _ends_cleanly(reads, kind, payload):
    try:
        result = messages.read(reads, kind, payload)
    except ProtocolError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert isinstance(result, dict) and set(result) == set(reads[kind].fields)


@settings(max_examples=300, deadline=None)
@given(TABLES, KINDS, st.dictionaries(st.sampled_from(["versions", "nonce", "proof", "definition", "memory",
                                                        "mode", "chunks", "state", "reason", "name", "checksum",
                                                        "version", "round", "waited_ms"]), JSON))
def test_any_json_object_ends_in_a_message_or_a_protocol_error(reads, kind, values):
    _ends_cleanly(reads, kind, json.dumps(values).encode())


@settings(max_examples=300, deadline=None)
@given(TABLES, KINDS, JSON)
def test_any_json_value_ends_in_a_message_or_a_protocol_error(reads, kind, value):
    _ends_cleanly(reads, kind, json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(TABLES, KINDS, st.binary(max_size=200))
def test_any_bytes_end_in_a_message_or_a_protocol_error(reads, kind, payload):
    _ends_cleanly(reads, kind, payload)


@settings(max_examples=300, deadline=None)
@given(TABLES, st.binary(min_size=protocol.HEADER.size, max_size=protocol.HEADER.size),
       st.sampled_from([messages.PRE_AUTH_MAX, messages.POST_AUTH_MAX]))
def test_any_frame_header_is_taken_or_refused_cleanly(reads, header, limit):
    try:
        frame = protocol.unpack(header)
        messages.check_header(frame, reads, limit)
    except ProtocolError:
        return
    assert frame.kind in reads or frame.kind in messages.RAW
    assert frame.kind in messages.RAW or frame.a <= limit


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_the_handshake_answers_any_bytes_with_a_protocol_error(data):
    """What a destination does with an unauthenticated peer's bytes, over a real socket."""
    left, right = socket.socketpair()
    channel = Channel(right, True, messages.TO_DESTINATION, link_timeout=2)
    left.sendall(data)
    left.shutdown(socket.SHUT_WR)
    try:
        with pytest.raises(ProtocolError):
            answer_handshake(channel, TOKEN)
    finally:
        left.close()
        channel.close()


def test_a_bad_hello_is_answered_with_the_reason():
    left, right = socket.socketpair()
    source = Channel(left, True, messages.TO_SOURCE, link_timeout=2)
    errors = []

    def destination():
        try:
            answer_handshake(Channel(right, True, messages.TO_DESTINATION, link_timeout=2), TOKEN)
        except ProtocolError as err:
            errors.append(err)

    thread = threading.Thread(target=destination)
    thread.start()
    source.send(Kind.HELLO, {"versions": {}})
    with pytest.raises(protocol.PeerFailed, match="HELLO versions: expected a list"):
        source.expect(Kind.HELLO)
    thread.join(5)
    assert isinstance(errors[0], Refused)


def test_an_oversized_header_is_refused_before_reading():
    left, right = socket.socketpair()
    channel = Channel(right, True, messages.TO_DESTINATION, link_timeout=2)
    left.sendall(struct.pack("<BxxxIQQ", Kind.HELLO, 0, 2**63, 0))
    with pytest.raises(ProtocolError, match="at most 4096 allowed"):
        channel.expect(Kind.HELLO)
