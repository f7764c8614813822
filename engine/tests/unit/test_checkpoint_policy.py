"""The checkpoint policy file: resolution order, and every bad input refused in one line."""

import pytest
import yaml

from ferry.checkpoint import policy
from ferry.checkpoint.policy import PolicyError

EXAMPLE = """
templates:
  production: {frequently: 4, frequent_minutes: 15, hourly: 24, daily: 7, monthly: 3,
               daily_hour: 2, take: true, prune: true, live: true}
vms:
  web1: {use_template: production, daily: 30}
  scratch: {use_template: production, take: false}
tags:
  db: {use_template: production, hourly: 48}
"""


def example():
    return policy.parse(yaml.safe_load(EXAMPLE), "example")


def test_a_vm_gets_its_template_then_its_own_keys():
    web1 = example().for_vm("web1")
    assert (web1.keep("daily"), web1.keep("hourly"), web1["daily_hour"], web1["frequent_minutes"]) == (30, 24, 2, 15)
    assert example().for_vm("scratch")["take"] is False


def test_tags_apply_before_the_vm_entry_and_an_uncovered_vm_is_none():
    rules = policy.parse({"templates": {"t": {"hourly": 5}}, "tags": {"db": {"use_template": "t", "hourly": 48}},
                          "vms": {"pg": {"hourly": 12}}})
    assert rules.for_vm("pg", ("db",)).keep("hourly") == 12  # the VM's own entry is applied last
    assert rules.for_vm("other", ("db",)).keep("hourly") == 48
    assert rules.for_vm("other", ("web",)) is None


def test_templates_may_build_on_templates():
    rules = policy.parse({"templates": {"base": {"daily": 7, "daily_hour": 3}, "long": {"use_template": "base",
                                                                                      "daily": 90}},
                          "vms": {"a": {"use_template": ["long"]}}})
    assert (rules.for_vm("a").keep("daily"), rules.for_vm("a")["daily_hour"]) == (90, 3)


def test_defaults_take_nothing():
    covered = policy.parse({"vms": {"a": {}}}).for_vm("a")
    assert covered.active_periods() == []


def test_ages_and_sizes_read_as_people_write_them():
    entry = policy.parse({"vms": {"a": {"hourly": 1, "hourly_warn": "90m", "hourly_crit": "6h", "min_free": "20G"}}})
    vm = entry.for_vm("a")
    assert (vm.age_limit("hourly", "warn"), vm.age_limit("hourly", "crit")) == (5400, 21600)
    assert vm["min_free"] == {"bytes": 20 * 2**30}
    assert policy.parse({"vms": {"a": {"min_free": "10%"}}}).for_vm("a")["min_free"] == {"percent": 10.0}


def test_default_ages_follow_the_period():
    vm = policy.parse({"vms": {"a": {"frequently": 2, "frequent_minutes": 10}}}).for_vm("a")
    assert (vm.age_limit("frequently", "warn"), vm.age_limit("frequently", "crit")) == (900, 1800)


@pytest.mark.parametrize("document, words", [
    ([], "expected a mapping of templates, vms, tags"),
    ({"vm": {}}, "'vm' is not a policy key"),
    ({"vms": {"../etc": {}}}, "vms: '../etc' is not a valid VM name"),
    ({"vms": {"a": {"daily": -1}}}, "vms.a.daily: expected a whole number 0 to 100000, got -1"),
    ({"vms": {"a": {"daily": True}}}, "vms.a.daily: expected a whole number"),
    ({"vms": {"a": {"daily": "7"}}}, "vms.a.daily: expected a whole number"),
    ({"vms": {"a": {"daily_hour": 24}}}, "vms.a.daily_hour: expected a whole number 0 to 23"),
    ({"vms": {"a": {"frequent_minutes": 0}}}, "vms.a.frequent_minutes: expected a whole number 1 to 1440"),
    ({"vms": {"a": {"take": "yes"}}}, "vms.a.take: expected true or false"),
    ({"vms": {"a": {"dayly": 7}}}, "vms.a: 'dayly' is not a policy key"),
    ({"vms": {"a": {"use_template": "nope"}}}, "vms.a.use_template: no template 'nope'"),
    ({"vms": {"a": {"use_template": 3}}}, "vms.a.use_template: expected a template name"),
    ({"templates": {"x": {"use_template": "y"}, "y": {"use_template": "x"}}}, "uses itself (x -> y -> x)"),
    ({"vms": {"a": {"hourly_warn": "soon"}}}, "vms.a.hourly_warn: expected a duration like 90m"),
    ({"vms": {"a": {"min_free": "lots"}}}, "vms.a.min_free: expected a size like 20G"),
    ({"vms": {"a": {"min_free": "150%"}}}, "a share must lie between 0% and 100%"),
    ({"vms": {"a": {"pre_hook": ""}}}, "vms.a.pre_hook: expected a shell command"),
    ({"vms": {"a": {"pre_hook": "x" * 5000}}}, "vms.a.pre_hook: expected a shell command"),
    ({"tags": {"-x": {}}}, "tags: '-x' is not a valid tag"),
    ({"vms": {"a": []}}, "vms.a: expected a mapping of policy keys"),
    ({"vms": ["a"]}, "vms: expected a mapping of names to settings"),
])
def test_bad_policies_are_refused_in_one_line_naming_the_key(document, words):
    with pytest.raises(PolicyError) as err:
        policy.parse(document, "p.yaml")
    assert words in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("p.yaml")


def test_a_file_that_is_not_a_policy_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    for content, words in ((b"vms: [unclosed", "not valid YAML"), (b"vms: \xff", "not valid YAML"),
                           (b"#" * (policy.MAX_FILE + 1), "larger than 256 KiB")):
        path.write_bytes(content)
        with pytest.raises(PolicyError, match=words):
            policy.load(path)
    with pytest.raises(PolicyError, match="cannot read: No such file"):
        policy.load(tmp_path / "missing.yaml")
    path.write_text("[" * 10000)
    with pytest.raises(PolicyError, match="not valid YAML"):
        policy.load(path)


def test_an_empty_policy_covers_nothing(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("")
    assert policy.load(path).for_vm("a") is None
