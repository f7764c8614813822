"""What every device is: a bus client with a versioned state object.

A device's guest-visible state lives in one dataclass deriving from
``DeviceState``. Snapshots and migration save exactly that object, tagged
with its ``VERSION``; a newer engine reads older versions through
``upgrade``, and an older engine refuses newer ones by name.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Callable, ClassVar


class StateVersionError(ValueError):
    """A saved state is newer than this engine understands."""


class VersionedState:
    """What every saved section's state is (a device's, and the vCPU and in-kernel ones
    above this layer): a ``VERSION``, and ``upgrade`` from each older one."""

    VERSION: ClassVar[int] = 1

    @classmethod
    def upgraded(cls, data: bytes, version: int, where: str, parse: Callable = bytes):
        """``data`` as written at ``version``, parsed and brought up to ``VERSION``.
        A newer version is refused before its bytes are read."""
        if version > cls.VERSION:
            raise StateVersionError(
                f"section {where}: state version {version} is newer than this engine's {cls.VERSION}")
        saved = parse(data)
        for old in range(version, cls.VERSION):
            saved = cls.upgrade(old, saved)
        return saved

    @classmethod
    def upgrade(cls, version: int, saved):
        """Turn the saved form of ``version`` into that of ``version + 1``."""
        raise StateVersionError(f"{cls.__name__}: no upgrade from version {version}")


@dataclass
class DeviceState(VersionedState):
    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, version: int, section: str = "") -> "DeviceState":
        where = section or cls.__name__
        values = cls.upgraded(data, version, where, json.loads)
        if not isinstance(values, dict):
            raise StateVersionError(f"section {where}: expected a JSON object of fields")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise StateVersionError(f"section {where}: unknown fields {sorted(unknown)}")
        # A saved state may come from a crafted file: a field of the wrong type would
        # only fail later, inside the running guest's I/O.
        wrong = sorted(name for name, value in values.items() if not _fits(value, hints[name]))
        if wrong:
            raise StateVersionError(f"section {where}: field {wrong[0]} is not of type {hints[wrong[0]]}")
        return cls(**values)


def _fits(value, hint) -> bool:
    """Whether a JSON value has the type a state field is annotated with."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):  # a float field may hold a whole number; a bool is never a number here
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    return isinstance(value, hint)


class Device:
    """Base of all devices. ``name`` is the device's section name (``serial.com1``)."""

    name: str = ""

    def save(self) -> DeviceState:
        raise NotImplementedError

    def load(self, state: DeviceState) -> None:
        raise NotImplementedError


IrqSetter = Callable[[bool], None]
"""Drives one interrupt line: True raises it, False lowers it."""
