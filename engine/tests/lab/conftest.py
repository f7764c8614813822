"""Lab tests build real namespaces, bridges and sshd processes, so they need root,
iproute2 and openssh-server. Like the KVM tests they fail loudly where those are
missing; FERRY_ALLOW_NO_LAB=1 turns that into a skip."""

import os
import shutil

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: creates network namespaces and sshd hosts (root, iproute2, openssh-server)")


def lab_problem() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "tc", "ssh", "ssh-keygen", "nsenter", "unshare", "setsid"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd is not installed (openssh-server)"
    return None


def check_lab() -> None:
    problem = lab_problem()
    if problem is None:
        return
    if os.environ.get("FERRY_ALLOW_NO_LAB") == "1":
        pytest.skip(f"NO LAB: {problem}")
    pytest.fail(f"lab tests cannot run: {problem} (FERRY_ALLOW_NO_LAB=1 skips them instead)")


@pytest.fixture(scope="module")
def lab_ready():
    check_lab()


@pytest.fixture(autouse=True)
def _require_lab(request):
    if "lab" in request.keywords:
        check_lab()
