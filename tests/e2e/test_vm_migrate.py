"""ferry.hypervisor.vm_migrate through ansible-playbook over real SSH: a live move h1 -> h2 of the
self-checking guest under write load, with progress lines on the controller, the heartbeat going
on at the destination without a gap or CORRUPT, exactly one copy afterwards, a second run that
changes nothing, the move back; check mode that only runs the pre-flight; refusals in one line."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from harness import task_results

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

NAME = "mod-move"
VM = {"name": NAME, "vcpus": 1, "memory": 128, "kernel": "builtin:selfcheck", "cmdline": "fill=40 rate=2000 hb=100"}


def move(**params) -> dict:
    return {"ferry.hypervisor.vm_migrate": dict({"name": NAME}, **params), "ignore_errors": True}


def test_a_live_move_there_and_back(ansible, engine_installed):
    ansible.tasks([{"ferry.hypervisor.vm": dict(VM, state="running")}]).expect_ok()

    checked = ansible.tasks([move(to="h2")], "--check", "--diff")
    (preflight,) = task_results(checked.expect_ok())
    assert preflight["changed"] is True and preflight["moved"] is False, preflight
    assert preflight["preflight"]["blockers"] == [] and preflight["preflight"]["memory"]["needed_mib"] >= 128
    assert ansible.status("h1", NAME)["state"] == "running" and ansible.status("h2", NAME) is None

    # A bandwidth cap makes the move last a few seconds, long enough for progress lines.
    run = ansible.tasks([move(to="h2", max_downtime=100, bandwidth="12M"), move(to="h2")])
    moved, again = task_results(run.expect_ok())
    assert moved["changed"] is True and moved["moved"] is True, moved
    report = moved["report"]
    assert report["outcome"] == "committed" and report["total_ms"] > 0 and report["downtime_ms"] > 0, report
    assert moved["vm"]["state"] == "running"
    assert again["changed"] is False and again["moved"] is False, again
    assert f"{NAME}: preparing the receiver on h2" in run.output, run.output
    if not re.search(rf"{NAME}: \S+ round \d+, +\d+% of \d+ MiB, \d+ MiB/s", run.output):
        run.fail("no progress line while the move ran")
    assert ansible.status("h1", NAME) is None, "the VM is still defined on the source"
    assert ansible.status("h2", NAME)["state"] == "running"
    seen = ansible.beats("h2", NAME)
    assert seen == list(range(seen[0], seen[0] + len(seen))), "the heartbeat sequence has a gap"

    back = ansible.tasks([move(to="h1")], host="h2")
    assert task_results(back.expect_ok())[0]["moved"] is True
    assert ansible.status("h2", NAME) is None and ansible.status("h1", NAME)["state"] == "running"
    ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}]).expect_ok()


def test_a_move_over_ssh_through_the_sources_ssh_config(ansible, engine_installed):
    """The receiver listens on h2's loopback only; h1's ssh reaches it with the lab's ssh config
    (its key and known hosts), logging in as h2's ansible_user."""
    ansible.tasks([{"ferry.hypervisor.vm": dict(VM, state="running")}]).expect_ok()
    run = ansible.tasks([move(to="h2", transport="ssh", ssh_config="{{ ferry_lab_dir }}/ssh_config")])
    (moved,) = task_results(run.expect_ok())
    assert moved["moved"] is True and moved["report"]["outcome"] == "committed", moved
    assert ansible.status("h1", NAME) is None and ansible.status("h2", NAME)["state"] == "running"
    seen = ansible.beats("h2", NAME)
    assert seen == list(range(seen[0], seen[0] + len(seen))), "the heartbeat sequence has a gap"
    ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}], host="h2").expect_ok()


def make_certificates(ansible, folder) -> None:
    """A CA, and for each lab host a certificate for its address, put at /etc/ferry/tls/ on it."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)
    openssl("req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ferry e2e CA")
    for host in ansible.lab.hosts:
        name = host["name"]
        openssl("req", "-newkey", "ed25519", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")
        with open(os.path.join(folder, f"{name}.ext"), "w") as handle:
            handle.write(f"subjectAltName=IP:{host['ipv4']},DNS:{name}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
        script = (f"mkdir -p -m 700 /etc/ferry/tls && cp {folder}/{name}.pem /etc/ferry/tls/host.pem && "
                  f"cp {folder}/{name}.key /etc/ferry/tls/host.key && cp {folder}/ca.pem /etc/ferry/tls/ca.pem")
        ansible.lab.exec(name, ["sh", "-c", script], check=True, timeout=30)


TLS = {"transport": "tls", "tls_cert": "/etc/ferry/tls/host.pem", "tls_key": "/etc/ferry/tls/host.key",
       "tls_ca": "/etc/ferry/tls/ca.pem"}


def test_a_move_over_mutual_tls_with_each_hosts_certificate(ansible, engine_installed, tmp_path):
    make_certificates(ansible, str(tmp_path))
    ansible.tasks([{"ferry.hypervisor.vm": dict(VM, state="running")}]).expect_ok()
    run = ansible.tasks([move(to="h2", **TLS)])
    (moved,) = task_results(run.expect_ok())
    assert moved["moved"] is True and moved["report"]["outcome"] == "committed", moved
    assert ansible.status("h1", NAME) is None and ansible.status("h2", NAME)["state"] == "running"
    seen = ansible.beats("h2", NAME)
    assert seen == list(range(seen[0], seen[0] + len(seen))), "the heartbeat sequence has a gap"

    # A source whose certificate the CA did not sign (h2's replaced by a self-signed one) is
    # refused by the receiver on h1; the VM stays where it runs.
    ansible.lab.exec("h2", ["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout",
                            "/etc/ferry/tls/host.key", "-out", "/etc/ferry/tls/host.pem", "-days", "1",
                            "-subj", "/CN=intruder"], check=True, capture_output=True, timeout=60)
    refused = task_results(ansible.tasks([move(to="h1", timeout=20, **TLS)], host="h2"))[0]
    assert refused["failed"] is True and "TLS" in refused["msg"], refused
    assert ansible.status("h2", NAME)["state"] == "running" and ansible.status("h1", NAME) is None
    # The receiver on h1 keeps waiting for a source that can prove itself until its own
    # timeout (timeout + 60 s); the tests after this one use h1, so wait for it to end.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and ansible.lab.exec(
            "h1", ["ls", "/var/lib/ferry/incoming"], capture_output=True, text=True, timeout=30).stdout.split():
        time.sleep(2)
    ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}], host="h2").expect_ok()


@pytest.mark.parametrize("params, message", [
    ({"to": "h1"}, "to: h1 is the host the task runs on; run it against the source"),
    ({"to": "nowhere"}, "to: 'nowhere' is not a host of the inventory"),
    ({"to": "h2", "name": "no-such-vm"}, "name: no VM named 'no-such-vm' on h1 or h2"),
    ({"to": "h2", "mode": "teleport"}, "value of mode must be one of: live, warm, cold, got: teleport"),
    ({"to": "h2", "transport": "ssh", "ssh_options": ["ProxyJump"]},
     "ssh_options: 'ProxyJump' is not KEY=VALUE (an ssh_config keyword, then a value on one line)"),
    ({"to": "h2", "transport": "tls", "tls_cert": "/c.pem"}, "transport is tls but all of the following are missing"),
])
def test_refusals_name_the_option_and_move_nothing(ansible, engine_installed, params, message):
    result = task_results(ansible.tasks([move(**params)]))[0]
    assert result["failed"] is True and message in result["msg"] and "\n" not in result["msg"], result


def hide_cpu_features(ansible, host: str, features: list[str]) -> None:
    """The engine role's ``engine_cpu_hidden`` on ``host``: its engine then offers a VM less."""
    role = {"ansible.builtin.include_role": {"name": "ferry.hypervisor.engine"},
            "vars": {"engine_cpu_hidden": features}}
    ansible.tasks([role], host=host).expect_ok()


# Features to hide on the destination, the first the source's guest sees serves.
SPARE_FEATURES = ("gfni", "clwb", "avx2", "mmxext", "3dnowprefetch", "umip")


def test_a_cpu_the_destination_lacks_is_refused_and_the_fleets_common_cpu_moves(ansible, engine_installed):
    vm = dict(VM, state="running")
    ansible.tasks([{"ferry.hypervisor.vm": vm}]).expect_ok()
    feature = next(name for name in SPARE_FEATURES if name in ansible.status("h1", NAME)["cpu_features"])
    hide_cpu_features(ansible, "h2", [feature])
    try:
        checked, = task_results(ansible.tasks([move(to="h2")], "--check"))
        real, = task_results(ansible.tasks([move(to="h2")]))
        for result in (checked, real):
            assert result["failed"] is True and result["moved"] is False, result
            assert result["msg"].startswith(f"cpu: h2 does not offer CPU features the VM sees on h1: {feature}"), result
            assert result["preflight"]["missing_cpu_features"] == [feature]
        assert ansible.status("h1", NAME)["state"] == "running" and ansible.status("h2", NAME) is None

        # The features both hosts offer (the cpu_baseline filter over their host_info), from the
        # VM's next boot: then it moves, and sees the same CPU on h2.
        common = "{{ [result_0, result_1] | ferry.hypervisor.cpu_baseline }}"
        ansible.tasks([{"ferry.hypervisor.host_info": {}},
                       {"ferry.hypervisor.host_info": {}, "delegate_to": "h2"},
                       {"ferry.hypervisor.vm": dict(vm, state="stopped", cpu=common)},
                       {"ferry.hypervisor.vm": dict(vm, state="running")}]).expect_ok()
        before = ansible.status("h1", NAME)
        assert feature not in before["cpu_features"] and isinstance(before["cpu"], list)
        moved, = task_results(ansible.tasks([move(to="h2")]).expect_ok())
        assert moved["moved"] is True and ansible.status("h1", NAME) is None
        assert ansible.status("h2", NAME)["cpu_features"] == before["cpu_features"]
    finally:
        hide_cpu_features(ansible, "h2", [])
        for host in ("h1", "h2"):
            ansible.tasks([{"ferry.hypervisor.vm": {"name": NAME, "state": "absent"}}], host=host)
