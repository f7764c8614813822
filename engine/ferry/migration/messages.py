"""What each migration message may hold, checked at one place before anything reads it.

Every JSON payload goes through ``read``: it must parse, be an object, nest
at most MAX_DEPTH levels, hold only valid text, and match the schema of its
frame kind for the direction it travels (a source reads TO_SOURCE, a
destination TO_DESTINATION). A field of the wrong type, a number out of
range or a string or list too long is a ProtocolError naming the field and
what is allowed. Fields outside the schema are dropped, so the code past
this point sees only checked values.

Sizes are checked from the frame header, before anything is read:
PRE_AUTH_MAX until the peer has proven the token, POST_AUTH_MAX after.
"""

from __future__ import annotations

import json
import math
import re

from .protocol import Frame, Kind, ProtocolError

PRE_AUTH_MAX = 4096
POST_AUTH_MAX = 16 * 1024 * 1024
MAX_DEPTH = 8
MAX_MEMORY = 1 << 50  # bytes; far above any host, far below what would overflow an offset
MAX_CHUNKS = MAX_MEMORY // (2 << 20)
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
HEX = re.compile(r"[0-9a-f]+")


def _shown(value) -> str:
    """A value as a refusal quotes it: short, on one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Int:
    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def check(self, value, name: str):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{name}: expected a whole number, got {_shown(value)}")
        if not self.low <= value <= self.high:
            raise ProtocolError(f"{name}: {_shown(value)} is out of range, allowed {self.low} to {self.high}")
        return value


class Number(Int):
    def check(self, value, name: str):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError(f"{name}: expected a finite number, got {_shown(value)}")
        if not self.low <= value <= self.high:
            raise ProtocolError(f"{name}: {_shown(value)} is out of range, allowed {self.low} to {self.high}")
        return value


class Text:
    def __init__(self, longest: int, choices: tuple[str, ...] = (), hex_digits: bool = False):
        self.longest, self.choices, self.hex_digits = longest, choices, hex_digits

    def check(self, value, name: str):
        if not isinstance(value, str):
            raise ProtocolError(f"{name}: expected text, got {_shown(value)}")
        if self.choices and value not in self.choices:
            raise ProtocolError(f"{name}: {_shown(value)} is not one of {', '.join(self.choices)}")
        if len(value) > self.longest:
            raise ProtocolError(f"{name}: {len(value)} characters, at most {self.longest} allowed")
        if self.hex_digits and not HEX.fullmatch(value):
            raise ProtocolError(f"{name}: expected lowercase hex digits, got {_shown(value)}")
        return value


class List:
    def __init__(self, item, longest: int, shortest: int = 0):
        self.item, self.longest, self.shortest = item, longest, shortest

    def check(self, value, name: str):
        if not isinstance(value, list):
            raise ProtocolError(f"{name}: expected a list, got {_shown(value)}")
        if not self.shortest <= len(value) <= self.longest:
            raise ProtocolError(f"{name}: {len(value)} items, allowed {self.shortest} to {self.longest}")
        return [self.item.check(item, f"{name}[{index}]") for index, item in enumerate(value)]


class Mapping:
    """An object its owner checks further (a VM definition); here only its size."""

    def __init__(self, most_keys: int):
        self.most_keys = most_keys

    def check(self, value, name: str):
        if not isinstance(value, dict):
            raise ProtocolError(f"{name}: expected an object, got {_shown(value)}")
        if len(value) > self.most_keys:
            raise ProtocolError(f"{name}: {len(value)} keys, at most {self.most_keys} allowed")
        return value


class Durations:
    """Named spans of time in milliseconds (a peer's steps, for the report)."""

    def __init__(self, most_keys: int):
        self.names = Text(32)
        self.values = Number(0, 1e9)
        self.most_keys = most_keys

    def check(self, value, name: str):
        Mapping(self.most_keys).check(value, name)
        return {self.names.check(key, f"{name} key"): self.values.check(item, f"{name} {_shown(key)}")
                for key, item in value.items()}


class Optional:
    def __init__(self, field, default):
        self.field, self.default = field, default


class Schema:
    def __init__(self, **fields):
        self.fields = fields

    def check(self, message: dict, kind: Kind) -> dict:
        checked = {}
        for key, field in self.fields.items():
            name = f"{kind.name} {key}"
            if key not in message:
                if not isinstance(field, Optional):
                    raise ProtocolError(f"{name}: required, missing")
                checked[key] = field.default
                continue
            checked[key] = (field.field if isinstance(field, Optional) else field).check(message[key], name)
        return checked


ENGINE = Optional(Text(64), "")
CAPS = Optional(List(Text(32), 32), [])
NONCE = Text(64, hex_digits=True)
PROOF = Text(64, hex_digits=True)
REASON = Optional(Text(1000), "")
VERSION_NUMBER = Int(0, U32)
PARTS = Optional(Durations(16), {})

# What a destination reads (sent by a source).
TO_DESTINATION = {
    Kind.HELLO: Schema(versions=List(VERSION_NUMBER, 2, 2), engine=ENGINE, caps=CAPS),
    Kind.AUTH: Schema(nonce=NONCE, proof=PROOF),
    Kind.OFFER: Schema(definition=Mapping(16), memory=Int(0, MAX_MEMORY),
                       mode=Optional(Text(4, ("live", "warm", "cold")), "live")),
    Kind.ROUND: Schema(round=Optional(Int(0, U32), 0), dirty=Optional(Int(0, MAX_MEMORY), 0),
                       waited_ms=Optional(Number(0, 1e12), 0.0)),
    Kind.SECTION: Schema(name=Text(64), checksum=Text(64, hex_digits=True)),
    Kind.PLAN: Schema(chunks=List(List(Int(0, MAX_CHUNKS), 2, 2), MAX_CHUNKS // 2 + 1)),
    Kind.PREPARE: Schema(chunks=List(Text(16, hex_digits=True), MAX_CHUNKS)),
    Kind.COMMIT: Schema(),
    Kind.QUERY: Schema(),
    Kind.ABORT: Schema(),
}

# What a source reads (sent by a destination).
TO_SOURCE = {
    Kind.HELLO: Schema(version=VERSION_NUMBER, engine=ENGINE, caps=CAPS, nonce=NONCE),
    Kind.AUTH_OK: Schema(proof=PROOF),
    Kind.AUTH_FAIL: Schema(reason=REASON),
    Kind.ACCEPT: Schema(),
    Kind.REFUSE: Schema(reason=REASON),
    Kind.ROUND_OK: Schema(parts=PARTS),
    Kind.PREPARED: Schema(parts=PARTS),
    Kind.FAIL: Schema(reason=REASON),
    Kind.DONE: Schema(parts=PARTS),
    Kind.OUTCOME: Schema(state=Text(9, ("committed", "prepared", "aborted"))),
}

# Frames whose payload is not one JSON message.
RAW = (Kind.MEM, Kind.ZERO)


def check_header(frame: Frame, reads: dict, limit: int) -> None:
    """Refuse a frame by its header alone: a kind this direction never carries, or a
    payload larger than allowed, before a byte of it is read or allocated."""
    if frame.kind not in reads and frame.kind not in RAW:
        raise ProtocolError(f"{frame.kind.name}: not a message this side receives")
    if frame.kind not in RAW and frame.a > limit:
        raise ProtocolError(f"{frame.kind.name}: message of {frame.a} bytes, at most {limit} allowed")
    if frame.kind is Kind.SECTION and frame.b > POST_AUTH_MAX:
        raise ProtocolError(f"SECTION: {frame.b} bytes of data, at most {POST_AUTH_MAX} allowed")


def read(reads: dict, kind: Kind, payload: bytes) -> dict:
    """The checked message of ``kind``, or a ProtocolError naming what is wrong."""
    schema = reads.get(kind)
    if schema is None:
        raise ProtocolError(f"{kind.name}: not a message this side receives")
    return schema.check(decode(payload, kind), kind)


def decode(payload: bytes, kind: Kind) -> dict:
    try:
        message = json.loads(payload, parse_constant=_no_constant)
    except RecursionError:
        raise ProtocolError(f"{kind.name}: bad message: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:  # also UnicodeDecodeError and over-long integers
        raise ProtocolError(f"{kind.name}: bad message: not JSON: {err}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{kind.name}: bad message: not an object")
    _check_shape(message, kind)
    return message


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _check_shape(message: dict, kind: Kind) -> None:
    """Nesting depth and text that can be written out again (no lone surrogates)."""
    pending = [(message, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ProtocolError(f"{kind.name}: bad message: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            pending.extend((item, depth + 1) for item in value.values())
            pending.extend((key, depth) for key in value)
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ProtocolError(f"{kind.name}: bad message: text that is not valid UTF-8") from None
