"""The drain mark: a host emptied for maintenance (``ferry drain``) takes no VM from elsewhere,
neither an arriving migration nor a new definition, until ``ferry undrain``. So a balancer or a
placement run cannot put VMs back onto a host while it is being worked on.

``drained.json`` in the state directory: ``{"since": UNIX TIME, "reason": TEXT}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import inputs
from ..errors import Conflict, FerryError
from . import statedir

FILE = "drained.json"
MAX_REASON = 256


def read(root: Path) -> dict | None:
    """The mark, or None when the host is not drained."""
    record = statedir.read_record(root / FILE)
    return record or None


def mark(root: Path, reason: str = "") -> dict:
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
        raise FerryError(f"reason: {inputs.shown(reason)} is not allowed, expected one line of printable text "
                         f"of at most {MAX_REASON} characters")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = read(root) or {"since": time.time(), "reason": reason}
    record["reason"] = reason or record["reason"]
    statedir.write_atomic(root / FILE, json.dumps(record, sort_keys=True))
    return record


def clear(root: Path) -> bool:
    """Remove the mark; False if there was none."""
    try:
        (root / FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def refuse_arrivals(root: Path, what: str) -> None:
    """Refuse ``what`` (an arriving VM, a new one) on a drained host, in one line."""
    record = read(root)
    if record is not None:
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record.get("since", 0)))
        reason = f" ({record['reason']})" if record.get("reason") else ""
        raise Conflict(f"{what}: this host is drained since {since}{reason} and takes no VM from elsewhere; "
                       "ferry undrain ends that")
