import secrets

import pytest

from ferry.lab import Lab
from support.labhost import Host
from support.requirements import check_lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    check_lab()
    lab = Lab(str(tmp_path_factory.mktemp("migration-lab") / "lab"))
    lab.up(hosts=2)
    yield lab
    lab.down()


@pytest.fixture
def hosts(lab):
    pair = [Host(lab, info) for info in lab.hosts]
    yield pair
    for host in pair:
        host.cleanup()
    for info in lab.hosts:
        lab.link(info["name"], up=True)
        lab.link(info["name"], clear=True)


@pytest.fixture
def token(tmp_path):
    path = tmp_path / "token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


