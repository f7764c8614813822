"""Bad values for ``ferry migrate`` and ``ferry receive``: one line naming the option, no traceback."""

import os
import socket
import subprocess
import sys

import pytest


def ferry(tmp_path, *args):
    env = {**os.environ, "FERRY_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "ferry.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def one_line_naming(done, *words):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], done.stderr
    return lines[0]



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BAD_NUMBERS = ["-1", "0", "nan", "inf", "-inf", "ten"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("option", ["--max-downtime", "--timeout", "--link-timeout"])
def test_migrate_refuses_a_meaningless_number(tmp_path, token, option, value):
    done = ferry(tmp_path, "migrate", "m1", "--to", "127.0.0.1:7400", "--token-file", str(token), f"{option}={value}")
    one_line_naming(done, f"argument {option}", repr(value), "above zero")


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("option", ["--timeout", "--link-timeout"])
def test_receive_refuses_a_meaningless_number(tmp_path, token, option, value):
    done = ferry(tmp_path, "receive", "m1", "--listen", "127.0.0.1:7400", "--token-file", str(token), f"{option}={value}")
    one_line_naming(done, f"argument {option}", "above zero")


@pytest.mark.parametrize("command", ["migrate", "receive"])
def test_a_token_others_can_read_is_refused(tmp_path, token, command):
    token.chmod(0o644)
    where = ["--to", "127.0.0.1:7400"] if command == "migrate" else ["--listen", f"127.0.0.1:{free_port()}"]
    done = ferry(tmp_path, command, "m1", *where, "--token-file", str(token))
    one_line_naming(done, "token-file", str(token), "0644", "chmod 600")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A certificate with its key, another key, and a file that is not PEM."""
    folder = tmp_path_factory.mktemp("pki")
    for name in ("cert", "other"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ferry-test",
                        "-days", "1", "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.pem"],
                       check=True, capture_output=True)
    (folder / "junk").write_text("not a certificate\n")
    return folder


def tls_cases(pki):
    return [
        (["--tls-cert", str(pki / "missing.pem"), "--tls-key", str(pki / "cert.key")],
         ("tls-cert:", "missing.pem", "No such file")),
        (["--tls-cert", str(pki / "junk"), "--tls-key", str(pki / "cert.key")], ("tls-cert:", "no PEM certificate")),
        (["--tls-cert", str(pki / "cert.pem"), "--tls-key", str(pki / "junk")], ("tls-key:", "no PEM private key")),
        (["--tls-cert", str(pki / "cert.pem"), "--tls-key", str(pki / "other.key")],
         ("tls-key:", "other.key", "does not match")),
        (["--tls-cert", str(pki / "cert.pem"), "--tls-key", str(pki / "cert.key"), "--tls-ca", str(pki / "junk")],
         ("tls-ca:", "no PEM certificate")),
        (["--tls-cert", str(pki / "cert.pem"), "--tls-key", str(pki / "cert.key"), "--tls-ca", str(pki / "nope.pem")],
         ("tls-ca:", "nope.pem", "No such file")),
    ]


@pytest.mark.parametrize("case", range(6))
def test_tls_file_problems_name_the_option_on_the_receiver(tmp_path, token, pki, case):
    options, words = tls_cases(pki)[case]
    done = ferry(tmp_path, "receive", "m1", "--listen", f"127.0.0.1:{free_port()}", "--token-file", str(token),
                 "--detach", *options)
    one_line_naming(done, *words)
    assert not (tmp_path / "state" / "incoming" / "m1").exists(), "staging left behind"


@pytest.mark.parametrize("case", range(6))
def test_tls_file_problems_name_the_option_on_the_source(tmp_path, token, pki, case):
    options, words = tls_cases(pki)[case]
    done = ferry(tmp_path, "migrate", "m1", "--to", "127.0.0.1:7400", "--token-file", str(token),
                 "--transport", "tls", *options)
    one_line_naming(done, *words)


def test_a_receiver_needs_its_certificate_for_tls(tmp_path, token, pki):
    done = ferry(tmp_path, "receive", "m1", "--listen", f"127.0.0.1:{free_port()}", "--token-file", str(token),
                 "--detach", "--tls-ca", str(pki / "cert.pem"))
    one_line_naming(done, "tls-cert:", "required on the receiver")


BAD_FLAGS = [
    (["--ssh-option", "ProxyJump"], ("ssh-option:", "'ProxyJump'", "KEY=VALUE")),
    (["--ssh-option", "=jump"], ("ssh-option:", "KEY=VALUE")),
    (["--ssh-option", "ProxyJump="], ("ssh-option:", "KEY=VALUE")),
    (["--ssh-option=-oProxyCommand=x"], ("ssh-option:", "KEY=VALUE")),
    (["--ssh-option", "User=root\nProxyCommand=touch /tmp/x"], ("ssh-option:", "KEY=VALUE", "one line")),
    (["--ssh-user", "root\nProxyCommand"], ("ssh-user:", "one line")),
    (["--ssh-port", "0"], ("ssh-port:", "1-65535")),
    (["--ssh-known-hosts", 'a"b'], ("ssh-known-hosts:", "double quotes")),
    (["--ssh-config", "/no/such/config"], ("ssh-config:", "/no/such/config", "No such file")),
    (["--ssh-key", "/no/such/key"], ("ssh-key:", "/no/such/key", "No such file")),
]


@pytest.mark.parametrize("flags, words", BAD_FLAGS, ids=[" ".join(flags) for flags, _ in BAD_FLAGS])
def test_bad_ssh_flags_are_one_line_naming_the_flag(tmp_path, token, flags, words):
    done = ferry(tmp_path, "migrate", "m1", "--to", "h2:7400", "--token-file", str(token),
                 "--transport", "ssh", *flags)
    one_line_naming(done, *words)


@pytest.fixture(scope="module")
def loopback_pki(tmp_path_factory):
    """One certificate for 127.0.0.1 (its own CA), and a stranger's."""
    folder = tmp_path_factory.mktemp("loopback-pki")
    for name in ("host", "stranger"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
                        "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.pem"],
                       check=True, capture_output=True)
    return folder


@pytest.mark.parametrize("client, admitted", [("host", True), ("stranger", False), (None, False)])
def test_a_receiver_with_a_ca_admits_only_a_source_whose_certificate_chains_to_it(loopback_pki, client, admitted):
    import threading

    from ferry.migration import transport
    from ferry.migration.transport import HandshakeFailed, LinkError, TlsFiles

    ca = loopback_pki / "host.pem"
    listener = transport.Listener(f"127.0.0.1:{free_port()}", TlsFiles(ca, loopback_pki / "host.key", ca))
    outcome = {}

    def serve():
        conn, peer = listener.accept()
        try:
            channel = listener.channel(conn, peer)
            channel.send_zero(0, 4096)  # a frame the source waits for: the handshake finished here
            outcome["admitted"] = True
        except HandshakeFailed:
            outcome["admitted"] = False

    server = threading.Thread(target=serve)
    server.start()
    files = TlsFiles(loopback_pki / f"{client}.pem", loopback_pki / f"{client}.key", ca) if client else TlsFiles(ca=ca)
    try:
        channel = transport.connect(f"127.0.0.1:{listener.port}", "tls", files, link_timeout=5)
        channel.recv_exact(1)
    except LinkError:
        pass
    server.join(10)
    listener.close()
    assert outcome == {"admitted": admitted}


def test_a_source_the_receiver_refuses_is_told_why_in_one_line(loopback_pki):
    import threading

    from ferry.migration import transport
    from ferry.migration.transport import HandshakeFailed, LinkError, TlsFiles

    ca = loopback_pki / "host.pem"
    listener = transport.Listener(f"127.0.0.1:{free_port()}", TlsFiles(ca, loopback_pki / "host.key", ca))

    def serve():
        conn, peer = listener.accept()
        with pytest.raises(HandshakeFailed):
            listener.channel(conn, peer)

    server = threading.Thread(target=serve)
    server.start()
    channel = transport.connect(f"127.0.0.1:{listener.port}", "tls",
                                TlsFiles(loopback_pki / "stranger.pem", loopback_pki / "stranger.key", ca),
                                link_timeout=5)
    with pytest.raises(LinkError) as err:
        channel.recv_exact(1)
    server.join(10)
    listener.close()
    assert str(err.value).startswith("TLS: the receiver closed the connection before its first answer")
    assert "chains to its --tls-ca" in str(err.value) and "\n" not in str(err.value)
