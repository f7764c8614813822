"""Make ``ansible_collections.ferry.hypervisor`` and the bundled engine (``ferry``) importable.

From the checkout, pytest needs the collection linked at collections/ansible_collections/ferry/hypervisor;
under ansible-test the collection already sits at such a path, and the engine is imported from the
collection's engine/ sources (the checkout's venv has it installed). The built collection ships
no guest binaries, so there the tests marked kvm (which boot the built-in guest) are skipped: they
run from the checkout.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNDER_ANSIBLE_TEST = "ansible_collections" in os.path.abspath(__file__)

if not UNDER_ANSIBLE_TEST:
    subprocess.run([os.path.join(ROOT, "scripts", "link-collection.sh")], check=True, stdout=subprocess.DEVNULL)
    if os.path.join(ROOT, "collections") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "collections"))
elif os.path.join(ROOT, "engine") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "engine"))


def pytest_configure(config):
    # ansible-test runs pytest with its own configuration, without the checkout's pytest.ini.
    config.addinivalue_line("markers", "kvm: boots the engine's built-in guest on /dev/kvm")


def pytest_collection_modifyitems(items):
    if UNDER_ANSIBLE_TEST:
        for item in items:
            if "kvm" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="the built collection has no guest binaries: run from the checkout"))


@pytest.fixture
def venv(tmp_path):
    """Where the engine role installs the engine. Only its command's presence matters: the
    tests answer for it (a fake ``run_command``), so the command itself only fails if run."""
    command = tmp_path / "venv" / "bin" / "ferry"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\necho 'a fake run_command answers instead of this' >&2\nexit 3\n")
    command.chmod(0o755)
    return str(tmp_path / "venv")
