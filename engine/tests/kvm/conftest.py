import pytest

from ferry.host.api import Host

from support.cli import Ferry


@pytest.fixture
def ferry(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    tool = Ferry(state)
    yield tool
    host = Host(state)
    for name in host.names():
        try:
            host.poweroff(name, timeout=10)
        except Exception:
            pass
