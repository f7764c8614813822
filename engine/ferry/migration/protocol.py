"""The migration protocol, version 2.

    source (ferry migrate)                          destination (ferry receive)
    ----------------------                          ---------------------------
    connect ---------------------------------------> accept (several peers at once,
                                                       each with a few seconds to authenticate)
    HELLO {versions [lo, hi], engine, caps} ------->
                    <------------------------------- HELLO {version, engine, caps, nonce_d}
    AUTH {nonce_s, hmac(token, "source", d, s)} --->   wrong proof: AUTH_FAIL, logged, keep waiting
                    <------------------------------- AUTH_OK {hmac(token, "destination", s, d)}
    OFFER {definition, memory bytes, mode} -------->   capacity check, RAM reserved
                    <------------------------------- ACCEPT | REFUSE {reason}
    PLAN {chunks: [first, count] runs} ----------->    live: the first pass's chunks, so the
                                                       destination allocates pages ahead of them
    MEM (offset, length) + raw bytes ------------->    first pass over used memory, guest running
    ZERO (offset, length) ------------------------>    all-zero chunks travel as ranges
    ROUND {round, dirty bytes} ------------------->    after every pre-copy round, the first pass too
                    <------------------------------- ROUND_OK   (all memory before it is in RAM)
    ...                                                rounds repeat until the rest fits the
                                                       downtime target (and another would not pay)
    [source pauses the guest]
    MEM ... (last delta)
    SECTION {name, version, checksum} + bytes ---->    the snapshot sections, checksummed
    PREPARE {chunk digests of all RAM} ----------->    checks every section and every chunk,
                                                       stages the "committed" record
                    <------------------------------- PREPARED {parts}  (or FAIL {what})
    [source: phase "handover", guest never resumes here unless told ABORTED]
    COMMIT --------------------------------------->    rename staging -> vms/NAME (the commit), vCPUs start
                    <------------------------------- DONE {parts}
    [source: removes its copy]

Before PREPARED any failure (link, peer, checksum, timeout) aborts: the
destination discards what it got and the source resumes its guest. After
COMMIT was sent the source is *in doubt* until it hears DONE; it reconnects
and asks (QUERY -> OUTCOME {committed|aborted}); the destination keeps
answering for a while after it commits, and aborts by itself (and answers
so) if no COMMIT arrives. The source resumes only on a definite ABORTED.

Frames: a 24-byte header (type, aux u32, a u64, b u64) and a payload whose
length the type defines: MEM has b bytes of memory at offset a; ZERO has
none; SECTION has a bytes of JSON header then b bytes of data; every other
message has a bytes of JSON. ``messages`` checks every header and message
before it is used (sizes, types, ranges, nesting).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass

from ..errors import FerryError

VERSION = 2
MIN_VERSION = 2  # version 1 had no ROUND_OK
CAPABILITIES = ("zero-ranges", "sendfile", "auto-converge", "chunk-digests")
HEADER = struct.Struct("<BxxxIQQ")


class Kind(enum.IntEnum):
    HELLO = 1
    AUTH = 2
    AUTH_OK = 3
    AUTH_FAIL = 4
    OFFER = 5
    ACCEPT = 6
    REFUSE = 7
    MEM = 8
    ZERO = 9
    ROUND = 10
    SECTION = 11
    PREPARE = 12
    PREPARED = 13
    FAIL = 14
    COMMIT = 15
    DONE = 16
    QUERY = 17
    OUTCOME = 18
    ABORT = 19
    ROUND_OK = 20
    PLAN = 21


class ProtocolError(FerryError):
    pass


class PeerFailed(ProtocolError):
    """The peer said no (REFUSE, FAIL, AUTH_FAIL): its reason is the message."""


@dataclass(frozen=True)
class Frame:
    kind: Kind
    aux: int = 0
    a: int = 0
    b: int = 0


def pack(kind: Kind, aux: int = 0, a: int = 0, b: int = 0) -> bytes:
    return HEADER.pack(kind, aux, a, b)


def unpack(header: bytes) -> Frame:
    kind, aux, a, b = HEADER.unpack(header)
    try:
        return Frame(Kind(kind), aux, a, b)
    except ValueError:
        raise ProtocolError(f"unknown frame type {kind}") from None


def encode(message: dict) -> bytes:
    return json.dumps(message, sort_keys=True).encode()


def choose_version(offered: list[int], lowest: int = MIN_VERSION, highest: int = VERSION) -> int:
    """The highest version both ends speak (``offered`` is a checked [low, high]; this end
    speaks ``lowest`` to ``highest``), or a clear refusal."""
    low, high = offered
    best = min(high, highest)
    if best < max(low, lowest):
        raise ProtocolError(f"no common protocol version: peer speaks {low}-{high}, "
                            f"this engine {lowest}-{highest}")
    return best


def proof(token: bytes, role: str, first: str, second: str) -> str:
    """HMAC-SHA256 over the role and both nonces: each side proves the token, neither reveals it."""
    return hmac.new(token, f"{role}:{first}:{second}".encode(), hashlib.sha256).hexdigest()


def proof_ok(expected: str, given: str) -> bool:
    """``given`` is checked hex text (``messages``), so the constant-time compare cannot fail."""
    return hmac.compare_digest(expected, given)
