"""What people type, checked in one place: VM names, snapshot ids, durations.

Names and ids become folder names under the state directory, so a name that passes
here can never reach outside it: no '/', no leading '.', no control
characters. Patterns are matched against the whole string (``fullmatch``),
so a trailing newline does not slip through as ``$`` would let it.
"""

from __future__ import annotations

import math
import re

from .errors import FerryError

VM_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
SNAPSHOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
TAG_RULE = "letters, digits, '_', '.', ':', '-'; at most 63; starts with a letter or digit"
VM_NAME_RULE = "lowercase letters, digits, '.', '_', '-'; at most 63; starts with a letter or digit"
SNAPSHOT_ID_RULE = "letters, digits, '_', '.', ':', '-'; at most 128; starts with a letter or digit"


class InvalidName(FerryError):
    """A name or id that is not allowed; the message names the field."""


class InvalidValue(FerryError):
    """A number that is not allowed; the message names the field and the range."""


def vm_name(value, field: str = "name") -> str:
    if not isinstance(value, str) or not VM_NAME.fullmatch(value):
        raise InvalidName(f"{field}: {shown(value)} is not a valid VM name ({VM_NAME_RULE})")
    return value


def snapshot_id(value, field: str = "snapshot") -> str:
    if not isinstance(value, str) or not SNAPSHOT_ID.fullmatch(value):
        raise InvalidName(f"{field}: {shown(value)} is not a valid snapshot id ({SNAPSHOT_ID_RULE})")
    return value


def tag(value, field: str = "tags") -> str:
    if not isinstance(value, str) or not TAG.fullmatch(value):
        raise InvalidName(f"{field}: {shown(value)} is not a valid tag ({TAG_RULE})")
    return value


def shown(value) -> str:
    """The value as one short line: an error must never span lines or flood the terminal."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_positive(value, zero: bool = False) -> bool:
    """A finite number above 0 (or from 0 when ``zero``); booleans are not numbers here."""
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and (value > 0 or zero and value == 0))


def seconds(value, field: str = "timeout", zero: bool = False) -> float:
    """A duration in seconds: a finite number above 0 (or from 0 when ``zero``)."""
    if not is_positive(value, zero):
        low = "0 or more" if zero else "more than 0"
        raise InvalidValue(f"{field}: {shown(value)} is not allowed, expected a number of seconds, {low}")
    return float(value)
