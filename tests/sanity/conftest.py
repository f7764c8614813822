"""Slow tests are opt-in here as in the engine's tests: FERRY_SLOW_TESTS=1 runs them."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FERRY_SLOW_TESTS") == "1":
        return
    here = os.path.dirname(__file__)
    for item in items:
        if "slow" in item.keywords and str(item.path).startswith(here):
            item.add_marker(pytest.mark.skip(reason="opt-in slow test: set FERRY_SLOW_TESTS=1"))
