"""Lab tests build real namespaces, bridges and sshd processes, so they need root,
iproute2 and openssh-server. Like the KVM tests they fail loudly where those are
missing; FERRY_ALLOW_NO_LAB=1 turns that into a skip."""

import pytest

from support.requirements import check_lab


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: creates network namespaces and sshd hosts (root, iproute2, openssh-server)")


@pytest.fixture(scope="module")
def lab_ready():
    check_lab()


@pytest.fixture(autouse=True)
def _require_lab(request):
    if "lab" in request.keywords:
        check_lab()
