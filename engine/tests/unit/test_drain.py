"""``ferry drain`` / ``undrain``: a drained host takes no arriving VM and no new one, says so in
one line, and shows the mark in host-info; VMs already there carry on being managed."""

import json

import pytest

from test_define_cli import VM, ferry, json_error


def define(tmp_path, name):
    return ferry(tmp_path, "--json", "define", "-", stdin=json.dumps(dict(VM, name=name)))


def test_a_drained_host_refuses_new_vms_and_arrivals_until_undrained(tmp_path):
    assert define(tmp_path, "old")[0] == 0
    code, out, _ = ferry(tmp_path, "--json", "drain", "--reason", "kernel upgrade")
    assert code == 0 and json.loads(out)["drained"]["reason"] == "kernel upgrade"

    refused = json_error(define(tmp_path, "new"))
    assert refused["kind"] == "conflict"
    assert refused["error"].startswith("define new: this host is drained since ")
    assert "(kernel upgrade) and takes no VM from elsewhere; ferry undrain ends that" in refused["error"]
    token = tmp_path / "token"
    token.write_text("ab" * 32)
    token.chmod(0o600)
    arriving = json_error(ferry(tmp_path, "--json", "receive", "web", "--listen", "127.0.0.1:7499",
                                "--token-file", str(token), "--detach"))
    assert arriving["error"].startswith("receive web: this host is drained")
    assert not (tmp_path / "state" / "incoming" / "web").exists()

    # What is already here stays manageable.
    again = ferry(tmp_path, "--json", "define", "--replace", "-", stdin=json.dumps(dict(VM, name="old", memory=32)))
    assert again[0] == 0, again
    info = json.loads(ferry(tmp_path, "--json", "host-info")[1])
    assert info["drained"]["reason"] == "kernel upgrade" and info["drained"]["since"] > 0
    assert "DRAINED (kernel upgrade)" in ferry(tmp_path, "host-info")[1]

    assert json.loads(ferry(tmp_path, "--json", "undrain")[1]) == {"drained": None, "was_drained": True}
    assert json.loads(ferry(tmp_path, "--json", "host-info")[1])["drained"] is None
    assert define(tmp_path, "new")[0] == 0
    assert ferry(tmp_path, "undrain")[1] == "not drained; nothing to do\n"


def test_draining_twice_keeps_the_first_time(tmp_path):
    first = json.loads(ferry(tmp_path, "--json", "drain")[1])["drained"]
    second = json.loads(ferry(tmp_path, "--json", "drain", "--reason", "later")[1])["drained"]
    assert second["since"] == first["since"] and second["reason"] == "later"


@pytest.mark.parametrize("reason", ["two\nlines", "x" * 300, "bell\a"])
def test_a_bad_reason_is_one_line_naming_it(tmp_path, reason):
    error = json_error(ferry(tmp_path, "--json", "drain", "--reason", reason))
    assert error["error"].startswith("reason: ") and "\n" not in error["error"]
    assert json.loads(ferry(tmp_path, "--json", "host-info")[1])["drained"] is None
