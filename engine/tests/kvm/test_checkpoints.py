"""``ferry checkpoint run|check`` on real KVM, the clock given with ``--now``."""

import json
import threading

import pytest
import yaml

from support.cli import assert_sequence_continues

pytestmark = pytest.mark.kvm
GUEST = "builtin:selfcheck"
BUSY = "fill=20 rate=max hb=100"


@pytest.fixture
def fleet(ferry, tmp_path):
    """web1 (tag db) and web2 running, idle stopped; a policy covering all three."""
    for name, tags in (("web1", ["db"]), ("web2", []), ("idle", [])):
        ferry.define(tmp_path, name=name, vcpus=1, memory=32, kernel=GUEST, cmdline=BUSY, tags=tags)
    for name in ("web1", "web2"):
        ferry.ok("start", name)
        ferry.wait_heartbeats(name, 3)
    return ferry


def write_policy(tmp_path, document) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


POLICY = {"templates": {"base": {"hourly": 2, "daily": 1, "daily_hour": 2}},
          "vms": {"web2": {"use_template": "base"}, "idle": {"use_template": "base"}},
          "tags": {"db": {"use_template": "base", "hourly": 3}}}


def run(ferry, policy, now, *extra):
    return ferry.ok("checkpoint", "run", "--policy", policy, "--now", now, *extra, timeout=300)


def ids(ferry, name):
    return [snap["id"] for snap in ferry.ok("snapshot", "list", name)]


def by_name(report):
    return {vm["name"]: vm for vm in report["vms"]}


def test_runs_take_what_is_due_prune_by_count_and_keep_hand_made_ones(fleet, tmp_path):
    policy = write_policy(tmp_path, POLICY)
    fleet.ok("snapshot", "create", "web1", "--snapshot", "by-hand")
    first = by_name(run(fleet, policy, "2026-12-04T10:05:00Z"))
    assert first["web1"]["took"]["periods"] == ["hourly", "daily"]
    assert first["web1"]["took"]["id"] == "ckpt-20261204T100500Z-hourly-daily"
    assert first["idle"]["skipped"].startswith("not running")
    assert run(fleet, policy, "2026-12-04T10:40:00Z")["vms"][0]["took"] is None  # nothing due
    for hour in (11, 12, 13):
        run(fleet, policy, f"2026-12-04T{hour}:01:00Z")
    # web1 (db: hourly 3) keeps 3 hourly + the daily one; web2 keeps 2 hourly + the daily one.
    assert ids(fleet, "web1") == ["by-hand", "ckpt-20261204T100500Z-hourly-daily", "ckpt-20261204T110100Z-hourly",
                                  "ckpt-20261204T120100Z-hourly", "ckpt-20261204T130100Z-hourly"]
    assert ids(fleet, "web2") == ["ckpt-20261204T100500Z-hourly-daily", "ckpt-20261204T120100Z-hourly",
                                  "ckpt-20261204T130100Z-hourly"]
    origin = fleet.ok("snapshot", "list", "web2")[1]["origin"]
    assert origin == {"kind": "checkpoint", "policy": policy, "periods": "hourly", "time": "20261204T120100Z"}
    assert_sequence_continues(fleet.wait_heartbeats("web1", 5))


def test_dry_run_predicts_and_changes_nothing(fleet, tmp_path):
    policy = write_policy(tmp_path, POLICY)
    run(fleet, policy, "2026-12-04T10:05:00Z")
    before = ids(fleet, "web2")
    report = by_name(run(fleet, policy, "2026-12-05T03:00:00Z", "--dry-run"))
    assert report["web2"]["took"]["periods"] == ["hourly", "daily"]
    assert ids(fleet, "web2") == before
    text = fleet.run("checkpoint", "run", "--policy", policy, "--now", "2026-12-05T03:00:00Z", "--dry-run").out
    assert "web2: would take ckpt-20261205T030000Z-hourly-daily (hourly, daily)" in text


def test_protected_checkpoints_survive_and_cannot_be_deleted(fleet, tmp_path):
    policy = write_policy(tmp_path, {"vms": {"web2": {"hourly": 1}}})
    run(fleet, policy, "2026-12-04T10:00:00Z")
    fleet.ok("snapshot", "protect", "web2", "ckpt-20261204T100000Z-hourly")
    for hour in (11, 12):
        run(fleet, policy, f"2026-12-04T{hour}:00:00Z")
    assert ids(fleet, "web2") == ["ckpt-20261204T100000Z-hourly", "ckpt-20261204T120000Z-hourly"]
    refused = fleet.run("snapshot", "delete", "web2", "ckpt-20261204T100000Z-hourly")
    assert refused.code == 1 and "is protected; unprotect it first" in refused.err
    fleet.ok("snapshot", "unprotect", "web2", "ckpt-20261204T100000Z-hourly")
    run(fleet, policy, "2026-12-04T13:00:00Z")
    assert ids(fleet, "web2") == ["ckpt-20261204T130000Z-hourly"]


def test_hooks_see_the_checkpoint_and_a_failing_pre_hook_skips_it(fleet, tmp_path):
    log = tmp_path / "hooks.log"
    hook = f'echo "$FERRY_HOOK $FERRY_VM $FERRY_SNAPSHOT $FERRY_PERIODS $FERRY_STATUS" >> {log}'
    policy = write_policy(tmp_path, {"vms": {
        "web2": {"hourly": 1, "pre_hook": hook, "post_hook": hook},
        "web1": {"hourly": 1, "pre_hook": "echo database busy >&2; exit 3"}}})
    report = by_name(run(fleet, policy, "2026-12-04T10:00:00Z"))
    assert report["web1"]["skipped"] == "pre_hook: exit 3: database busy"
    assert ids(fleet, "web1") == []
    assert log.read_text().splitlines() == ["pre web2 ckpt-20261204T100000Z-hourly hourly ",
                                            "post web2 ckpt-20261204T100000Z-hourly hourly ok"]


def test_a_failed_take_does_not_stop_the_others_and_the_run_says_so(fleet, tmp_path):
    # A clash with an existing snapshot of that id makes web1's take fail.
    fleet.ok("snapshot", "create", "web1", "--snapshot", "ckpt-20261204T100000Z-hourly")
    policy = write_policy(tmp_path, {"vms": {"web1": {"hourly": 1}, "web2": {"hourly": 1}}})
    result = fleet.run("--json", "checkpoint", "run", "--policy", policy, "--now", "2026-12-04T10:00:00Z",
                       timeout=300)
    assert result.code == 1
    report = by_name(json.loads(result.out))
    assert "checkpoint ckpt-20261204T100000Z-hourly failed" in report["web1"]["error"]
    assert report["web2"]["took"]["id"] == "ckpt-20261204T100000Z-hourly"


def test_min_free_skips_the_take_and_says_how_much_is_free(fleet, tmp_path):
    policy = write_policy(tmp_path, {"vms": {"web2": {"hourly": 1, "min_free": "99.9%"}}})
    report = by_name(run(fleet, policy, "2026-12-04T10:00:00Z"))
    assert report["web2"]["skipped"].startswith("min_free: ") and ids(fleet, "web2") == []


def test_two_runs_at_once_one_is_refused(fleet, tmp_path):
    policy = write_policy(tmp_path, {"vms": {"web1": {"hourly": 1, "pre_hook": "sleep 2"}}})
    results = []
    threads = [threading.Thread(target=lambda: results.append(fleet.run(
        "checkpoint", "run", "--policy", policy, "--now", "2026-12-04T10:00:00Z", timeout=300)))
        for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.code for r in results) == [0, 1]
    assert any("another checkpoint run is under way" in r.err for r in results)
    assert ids(fleet, "web1") == ["ckpt-20261204T100000Z-hourly"]


def test_check_goes_from_ok_to_warn_to_crit_as_runs_stop(fleet, tmp_path):
    policy = write_policy(tmp_path, {"vms": {"web2": {"hourly": 2, "hourly_warn": "90m", "hourly_crit": "3h"}}})
    run(fleet, policy, "2026-12-04T10:00:00Z")
    prom = tmp_path / "ferry.prom"
    verdicts = []
    for now in ("2026-12-04T10:30:00Z", "2026-12-04T11:45:00Z", "2026-12-04T13:30:00Z"):
        result = fleet.run("checkpoint", "check", "--policy", policy, "--now", now, "--prometheus", str(prom))
        verdicts.append((result.code, result.out.splitlines()[0]))
    assert verdicts == [(0, "OK: 1 VMs, 1 periods fresh"), (1, "WARN: 1 problem"), (2, "CRIT: 1 problem")]
    last = fleet.run("checkpoint", "check", "--policy", policy, "--now", "2026-12-04T13:30:00Z").out
    assert "CRIT web2 hourly: newest checkpoint is 3h old, crit at 3h" in last
    text = prom.read_text()
    assert 'ferry_checkpoint_age_seconds{vm="web2",period="hourly"} 12600' in text
    assert 'ferry_checkpoint_status{vm="web2",period="hourly"} 2' in text
    assert 'ferry_checkpoint_count{vm="web2",period="hourly"} 1' in text


def test_check_with_a_bad_policy_is_unknown(fleet, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vms: {web2: {hourly: lots}}")
    result = fleet.run("checkpoint", "check", "--policy", str(bad))
    assert result.code == 3 and "UNKNOWN" in result.out and "vms.web2.hourly" in result.out
