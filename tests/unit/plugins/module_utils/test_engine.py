"""Finding the engine on the managed host: this Python, else the engine's venv, else one line."""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.ferry.hypervisor.plugins.module_utils import engine as engine_utils
from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError


def test_missing_engine_is_one_clear_line(monkeypatch, tmp_path):
    def no_engine():
        raise ModuleNotFoundError("No module named 'ferry'", name="ferry")

    monkeypatch.setattr(engine_utils, "_import_api", no_engine)
    with pytest.raises(EngineError) as failure:
        engine_utils.load_api(str(tmp_path / "no-venv"))

    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("the Ferry engine is not installed on this host")
    assert message.endswith("run the ferry.hypervisor.engine role")


def test_an_engine_missing_a_dependency_says_so(monkeypatch):
    def broken_engine():
        raise ModuleNotFoundError("No module named 'zstandard'", name="zstandard")

    monkeypatch.setattr(engine_utils, "_import_api", broken_engine)
    with pytest.raises(EngineError) as failure:
        engine_utils.load_api("/nonexistent")

    assert str(failure.value) == ("the Ferry engine on this host cannot be imported (No module named 'zstandard'): "
                                  "run the ferry.hypervisor.engine role to reinstall it")


def test_engine_is_found_in_its_venv(monkeypatch, tmp_path):
    site_packages = tmp_path / "venv" / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    site_packages.mkdir(parents=True)
    attempts = []

    def import_after_venv():
        attempts.append(list(sys.path))
        if str(site_packages) not in sys.path:
            raise ModuleNotFoundError("No module named 'ferry'", name="ferry")
        return "api"

    monkeypatch.setattr(engine_utils, "_import_api", import_after_venv)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")

    assert engine_utils.load_api(str(tmp_path / "venv")) == "api"
    assert len(attempts) == 2
    # VM processes started by the engine run the same interpreter and must find it too.
    assert os.environ["PYTHONPATH"] == f"{site_packages}{os.pathsep}/elsewhere"
