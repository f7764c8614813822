"""What a checkpoint run does for one VM, decided from the clock alone (UTC throughout).

Each period has slots: ``frequently`` every ``frequent_minutes``, ``hourly`` at
``hourly_min``, ``daily`` at ``daily_hour:daily_min``, and so on. A period is due when
its latest slot has passed and no checkpoint of that period was taken since; a slot
missed (the host was down) is taken at the next run, once. One checkpoint serves every
period due at once (one pause for the guest), and its origin records them.

Pruning keeps, per period, the newest ``keep`` checkpoints of that period; a checkpoint
no period keeps goes, unless it is protected or a replica still needs it. Only
checkpoints this policy made (origin kind ``checkpoint``) are ever considered.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .policy import PERIODS, VmPolicy

ORIGIN_KIND = "checkpoint"
ID_PREFIX = "ckpt-"
STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as the plan sees it: its id, the run time it was taken for, its periods."""
    id: str
    time: datetime
    periods: frozenset
    protected: bool = False
    held: bool = False  # the newest a replica shares: the base of the next send


def latest_slot(period: str, policy: VmPolicy, now: datetime) -> datetime:
    """The newest slot of ``period`` at or before ``now``."""
    if period == "frequently":
        step = policy["frequent_minutes"] * 60
        return datetime.fromtimestamp(int(now.timestamp()) // step * step, timezone.utc)
    if period == "hourly":
        slot = now.replace(minute=policy["hourly_min"], second=0, microsecond=0)
        return slot if slot <= now else slot - timedelta(hours=1)
    if period == "daily":
        slot = now.replace(hour=policy["daily_hour"], minute=policy["daily_min"], second=0, microsecond=0)
        return slot if slot <= now else slot - timedelta(days=1)
    if period == "weekly":
        back = (now.isoweekday() % 7 - policy["weekly_wday"]) % 7  # cron's days: 0 is Sunday
        slot = (now - timedelta(days=back)).replace(hour=policy["weekly_hour"], minute=policy["weekly_min"],
                                                     second=0, microsecond=0)
        return slot if slot <= now else slot - timedelta(days=7)
    if period == "monthly":
        slot = _in_month(now.year, now.month, policy, "monthly")
        return slot if slot <= now else _in_month(*_month_before(now.year, now.month), policy, "monthly")
    slot = _in_month(now.year, policy["yearly_mon"], policy, "yearly")
    return slot if slot <= now else _in_month(now.year - 1, policy["yearly_mon"], policy, "yearly")


def _month_before(year: int, month: int) -> tuple[int, int]:
    return (year, month - 1) if month > 1 else (year - 1, 12)


def _in_month(year: int, month: int, policy: VmPolicy, period: str) -> datetime:
    """The period's day in that month; a month without that day uses its last."""
    day = min(policy[f"{period}_mday"], calendar.monthrange(year, month)[1])
    return datetime(year, month, day, policy[f"{period}_hour"], policy[f"{period}_min"], tzinfo=timezone.utc)


def due_periods(policy: VmPolicy, checkpoints: list[Checkpoint], now: datetime) -> list[str]:
    """The periods a checkpoint taken now would serve (none when ``take`` is off)."""
    if not policy["take"]:
        return []
    return [period for period in policy.active_periods()
            if not any(period in c.periods and c.time >= latest_slot(period, policy, now) for c in checkpoints)]


def to_prune(policy: VmPolicy, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """The checkpoints no period keeps, oldest first; none when ``prune`` is off."""
    if not policy["prune"]:
        return []
    newest_first = sorted(checkpoints, key=lambda c: (c.time, c.id), reverse=True)
    kept = set()
    for period in PERIODS:
        of_period = [c.id for c in newest_first if period in c.periods]
        kept.update(of_period[:policy.keep(period)])
    return [c for c in reversed(newest_first) if c.id not in kept and not c.protected and not c.held]


def checkpoint_id(now: datetime, periods: list[str]) -> str:
    return f"{ID_PREFIX}{now.strftime(STAMP)}-{'-'.join(periods)}"


def origin(now: datetime, periods: list[str], source: str) -> dict:
    """What the snapshot's manifest records: the truth pruning goes by (never the id)."""
    return {"kind": ORIGIN_KIND, "policy": source, "periods": " ".join(periods), "time": now.strftime(STAMP)}


def from_origin(snapshot_id: str, record: dict, protected: bool = False, held: bool = False) -> Checkpoint | None:
    """The snapshot as a checkpoint of a policy, or None if a policy did not make it."""
    if record.get("kind") != ORIGIN_KIND:
        return None
    try:
        time = datetime.strptime(record.get("time", ""), STAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        return None  # not one this engine wrote: never a candidate for pruning
    periods = frozenset(p for p in str(record.get("periods", "")).split() if p in PERIODS)
    if not periods:
        return None
    return Checkpoint(snapshot_id, time, periods, protected, held)
