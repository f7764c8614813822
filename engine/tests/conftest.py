"""Shared test policy: KVM tests fail loudly where /dev/kvm is unusable; slow tests are opt-in."""

import functools
import os
import secrets
import sys

import pytest

# Test modules share helpers from the ``support`` package next to this file.
sys.path.insert(0, os.path.dirname(__file__))


@functools.cache
def kvm_problem() -> str | None:
    from ferry.kvm.fds import Kvm, KvmUnavailable
    try:
        Kvm().close()
    except KvmUnavailable as err:
        return str(err)
    return None


SLOW_TIMEOUT = 3600  # an emulated Linux boot takes tens of minutes here


def pytest_collection_modifyitems(config, items):
    slow = [item for item in items if "slow" in item.keywords]
    for item in slow:
        if os.environ.get("FERRY_SLOW_TESTS") == "1":
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
        else:
            item.add_marker(pytest.mark.skip(reason="opt-in slow test: set FERRY_SLOW_TESTS=1"))


@pytest.fixture(autouse=True)
def _require_kvm(request):
    if "kvm" not in request.keywords or kvm_problem() is None:
        return
    if os.environ.get("FERRY_ALLOW_NO_KVM") == "1":
        pytest.skip(f"NO KVM: {kvm_problem()}")
    pytest.fail(f"KVM is required and unusable: {kvm_problem()} (FERRY_ALLOW_NO_KVM=1 skips instead)")


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    no_kvm = [r for r in skipped if "NO KVM" in str(r.longrepr)]
    if no_kvm:
        terminalreporter.write_sep("!", f"{len(no_kvm)} KVM TESTS DID NOT RUN: /dev/kvm unusable", red=True)


@pytest.fixture
def token(tmp_path):
    """A one-time migration token file, private as the engine requires."""
    path = tmp_path / "token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path
