"""The checkpoint role's variables: documented defaults, the schedule's interval derived from the
policy, the command the schedule runs, bad values refused naming the variable. The role runs in
check mode against the controller itself (connection local) with no engine there, as on a fresh
host: it predicts and writes nothing. Its real runs are tested by tests/e2e and its molecule scenario."""

import json
import os

import pytest
import yaml

from test_engine_role_variables import ROOT, playbook

SPECS = os.path.join(ROOT, "roles", "checkpoint", "meta", "argument_specs.yml")
DEFAULTS = os.path.join(ROOT, "roles", "checkpoint", "defaults", "main.yml")
NAMES = ["state", "policy", "policy_file", "engine_venv", "state_dir", "interval", "scheduler", "prometheus_file",
         "replicate_to", "replicate_ssh_config", "replicate_ssh_options"]


def resolved(tmp_path, role_vars, *args):
    """(the role's values after a check-mode run on a host without the engine, the run)."""
    out = tmp_path / "values.json"
    values = {name: "{{ checkpoint_%s }}" % name for name in NAMES}
    values["command"] = "{{ _checkpoint_command }}"
    play_vars = {"checkpoint_engine_venv": str(tmp_path / "no-engine"),
                 "checkpoint_policy_file": str(tmp_path / "etc" / "checkpoints.yaml"), **role_vars}
    run = playbook(tmp_path, play_vars, [
        {"name": "The role", "ansible.builtin.include_role": {"name": "ferry.hypervisor.checkpoint", "public": True}},
        {"name": "Write the role's values", "vars": {"_values": values}, "check_mode": False,
         "ansible.builtin.copy": {"content": "{{ _values | to_json }}", "dest": str(out), "mode": "0600"}}],
        "--check", *args)
    return (json.loads(out.read_text()) if out.exists() else None), run


def test_the_defaults_are_the_documented_ones_and_check_mode_writes_nothing(tmp_path):
    values, run = resolved(tmp_path, {})
    assert run.returncode == 0, run.stdout
    options = yaml.safe_load(open(SPECS))["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted("checkpoint_" + name for name in NAMES)
    assert sorted(yaml.safe_load(open(DEFAULTS))) == sorted(options)
    for name in ("state", "policy", "scheduler", "prometheus_file"):
        assert values[name] == options["checkpoint_" + name]["default"], name
    assert int(values["interval"]) == 15
    assert not (tmp_path / "etc").exists(), "check mode wrote the policy's folder"


@pytest.mark.parametrize(("policy", "interval"), [
    ({"vms": {"a": {"frequently": 4, "frequent_minutes": 7}}}, 6),
    ({"templates": {"t": {"frequent_minutes": 1}}, "vms": {"a": {"use_template": "t"}}}, 1),
    ({"tags": {"db": {"frequent_minutes": 45}}}, 15),
    ({"vms": {"a": {"hourly": 24}}}, 15),
])
def test_the_interval_follows_the_shortest_frequent_minutes_as_a_divisor_of_60(tmp_path, policy, interval):
    values, run = resolved(tmp_path, {"checkpoint_policy": policy})
    assert run.returncode == 0, run.stdout
    assert int(values["interval"]) == interval


def test_the_schedule_runs_the_engine_and_writes_metrics_when_asked(tmp_path):
    values, run = resolved(tmp_path, {"checkpoint_prometheus_file": "/var/lib/node_exporter/ferry.prom"})
    assert run.returncode == 0, run.stdout
    assert values["command"].startswith(f"{tmp_path}/no-engine/bin/ferry checkpoint run --policy ")
    assert ">> /var/lib/ferry/checkpoint.log 2>&1;" in values["command"]
    assert "checkpoint check" in values["command"] and "--prometheus /var/lib/node_exporter/ferry.prom" in \
        values["command"]


def test_replication_logs_in_as_the_targets_inventory_says(tmp_path):
    inventory = tmp_path / "fleet.yml"
    h2 = {"ansible_host": "10.0.0.2", "ansible_user": "ops", "ansible_port": 2222}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"h2": h2}}}))
    values, run = resolved(tmp_path, {"checkpoint_replicate_to": "h2",
                                      "checkpoint_replicate_ssh_options": ["ProxyJump=bastion"]},
                           "-i", str(inventory))
    assert run.returncode == 0, run.stdout
    assert (" --replicate-to 10.0.0.2 --ssh-user ops --ssh-port 2222 --ssh-option=ProxyJump=bastion >> "
            in values["command"]), values["command"]


@pytest.mark.parametrize(("target", "words"), [("localhost", "is this host itself"),
                                               ("h9", "is not a host of the inventory")])
def test_a_replication_target_that_cannot_be_is_refused(tmp_path, target, words):
    values, run = resolved(tmp_path, {"checkpoint_replicate_to": target})
    assert run.returncode != 0 and f"checkpoint_replicate_to: {target} {words}" in run.stdout, run.stdout


@pytest.mark.parametrize(("role_vars", "words"), [
    ({"checkpoint_state": "gone"}, "checkpoint_state"),
    ({"checkpoint_scheduler": "at"}, "checkpoint_scheduler"),
    ({"checkpoint_policy": ["web1"]}, "checkpoint_policy"),
])
def test_bad_values_are_refused_naming_the_variable(tmp_path, role_vars, words):
    values, run = resolved(tmp_path, role_vars)
    assert run.returncode != 0 and values is None
    assert words in run.stdout and "Validating arguments against arg spec" in run.stdout, run.stdout
