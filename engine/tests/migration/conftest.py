
import pytest

from ferry.lab import Lab
from support.faultproxy import FaultProxy
from support.labhost import PORT, Host
from support.requirements import check_lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    check_lab()
    lab = Lab(str(tmp_path_factory.mktemp("migration-lab") / "lab"))
    lab.up(hosts=3)  # the third serves as a jump host (ProxyJump) only
    yield lab
    lab.down()


@pytest.fixture
def hosts(lab):
    pair = [Host(lab, info) for info in lab.hosts[:2]]
    yield pair
    for host in pair:
        host.cleanup()
    for info in lab.hosts:
        lab.link(info["name"], up=True)
        lab.link(info["name"], clear=True)


@pytest.fixture
def jump(lab, hosts):
    """The lab's third host, which runs no VM: only its sshd, for ProxyJump."""
    return Host(lab, lab.hosts[2])


@pytest.fixture
def relay(lab, hosts):
    """A frame-aware relay in front of the second host's receiver (see support.faultproxy)."""
    made = []

    def make(cut, hold=None, **options):
        proxy = FaultProxy((lab.require()["root_ipv4"], 0), (hosts[1].ipv4, PORT), cut, hold, **options)
        made.append(proxy)
        return proxy, f"{lab.require()['root_ipv4']}:{proxy.port}"

    yield make
    for proxy in made:
        proxy.close()
