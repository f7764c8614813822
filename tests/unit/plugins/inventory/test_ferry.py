"""The ferry.hypervisor.ferry inventory plugin, loaded as Ansible loads it, against fake
hypervisors reached through real processes (fake_ssh.py: a fake ssh client running the remote
command with the real /bin/sh, a fake engine answering as the shared FakeFerry), and once against
the real engine's command (the contract test).

Covered: the VMs and their ferry_* variables, the default groups, groups/keyed_groups/compose and
strict, hosts from an inventory group with their connection variables, a host down, timing out,
without engine, answering garbage or an engine error (each skipped with one warning, the others
kept), duplicate VM names, the cache, hosts asked concurrently, and hostile names and values."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest
import yaml

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader

from ansible_collections.ferry.hypervisor.tests.unit.plugins.inventory.fake_ssh import World
from ansible_collections.ferry.hypervisor.tests.unit.plugins.module_utils.fake_ferry import FakeFerry

PLUGIN = "ferry.hypervisor.ferry"


def plugin():
    """A new instance, as the inventory manager gets it for each source (conftest.py: the loader)."""
    loaded = inventory_loader.get_with_context(PLUGIN).object
    assert loaded is not None, f"{PLUGIN} did not load"
    return loaded


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_WORLD_DIR", str(tmp_path / "world"))
    return World(tmp_path / "world")


@pytest.fixture
def warnings(monkeypatch):
    """Every warning the plugin gives, as one line each."""
    module = sys.modules[type(plugin()).__module__]
    seen = []
    monkeypatch.setattr(module.display, "warning", lambda message, *args, **kwargs: seen.append(message))
    return seen


# The kernel file of the fake's VMs (the engine's definition check wants an ELF file).
KERNEL = {}


@pytest.fixture(autouse=True)
def kernel(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF")
    KERNEL["path"] = str(path)
    return str(path)


def vms(*specs):
    """A FakeFerry holding VMs ``(name, state)`` (``state`` running, paused or stopped)."""
    cli = FakeFerry()
    for name, state in specs:
        cli.answer("define", [], ["-"], json.dumps({"name": name, "vcpus": 2, "memory": 128, "kernel": KERNEL["path"],
                                                    "cmdline": "hb=1000"}))
        if state in ("running", "paused"):
            cli.answer("start", [name], [], None)
        if state == "paused":
            cli.answer("pause", [name], [], None)
    return cli


class Run:
    def __init__(self, data: InventoryData):
        self.data = data

    def hostvars(self, name: str) -> dict:
        return dict(self.data.get_host(name).get_vars())

    def groups(self) -> dict[str, list[str]]:
        """group -> its hosts' names (direct members), for the groups that have any."""
        return {name: sorted(host.name for host in group.hosts) for name, group in self.data.groups.items()
                if group.hosts}

    @property
    def hosts(self) -> list[str]:
        return sorted(self.data.hosts)


def run(tmp_path, world, data=None, flush=False, name="vms.ferry.yml", **options):
    """Parse a source with ``options`` (defaults: the world's ssh and engine); the inventory.
    ``flush``: as ansible-inventory --flush-cache."""
    config = {"plugin": PLUGIN, "ssh_executable": world.ssh, "engine_venv": world.venv, "timeout": 20}
    config.update(options)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    data = data or InventoryData()
    loaded = plugin()
    loaded.parse(data, DataLoader(), str(path), cache=not flush)
    if getattr(loaded, "_cache", None) is not None:
        loaded.update_cache_if_changed()
    return Run(data)


def test_the_vms_of_every_host_with_their_variables_and_groups(tmp_path, world, warnings, kernel):
    world.host("h1", vms(("web", "running"), ("db", "stopped")))
    world.host("h2", vms(("mail", "paused")))

    inventory = run(tmp_path, world, hosts=["h1", "h2"])

    assert inventory.hosts == ["db", "mail", "web"] and warnings == []
    web = inventory.hostvars("web")
    assert (web["ferry_host"], web["ferry_state"], web["ferry_vcpus"], web["ferry_memory"]) == ("h1", "running", 2, 128)
    assert web["ferry_pid"] == 4242 and web["ferry_kernel"] == kernel and web["ferry_cmdline"] == "hb=1000"
    assert isinstance(web["ferry_uptime"], int) and web["ferry_uptime"] > 0  # the fake started it long ago
    assert web["ferry_restored_from"] is None and web["ferry_duplicates"] == [] and web["ferry_error"] is None
    # Snapshots are asked for only with snapshots: true.
    assert web["ferry_snapshots"] is None and web["ferry_last_snapshot_age"] is None
    db = inventory.hostvars("db")
    assert (db["ferry_state"], db["ferry_pid"], db["ferry_uptime"]) == ("stopped", None, None)
    assert "ansible_connection" not in web and "ansible_host" not in web
    assert inventory.groups() == {
        "ferry_vms": ["db", "mail", "web"], "ferry_host_h1": ["db", "web"], "ferry_host_h2": ["mail"],
        "ferry_state_running": ["web"], "ferry_state_stopped": ["db"], "ferry_state_paused": ["mail"]}
    # One SSH call per host, the engine's command quoted for the remote shell.
    calls = world.log()
    assert sorted(call["host"] for call in calls) == ["h1", "h2"]
    assert shlex.split(calls[0]["command"]) == [os.path.join(world.venv, "bin", "ferry"), "--json", "list"]


def test_the_ssh_command_line(tmp_path, world):
    world.host("h1.example.com", vms(("web", "running")))
    run(tmp_path, world, ssh_config="/etc/ferry/ssh_config", ssh_args=["-o", "ControlMaster=auto"],
        state_dir="/srv/ferry", timeout=7,
        hosts=[{"name": "hv1", "ansible_host": "h1.example.com", "ansible_port": 2222, "ansible_user": "admin",
                "ansible_ssh_private_key_file": "/keys/id", "ansible_ssh_common_args": "-o ProxyJump=bastion",
                "ansible_ssh_extra_args": "-o 'SendEnv=A B'"}])
    (call,) = world.log()
    assert call["argv"][1:-1] == ["-o", "BatchMode=yes", "-F", "/etc/ferry/ssh_config", "-o", "ControlMaster=auto",
                                  "-o", "ProxyJump=bastion", "-o", "SendEnv=A B", "-o", "ConnectTimeout=7",
                                  "-p", "2222", "-l", "admin", "-i", "/keys/id", "--", "h1.example.com"]
    assert shlex.split(call["command"])[1:] == ["--json", "list", "--state-dir", "/srv/ferry"]


def test_hosts_from_an_inventory_group_with_their_connection_variables(tmp_path, world, warnings):
    world.host("10.0.0.1", vms(("web", "running")))
    world.host("10.0.0.2", vms(("db", "running")))
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump({"all": {"children": {
        "hypervisors": {"hosts": {"hv1": {"ansible_host": "10.0.0.1"},
                                  "hv2": {"ansible_host": "10.0.0.2", "ansible_user": "root"}},
                        "vars": {"ansible_user": "{{ lab_user }}", "lab_user": "admin", "ansible_port": "2222",
                                 "ansible_ssh_common_args": "-o StrictHostKeyChecking=accept-new"}},
        "others": {"hosts": {"web1": {}}}}}}))
    data = InventoryData()
    inventory_loader.get("ansible.builtin.yaml").parse(data, DataLoader(), str(hosts))

    inventory = run(tmp_path, world, data=data, hosts_from_group="hypervisors")

    assert warnings == []
    assert (inventory.hostvars("web")["ferry_host"], inventory.hostvars("db")["ferry_host"]) == ("hv1", "hv2")
    argv = {call["host"]: call["argv"] for call in world.log()}
    # The group's template rendered with the host's variables; a host's own value wins over its group's.
    assert argv["10.0.0.1"][-7:-1] == ["-p", "2222", "-l", "admin", "--", "10.0.0.1"]
    assert "-l" in argv["10.0.0.2"] and argv["10.0.0.2"][argv["10.0.0.2"].index("-l") + 1] == "root"
    assert "StrictHostKeyChecking=accept-new" in argv["10.0.0.1"]


def test_group_vars_files_with_use_vars_plugins(tmp_path, world):
    world.host("h1", vms(("web", "running")))
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "hypervisors.yml").write_text("ansible_user: from-group-vars\n")
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump({"all": {"children": {"hypervisors": {"hosts": {"h1": {}}}}}}))

    def user(**options):
        data = InventoryData()
        inventory_loader.get("ansible.builtin.yaml").parse(data, DataLoader(), str(hosts))
        data.processed_sources.append(str(hosts))  # as the inventory manager records it
        run(tmp_path, world, data=data, hosts_from_group="hypervisors", **options)
        argv = world.log()[-1]["argv"]
        return argv[argv.index("-l") + 1] if "-l" in argv else None

    assert user() is None  # Ansible reads group_vars/ after the inventory
    assert user(use_vars_plugins=True) == "from-group-vars"


def test_a_group_that_is_not_there_yet_is_named(tmp_path, world):
    expected = r"hosts_from_group: the inventory has no group 'hypervisors' yet \(its source must come before this one\)"
    with pytest.raises(AnsibleParserError, match=expected):
        run(tmp_path, world, hosts_from_group="hypervisors")


def test_no_hypervisors_at_all_is_an_error(tmp_path, world):
    with pytest.raises(AnsibleParserError, match="no hypervisors"):
        run(tmp_path, world)


@pytest.mark.parametrize("entry, reason", [
    ({"down": "ssh: connect to host h2 port 22: Connection refused"}, "ssh: connect to host h2 port 22: Connection refused"),
    ({"down": "root@h2: Permission denied (publickey)."}, "ssh: root@h2: Permission denied (publickey)."),
    ({"garbage": "Traceback (most recent call last):\n  oops"}, "no JSON on its output: 'oops'"),
    ({"garbage": '{"not": "a list"}'}, "--json list did not answer a list of VMs"),
    ({"fail": "list: no state directory /var/lib/ferry"}, "list: no state directory /var/lib/ferry"),
])
def test_a_host_that_does_not_answer_is_reported_and_skipped(tmp_path, world, warnings, entry, reason):
    world.host("h1", vms(("web", "running")))
    world.host("h2", **entry)
    world.host("h3", vms(("db", "stopped")))

    inventory = run(tmp_path, world, hosts=["h1", "h2", "h3"])

    assert inventory.hosts == ["db", "web"]
    assert len(warnings) == 1 and warnings[0].startswith("ferry.hypervisor.ferry: skipped hypervisor h2: ")
    assert reason in warnings[0] and "\n" not in warnings[0]
    assert "ferry_host_h2" not in inventory.groups()


def test_unknown_host_and_missing_engine_are_reported(tmp_path, world, warnings):
    world.host("h1", vms(("web", "running")))
    world.host("h2", vms(("db", "running")))

    inventory = run(tmp_path, world, hosts=["h1", "nowhere", {"name": "h2", "engine_venv": "/nonexistent/venv"}])

    assert inventory.hosts == ["web"]
    assert warnings == [
        "ferry.hypervisor.ferry: skipped hypervisor nowhere: ssh: Could not resolve hostname nowhere: "
        "Name or service not known",
        "ferry.hypervisor.ferry: skipped hypervisor h2: the Ferry engine is not installed on this host "
        "(no /nonexistent/venv/bin/ferry): run the ferry.hypervisor.engine role"]


def test_a_host_that_hangs_is_given_up_after_the_timeout(tmp_path, world, warnings):
    world.host("h1", vms(("web", "running")))
    world.host("h2", sleep=60)
    started = time.monotonic()

    inventory = run(tmp_path, world, hosts=["h1", "h2"], timeout=2)

    assert time.monotonic() - started < 20
    assert inventory.hosts == ["web"]
    assert warnings == ["ferry.hypervisor.ferry: skipped hypervisor h2: no answer within 2 s (timeout)"]


def test_hosts_are_asked_concurrently(tmp_path, world):
    for index in range(4):
        world.host(f"h{index}", vms((f"vm{index}", "running")), sleep=2.5)

    def overlap(max_workers):
        for name in ("ssh.log",):
            path = os.path.join(world.dir, name)
            if os.path.exists(path):
                os.remove(path)
        inventory = run(tmp_path, world, hosts=[f"h{index}" for index in range(4)], max_workers=max_workers)
        assert len(inventory.hosts) == 4
        calls = world.log()
        # The most calls under way at one moment.
        return max(sum(1 for other in calls if other["start"] <= call["start"] < other["end"]) for call in calls)

    assert overlap(4) == 4
    assert overlap(2) == 2


def test_snapshots_in_one_more_call_per_host(tmp_path, world):
    cli = vms(("web", "running"), ("db", "running"), ("idle", "stopped"))
    cli.answer("snapshot create", ["web"], ["--snapshot", "before-upgrade", "--tag", "a b"], None)
    world.host("h1", cli)
    world.host("h2", vms())  # no VMs: no second call

    inventory = run(tmp_path, world, hosts=["h1", "h2"], snapshots=True)

    web, db = inventory.hostvars("web"), inventory.hostvars("db")
    assert [s["id"] for s in web["ferry_snapshots"]] == ["before-upgrade"]
    assert web["ferry_snapshots"][0]["tags"] == ["a b"]
    assert web["ferry_last_snapshot_age"] > 0  # the fake's snapshot is from 2026-12-03
    assert db["ferry_snapshots"] == [] and db["ferry_last_snapshot_age"] is None
    calls = world.log()
    assert sorted(call["host"] for call in calls) == ["h1", "h1", "h2"]
    asked = sorted(entry["argv"][1:] for entry in world.log("ferry.log"))
    assert asked == [["--json", "list"], ["--json", "list"]] + sorted(
        ["--json", "snapshot", "list", "--", name] for name in ("db", "idle", "web"))


def test_a_vm_on_two_hosts_is_the_running_copy(tmp_path, world, warnings):
    world.host("h1", vms(("web", "stopped"), ("db", "stopped")))
    world.host("h2", vms(("web", "running"), ("db", "stopped")))

    inventory = run(tmp_path, world, hosts=["h1", "h2"])

    web, db = inventory.hostvars("web"), inventory.hostvars("db")
    assert (web["ferry_host"], web["ferry_state"]) == ("h2", "running")
    assert web["ferry_duplicates"] == [{"host": "h1", "state": "stopped"}]
    # Between equals the host listed first.
    assert db["ferry_host"] == "h1" and db["ferry_duplicates"] == [{"host": "h2", "state": "stopped"}]
    assert inventory.groups()["ferry_host_h1"] == ["db"] and inventory.groups()["ferry_host_h2"] == ["web"]
    assert sorted(warnings) == [
        "ferry.hypervisor.ferry: VM db is on h1 (stopped), h2 (stopped); the inventory has the copy on h1 (stopped)",
        "ferry.hypervisor.ferry: VM web is on h1 (stopped), h2 (running); the inventory has the copy on h2 (running)"]


def test_groups_keyed_groups_and_compose(tmp_path, world):
    world.host("h1", vms(("web", "running"), ("db", "stopped")))
    world.host("h2", vms(("mail", "running")))

    inventory = run(tmp_path, world, hosts=["h1", "h2"], default_groups=False,
                    compose={"ansible_host": "ferry_host", "big": "ferry_memory * 4"},
                    groups={"up": "ferry_state == 'running'", "on_h1": "ferry_host == 'h1'"},
                    keyed_groups=[{"key": "ferry_state", "prefix": "vm"}, {"key": "ferry_vcpus | string", "prefix": "cpus"},
                                  {"key": "ferry_host", "prefix": "on", "separator": "-"}])

    assert inventory.groups() == {"up": ["mail", "web"], "on_h1": ["db", "web"], "vm_running": ["mail", "web"],
                                  "vm_stopped": ["db"], "cpus_2": ["db", "mail", "web"],
                                  "on_h2": ["mail"]}
    assert inventory.hostvars("mail")["ansible_host"] == "h2" and int(inventory.hostvars("mail")["big"]) == 512  # a string before 2.19


def test_strict_makes_a_bad_expression_an_error(tmp_path, world):
    world.host("h1", vms(("web", "running")))
    loose = run(tmp_path, world, hosts=["h1"], compose={"x": "ferry_nothing.here"}, groups={"g": "ferry_nothing > 1"})
    assert "x" not in loose.hostvars("web") and "g" not in loose.groups()
    with pytest.raises(AnsibleError, match="Could not set x for host web"):
        run(tmp_path, world, hosts=["h1"], compose={"x": "ferry_nothing.here"}, strict=True)
    with pytest.raises(AnsibleParserError, match="Could not add host web to group g"):
        run(tmp_path, world, hosts=["h1"], groups={"g": "ferry_nothing > 1"}, strict=True)


def test_the_cache_answers_the_second_time(tmp_path, world, warnings):
    world.host("h1", vms(("web", "running")))
    world.host("h2", down="ssh: connect to host h2 port 22: No route to host")
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache"),
             "cache_timeout": 600}

    first = run(tmp_path, world, hosts=["h1", "h2"], **cache)
    assert len(world.log()) == 2 and os.listdir(tmp_path / "cache")

    world.host("h1", vms(("web", "running"), ("new", "running")))
    second = run(tmp_path, world, hosts=["h1", "h2"], **cache)
    assert len(world.log()) == 2, "the second parse asked the hosts again"
    assert second.hosts == first.hosts == ["web"] and second.groups() == first.groups()
    assert second.hostvars("web")["ferry_uptime"] == first.hostvars("web")["ferry_uptime"]
    assert warnings[1] == warnings[0] + " (from the cache)"

    flushed = run(tmp_path, world, hosts=["h1", "h2"], flush=True, **cache)  # --flush-cache
    assert len(world.log()) == 4 and flushed.hosts == ["new", "web"]
    assert run(tmp_path, world, hosts=["h1", "h2"], **cache).hosts == ["new", "web"] and len(world.log()) == 4


def test_become_runs_the_engine_under_sudo(tmp_path, world):
    world.host("h1", vms(("web", "running")))
    world.host("h2", vms(("db", "running")))
    inventory = run(tmp_path, world, snapshots=True, hosts=[
        {"name": "h1", "ansible_become": True, "ansible_become_user": "ferry"}, "h2"])
    assert inventory.hosts == ["db", "web"]
    assert [entry["argv"][:5] for entry in world.log("sudo.log")] == [["-n", "-u", "ferry", "--", world.venv + "/bin/ferry"]] * 2
    expected = r"^hosts\[0\]: ansible_become_method: the become method 'su' is not supported \(sudo only\)$"
    with pytest.raises(AnsibleParserError, match=expected):
        run(tmp_path, world, hosts=[{"name": "h1", "ansible_become": "yes", "ansible_become_method": "su"}])


def test_a_local_host_needs_no_ssh(tmp_path, world):
    world.host("local", vms(("web", "running")))
    inventory = run(tmp_path, world, hosts=[{"name": "localhost", "ansible_connection": "local"}])
    assert inventory.hostvars("web")["ferry_host"] == "localhost" and world.log() == []


# --- hostile names and values ---

@pytest.mark.parametrize("hosts, message", [
    (["../etc"], r"hosts\[0\]: '\.\./etc' is not a host name"),
    (["h1; touch pwned"], r"hosts\[0\]: 'h1; touch pwned' is not a host name"),
    (["-oProxyCommand=touch pwned"], r"hosts\[0\]: '-oProxyCommand=touch pwned' is not a host name"),
    ([{"name": "h1", "ansible_host": "-oProxyCommand=touch pwned"}],
     r"hosts\[0\]: ansible_host: '-oProxyCommand=touch pwned' is not a host name or address"),
    ([{"name": "h1", "ansible_user": "-oProxyCommand=x"}], r"hosts\[0\]: ansible_user: '-oProxyCommand=x' is not a user name"),
    ([{"name": "h1", "ansible_port": "22; touch pwned"}], r"hosts\[0\]: ansible_port: '22; touch pwned' is not a port number"),
    ([{"name": "h1", "ansible_port": 0}], r"hosts\[0\]: ansible_port: 0 is not a port number"),
    ([{"name": "h1", "ansible_connection": "docker"}],
     r"hosts\[0\]: ansible_connection: the connection 'docker' is not supported \(ssh or local\)"),
    ([{"name": "h1", "engine_venv": "venv"}], r"hosts\[0\]: engine_venv: 'venv' is not an absolute path"),
    ([{"name": "h1", "ansible_ssh_common_args": "-o 'unclosed"}], r"hosts\[0\]: ansible_ssh_common_args: No closing quotation"),
    ([{"name": "h1", "proxy": "x"}], r"hosts\[0\]: unknown key 'proxy' \(known: name, ansible_host"),
    ([{"ansible_host": "h1"}], r"hosts\[0\]: \{'ansible_host': 'h1'\} is neither a host name nor a dictionary with a name"),
    (["h1", "h1"], r"hosts\[1\]: 'h1' is listed twice"),
])
def test_hostile_hosts_are_refused_naming_the_entry(tmp_path, world, hosts, message):
    world.host("h1", vms(("web", "running")))
    with pytest.raises(AnsibleParserError, match=message):
        run(tmp_path, world, hosts=hosts)
    assert world.log() == [] and not os.path.exists("pwned")


@pytest.mark.parametrize("option, value, message", [
    ("engine_venv", "opt/ferry", "engine_venv: 'opt/ferry' is not an absolute path"),
    ("state_dir", "/var/lib/ferry\ntouch pwned", "state_dir: '/var/lib/ferry\\ntouch pwned' is not a path"),
    ("ssh_args", ["-o", "A\0B"], "ssh_args: contains a NUL character"),
    ("timeout", 0, "timeout: 0 is not a number of at least 1"),
    ("max_workers", -1, "max_workers: -1 is not a number of at least 1"),
])
def test_bad_options_are_refused_naming_the_option(tmp_path, world, option, value, message):
    world.host("h1", vms(("web", "running")))
    with pytest.raises(AnsibleParserError) as raised:
        run(tmp_path, world, hosts=["h1"], **{option: value})
    assert str(raised.value).splitlines()[0].startswith(message), str(raised.value)
    assert world.log() == []


def test_shell_metacharacters_in_paths_are_quoted(tmp_path, world, warnings):
    world.host("h1", vms(("web", "running")))
    world.host("h2", vms(("db", "running")))
    pwned = tmp_path / "pwned"
    hostile = f"/srv/$(touch {pwned}); touch {pwned}; `touch {pwned}`"

    inventory = run(tmp_path, world, state_dir=hostile, hosts=["h1", {"name": "h2", "engine_venv": hostile}])

    assert not pwned.exists()
    assert inventory.hosts == ["web"]
    (asked,) = world.log("ferry.log")
    assert asked["argv"][1:] == ["--json", "list", "--state-dir", hostile]
    assert warnings == ["ferry.hypervisor.ferry: skipped hypervisor h2: the Ferry engine is not installed on this "
                        f"host (no {hostile}/bin/ferry): run the ferry.hypervisor.engine role"]


def test_a_group_host_with_hostile_variables_is_skipped(tmp_path, world, warnings):
    world.host("h1", vms(("web", "running")))
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump({"all": {"children": {"hypervisors": {"hosts": {
        "h1": {}, "h2": {"ansible_host": "-oProxyCommand=touch pwned"}, "h3": {"ansible_port": "ssh"}}}}}}))
    data = InventoryData()
    inventory_loader.get("ansible.builtin.yaml").parse(data, DataLoader(), str(hosts))

    inventory = run(tmp_path, world, data=data, hosts_from_group="hypervisors")

    assert inventory.hosts == ["h1", "h2", "h3", "web"]
    assert warnings == [
        "ferry.hypervisor.ferry: skipped hypervisor h2: h2: ansible_host: '-oProxyCommand=touch pwned' is not a "
        "host name or address (letters, digits and '_ . : % -', starting with a letter, digit or _)",
        "ferry.hypervisor.ferry: skipped hypervisor h3: h3: ansible_port: 'ssh' is not a port number"]
    assert [call["host"] for call in world.log()] == ["h1"]


def test_what_the_engine_says_is_data_not_a_template(tmp_path, world, warnings):
    pwned = tmp_path / "pwned"
    cli = vms(("web", "running"))
    cli.vms["web"]["cmdline"] = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % pwned
    cli.vms["../../etc"] = dict(cli.vms["web"], name="../../etc")
    world.host("h1", cli)

    inventory = run(tmp_path, world, hosts=["h1"], compose={"cmd": "ferry_cmdline"},
                    groups={"odd": "ferry_cmdline is search('lookup')"})

    assert inventory.hosts == ["web"]
    assert warnings == ["ferry.hypervisor.ferry: skipped a VM of h1: '../../etc' is not a VM name"]
    assert inventory.groups()["odd"] == ["web"]
    assert str(inventory.hostvars("web")["cmd"]).startswith("{{ lookup(")
    assert not pwned.exists()


def test_a_vm_named_as_a_host_already_there_is_skipped(tmp_path, world, warnings):
    world.host("h1", vms(("h1", "running"), ("web", "running")))
    data = InventoryData()
    data.add_host("h1")
    inventory = run(tmp_path, world, data=data, hosts=["h1"])
    assert inventory.hosts == ["h1", "web"] and "ferry_state" not in inventory.hostvars("h1")
    assert warnings == ["ferry.hypervisor.ferry: skipped VM h1 of h1: the inventory already has a host of that name"]


def test_the_documented_example_works(tmp_path, world, warnings):
    example = yaml.safe_load(sys.modules[type(plugin()).__module__].EXAMPLES)
    world.host("10.0.0.1", vms(("web", "running")))
    world.host("192.0.2.13", vms(("db", "stopped")))
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump({"all": {"children": {"hypervisors": {"hosts": {"hv1": {"ansible_host": "10.0.0.1"}}}}}}))
    data = InventoryData()
    inventory_loader.get("ansible.builtin.yaml").parse(data, DataLoader(), str(hosts))
    example.update(cache_connection=str(tmp_path / "cache"))

    inventory = run(tmp_path, world, data=data, **example)

    assert warnings == []
    assert inventory.hostvars("db")["ferry_host"] == "hv3" and inventory.hostvars("web")["ferry_host"] == "hv1"
    # hv3 becomes root: its listing and its snapshot lists run under sudo.
    assert [entry["argv"][:2] for entry in world.log("sudo.log")] == [["-n", "--"]] * 2
    groups = inventory.groups()
    assert groups["stale_backups"] == ["db", "web"] and "big" not in groups
    assert [hosts for name, hosts in groups.items() if name.startswith("kernel_")] == [["db", "web"]]
    assert inventory.hostvars("web")["ansible_host"] == "web.vms.example.com"
    assert float(inventory.hostvars("web")["memory_gib"]) == 0.125


def test_only_its_own_source_files(tmp_path):
    loaded = plugin()
    for name, accepted in (("vms.ferry.yml", True), ("vms.ferry.yaml", True), ("vms.yml", False), ("ferry.yml", False)):
        (tmp_path / name).write_text("plugin: ferry.hypervisor.ferry\n")
        assert loaded.verify_file(str(tmp_path / name)) is accepted, name


# --- the contract: the real engine's command and the fake give the same inventory ---

def real_engine(tmp_path):
    """An engine venv whose ferry runs this checkout's engine (imported as this test imports it),
    and that command."""
    command = tmp_path / "real-venv" / "bin" / "ferry"
    command.parent.mkdir(parents=True)
    path = shlex.quote(os.pathsep.join(sys.path))
    command.write_text(f'#!/bin/sh\nPYTHONPATH={path} exec "{sys.executable}" -m ferry.cli "$@"\n')
    command.chmod(0o755)
    return str(tmp_path / "real-venv"), str(command)


def both(tmp_path, world, steps):
    """Run ``steps`` [(command, positional, options, data)] on the real engine and on a FakeFerry
    over one state directory each, then each host alone through the plugin (with snapshots):
    {'real'|'fake': {vm: its variables}}."""
    venv, command = real_engine(tmp_path)
    states = {host: tmp_path / f"state-{host}" for host in ("real", "fake")}
    cli = FakeFerry()
    for state in states.values():
        state.mkdir()
    for verb, positional, options, data in steps:
        argv = [command, "--json", *verb.split(), *options, "--state-dir", str(states["real"])]
        argv += ["--", *positional] if positional else []
        proc = subprocess.run(argv, input=data, text=True, capture_output=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        cli.answer(verb, positional, [*options, "--state-dir", str(states["fake"])], data)
    world.host("real")
    world.host("fake", cli)
    seen = {}
    for host in ("real", "fake"):
        one = run(tmp_path, world, snapshots=True, state_dir=str(states[host]), name=f"{host}.ferry.yml",
                  hosts=[{"name": host, "engine_venv": venv} if host == "real" else host])
        seen[host] = {name: {key: (value.replace(str(states[host]), "STATE") if isinstance(value, str) else value)
                             for key, value in one.hostvars(name).items() if key not in ("ferry_host", "group_names")}
                      for name in one.hosts}
    return seen


def test_the_fake_engine_answers_as_the_real_one(tmp_path, world, warnings, kernel):
    definitions = [{"name": "web", "vcpus": 2, "memory": 128, "kernel": kernel, "cmdline": "hb=1000"},
                   {"name": "db", "vcpus": 1, "memory": 64, "kernel": kernel, "initrd": kernel}]

    seen = both(tmp_path, world, [("define", [], ["-"], json.dumps(definition)) for definition in definitions])

    assert sorted(seen["real"]) == ["db", "web"] and warnings == []
    for name in ("db", "web"):
        for key in sorted(set(seen["real"][name]) | set(seen["fake"][name])):
            assert seen["real"][name].get(key, "MISSING") == seen["fake"][name].get(key, "MISSING"), (name, key)


# Counters and timings of a live VM: only their kind is compared. The real engine's exit counter
# (fake_ferry.VOLATILE) the fake does not keep, and its boot_count stays at 0 across starts.
# Values of the moment or of the machine the test runs on (the CPU a guest sees): compared by type.
MEASURED = ("ferry_pid", "ferry_started_at", "ferry_uptime", "ferry_last_snapshot_age", "ferry_boot_count",
            "ferry_cpu_features")


@pytest.mark.kvm
def test_the_fake_engine_answers_as_the_real_one_for_running_vms_with_snapshots(tmp_path, world):
    definition = {"name": "web", "vcpus": 1, "memory": 64, "kernel": "builtin:selfcheck", "cmdline": "hb=1000"}
    steps = [("define", [], ["-"], json.dumps(definition)), ("start", ["web"], [], None),
             ("snapshot create", ["web"], ["--snapshot", "s1", "--tag", "before"], None),
             ("restore", ["web", "s1"], ["--as", "clone"], None)]
    try:
        seen = both(tmp_path, world, steps)
    finally:
        for name in ("web", "clone"):
            subprocess.run([str(tmp_path / "real-venv" / "bin" / "ferry"), "poweroff", "--state-dir",
                            str(tmp_path / "state-real"), name],
                           capture_output=True, timeout=60, check=False)
    differences = []
    for name in ("web", "clone"):
        real, fake = seen["real"][name], seen["fake"][name]
        assert sorted(set(real) - {"ferry_exits"}) == sorted(fake), name
        for key in sorted(fake):
            if key in MEASURED:
                same = isinstance(real[key], type(fake[key])) or (real[key] is None and fake[key] is None)
            elif key == "ferry_snapshots":
                same = ([(s["id"], s["tags"], s["mode"], sorted(s)) for s in real[key]] ==
                        [(s["id"], s["tags"], s["mode"], sorted(s)) for s in fake[key]])
            else:
                same = real[key] == fake[key]
            if not same:
                differences.append((name, key, real[key], fake[key]))
    assert differences == []
    assert seen["real"]["clone"]["ferry_restored_from"] == {"vm": "web", "snapshot": "s1"}
