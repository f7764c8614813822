"""``--transport ssh`` without a network: the ssh command line built from the flags, and the
ssh process (a stand-in here) tied to the channel's life (bad flags: test_migration_cli)."""

import os
from pathlib import Path

import pytest

from ferry.migration import protocol, transport
from ferry.migration.protocol import Kind
from ferry.migration.transport import LinkError, SshOptions, ssh_argv



def test_without_flags_ssh_and_its_config_decide_the_user_port_and_key():
    argv = ssh_argv("h2", 7400, SshOptions(), timeout=10)
    assert argv == ["ssh", "-W", "127.0.0.1:7400", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                    "-o", "ConnectTimeout=10", "--", "h2"]


def test_every_flag_and_the_operators_options_come_before_the_connect_timeout():
    options = SshOptions(user="ops", key=Path("/k/id"), known_hosts=Path("/k/my hosts"), port=2222,
                         config=Path("/k/config"), options=("ProxyJump=jump", "ConnectTimeout=3"))
    argv = ssh_argv("dest", 7411, options, timeout=2.5)
    assert argv == ["ssh", "-W", "127.0.0.1:7411", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                    "-F", "/k/config", "-l", "ops", "-p", "2222", "-i", "/k/id",
                    "-o", 'UserKnownHostsFile="/k/my hosts"', "-o", "ProxyJump=jump", "-o", "ConnectTimeout=3",
                    "-o", "ConnectTimeout=3", "--", "dest"]


def test_a_host_that_looks_like_an_option_stays_the_host():
    argv = ssh_argv("-oProxyCommand=touch /tmp/x", 7400, SshOptions(), timeout=10)
    assert argv[-2:] == ["--", "-oProxyCommand=touch /tmp/x"]


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """An ``ssh`` first on PATH that runs the shell snippet it is given, recording its arguments."""
    def install(body: str) -> Path:
        script = tmp_path / "bin" / "ssh"
        script.parent.mkdir(exist_ok=True)
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n{body}\n')
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
        return tmp_path / "argv"
    return install


def test_what_ssh_says_when_it_gives_up_is_the_one_line_error(fake_ssh):
    fake_ssh('echo "@@@ WARNING @@@" >&2; echo "Host key for h2 has changed." >&2; echo >&2; '
             'echo "Host key verification failed." >&2; exit 255')
    channel = transport.connect("h2:7400", "ssh", link_timeout=5)
    with pytest.raises(LinkError) as failure:  # on sending (ssh may have gone already) or on reading
        channel.send(Kind.HELLO, {})
        channel.recv_frame()
    assert str(failure.value) == "ssh to h2: Host key for h2 has changed.; Host key verification failed."
    channel.close()
    assert channel.conn.process.returncode == 255


def test_a_clean_end_of_the_link_is_no_ssh_error(fake_ssh):
    fake_ssh("exit 0")
    channel = transport.connect("h2:7400", "ssh", link_timeout=5)
    with pytest.raises(LinkError, match="^link closed by the peer$"):
        channel.recv_frame()
    channel.close()


def test_bytes_and_memory_pass_through_ssh_and_closing_reaps_it(fake_ssh, tmp_path):
    argv_file = fake_ssh("exec cat")  # a loop back: what the source sends comes back to it
    channel = transport.connect("-h2:7411", "ssh", ssh=SshOptions(user="ops"), link_timeout=5)
    assert channel.plain  # sendfile works on the AF_UNIX end
    channel.send(Kind.HELLO, {"versions": [1]})
    assert protocol.unpack(channel.recv_exact(protocol.HEADER.size)).kind == Kind.HELLO
    channel.recv_exact(len(protocol.encode({"versions": [1]})))
    memory = tmp_path / "memory"
    memory.write_bytes(os.urandom(1 << 20))

    class Memory:
        fd = os.open(memory, os.O_RDONLY)

    channel.send_memory(4096, 65536, Memory)
    assert protocol.unpack(channel.recv_exact(protocol.HEADER.size)).kind == Kind.MEM
    assert channel.recv_exact(65536) == memory.read_bytes()[4096:4096 + 65536]
    os.close(Memory.fd)
    channel.close()
    assert channel.conn.process.returncode == 0
    assert argv_file.read_text().splitlines()[-4:] == ["-o", "ConnectTimeout=10", "--", "-h2"]


def test_an_ssh_that_does_not_end_is_killed_on_close(fake_ssh, monkeypatch):
    monkeypatch.setattr(transport, "SSH_EXIT_WAIT", 0.2)
    fake_ssh("exec sleep 60 < /dev/null")
    channel = transport.connect("h2:7400", "ssh", link_timeout=5)
    channel.close()
    assert channel.conn.process.returncode == -9


def test_a_missing_ssh_client_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LinkError, match="^ssh to h2: cannot run ssh: No such file or directory$"):
        transport.connect("h2:7400", "ssh")

