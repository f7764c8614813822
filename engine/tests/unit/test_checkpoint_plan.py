"""What a checkpoint run takes and prunes, on a fake clock (UTC throughout)."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from ferry.checkpoint import plan, policy
from ferry.checkpoint.plan import Checkpoint

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def vm(**keys):
    return policy.parse({"vms": {"a": keys}}).for_vm("a")


def simulate(rules, times, protect=()):
    """Run the plan at each time; return (every checkpoint ever taken, those left)."""
    taken, alive = [], []
    for now in times:
        periods = plan.due_periods(rules, alive, now)
        if periods:
            new = Checkpoint(plan.checkpoint_id(now, periods), now, frozenset(periods),
                             protected=len(taken) in protect)
            taken.append(new)
            alive.append(new)
        gone = {c.id for c in plan.to_prune(rules, alive)}
        alive = [c for c in alive if c.id not in gone]
    return taken, alive


@pytest.mark.parametrize(("period", "keys", "now", "slot"), [
    ("hourly", {"hourly_min": 30}, "2026-12-04T10:29", "2026-12-04T09:30"),
    ("hourly", {"hourly_min": 30}, "2026-12-04T10:30", "2026-12-04T10:30"),
    ("daily", {"daily_hour": 2}, "2026-12-04T01:59", "2026-12-03T02:00"),
    ("daily", {"daily_hour": 2}, "2026-01-01T00:10", "2025-12-31T02:00"),
    ("weekly", {"weekly_wday": 0}, "2026-12-04T12:00", "2026-11-29T00:00"),  # a Friday; Sunday before
    ("weekly", {"weekly_wday": 5, "weekly_hour": 13}, "2026-12-04T12:00", "2026-11-27T13:00"),
    ("monthly", {"monthly_mday": 31}, "2026-12-04T00:00", "2026-11-30T00:00"),  # November has 30 days
    ("monthly", {"monthly_mday": 1}, "2026-01-01T00:00", "2026-01-01T00:00"),
    ("monthly", {"monthly_mday": 15}, "2026-01-14T00:00", "2025-12-15T00:00"),
    ("yearly", {"yearly_mon": 2, "yearly_mday": 29}, "2026-03-01T00:00", "2026-02-28T00:00"),
    ("yearly", {"yearly_mon": 6}, "2026-05-01T00:00", "2025-06-01T00:00"),
    ("frequently", {"frequent_minutes": 15}, "2026-12-04T10:44:59", "2026-12-04T10:30"),
])
def test_the_latest_slot_of_each_period(period, keys, now, slot):
    assert plan.latest_slot(period, vm(**keys), at(now)) == at(slot)


def test_one_checkpoint_serves_every_period_due_and_a_second_run_takes_nothing():
    rules = vm(hourly=2, daily=2, frequently=2)
    now = at("2026-12-04T10:05")
    assert plan.due_periods(rules, [], now) == ["frequently", "hourly", "daily"]
    first = Checkpoint("c1", now, frozenset(["frequently", "hourly", "daily"]))
    assert plan.due_periods(rules, [first], now + timedelta(minutes=5)) == []
    assert plan.due_periods(rules, [first], now + timedelta(minutes=15)) == ["frequently"]


def test_a_missed_slot_is_taken_at_the_next_run_once():
    rules = vm(daily=3, daily_hour=2)
    last = Checkpoint("c1", at("2026-12-01T02:00"), frozenset(["daily"]))
    later = at("2026-12-04T09:00")  # the host was down for three daily slots
    assert plan.due_periods(rules, [last], later) == ["daily"]
    caught_up = Checkpoint("c2", later, frozenset(["daily"]))
    assert plan.due_periods(rules, [last, caught_up], later + timedelta(hours=1)) == []


def test_take_off_takes_nothing_and_prune_off_prunes_nothing():
    old = [Checkpoint(f"c{i}", at("2026-12-01T00:00") + timedelta(hours=i), frozenset(["hourly"])) for i in range(5)]
    assert plan.due_periods(vm(hourly=1, take=False), old, at("2026-12-04T00:00")) == []
    assert plan.to_prune(vm(hourly=1, prune=False), old) == []
    assert [c.id for c in plan.to_prune(vm(hourly=1), old)] == ["c0", "c1", "c2", "c3"]


def test_a_period_set_to_zero_keeps_none_of_its_own():
    both = Checkpoint("c1", at("2026-12-01T00:00"), frozenset(["hourly", "daily"]))
    hourly = Checkpoint("c2", at("2026-12-01T01:00"), frozenset(["hourly"]))
    assert [c.id for c in plan.to_prune(vm(daily=1), [both, hourly])] == ["c2"]


def test_protected_and_held_checkpoints_are_never_pruned():
    old = [Checkpoint("p", at("2026-01-01T00:00"), frozenset(["hourly"]), protected=True),
           Checkpoint("h", at("2026-01-01T01:00"), frozenset(["hourly"]), held=True),
           Checkpoint("x", at("2026-01-01T02:00"), frozenset(["hourly"])),
           Checkpoint("n", at("2026-01-01T03:00"), frozenset(["hourly"]))]
    assert [c.id for c in plan.to_prune(vm(hourly=1), old)] == ["x"]


def test_only_checkpoints_a_policy_made_are_seen_by_origin_never_by_name():
    assert plan.from_origin("ckpt-20261204T000000Z-daily", {"kind": "manual"}) is None
    assert plan.from_origin("mine", {"kind": "checkpoint", "time": "yesterday", "periods": "daily"}) is None
    assert plan.from_origin("mine", {"kind": "checkpoint", "time": "20261204T000000Z", "periods": ""}) is None
    made = plan.from_origin("any-name", plan.origin(at("2026-12-04T00:00"), ["hourly", "daily"], "p.yaml"))
    assert (made.time, made.periods) == (at("2026-12-04T00:00"), {"hourly", "daily"})


def windows_oracle(times, key):
    """The checkpoints of one period, told independently of ``plan``: the first run in each window."""
    first = {}
    for now in times:
        first.setdefault(key(now), now)
    return sorted(first.values())


KEEP = {"frequently": 4, "hourly": 24, "daily": 7, "weekly": 4, "monthly": 3, "yearly": 2}
WINDOWS = {
    "frequently": lambda t: int(t.timestamp()) // 900,
    "hourly": lambda t: (t - timedelta(minutes=5)).strftime("%Y%m%d%H"),  # hourly_min 5
    "daily": lambda t: (t - timedelta(hours=2)).date(),  # daily_hour 2
    "weekly": lambda t: (t - at("2024-12-30T00:00")).days // 7,  # a Monday, weekly_wday 1
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


def irregular_year(seed: int) -> list[datetime]:
    """A year of runs every 1 to 90 minutes, with some host outages of up to three days."""
    rng, now, times = random.Random(seed), at("2025-01-01T00:00"), []
    while now < at("2026-01-01T00:00"):
        times.append(now)
        now += timedelta(minutes=rng.randint(1, 90), seconds=rng.randint(0, 59))
        if rng.random() < 0.002:
            now += timedelta(hours=rng.randint(1, 72))
    return times


@pytest.mark.parametrize("seed", [1, 2])
def test_a_year_of_irregular_runs_keeps_exactly_the_newest_of_each_period(seed):
    rules = vm(**KEEP, frequent_minutes=15, hourly_min=5, daily_hour=2)
    times = irregular_year(seed)
    taken, alive = simulate(rules, times)
    for period, keep in KEEP.items():
        expected = windows_oracle(times, WINDOWS[period])
        assert [c.time for c in taken if period in c.periods] == expected, period
        # The newest of each period stay; older ones stay only as another period's newest.
        assert set(expected[-keep:]) <= {c.time for c in alive if period in c.periods}, period
    kept_by_some = {c.time for period, keep in KEEP.items() for c in
                    sorted((c for c in taken if period in c.periods), key=lambda c: c.time)[-keep:]}
    assert {c.time for c in alive} == kept_by_some


def test_protected_checkpoints_survive_a_year_of_pruning():
    rules = vm(hourly=3)
    times = [at("2025-01-01T00:00") + timedelta(hours=h) for h in range(24 * 30)]
    taken, alive = simulate(rules, times, protect={5, 100})
    assert {taken[5].id, taken[100].id} <= {c.id for c in alive}
    assert len(alive) == 3 + 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=6000), min_size=1, max_size=80),
       st.dictionaries(st.sampled_from(policy.PERIODS), st.integers(min_value=0, max_value=5)))
def test_never_more_than_the_counts_and_never_the_newest_of_a_kept_period(gaps, keep):
    rules = vm(**keep)
    times, now = [], at("2026-01-01T00:00")
    for gap in gaps:
        now += timedelta(minutes=gap)
        times.append(now)
    taken, alive = simulate(rules, times)
    assert len(alive) <= sum(keep.values())
    for period, count in keep.items():
        of_period = [c for c in taken if period in c.periods]
        if count and of_period:
            assert of_period[-1] in alive
