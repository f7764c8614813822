"""What the lab tests need from the machine; they fail loudly where it is missing."""

import os
import shutil

import pytest


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
