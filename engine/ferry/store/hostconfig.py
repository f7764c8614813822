"""The host's own settings, ``host.yaml`` in the state directory (written by the engine role).

``cpu_hidden``: CPU features this host never offers a VM, as if its CPU lacked them: for a
host that must look like the older hosts of its fleet, or one whose feature is unreliable.
A host without the file hides nothing.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

from .. import inputs
from ..errors import FerryError
from ..files import read_yaml_settings

FILE = "host.yaml"
KEYS = ("cpu_hidden",)
MAX_FILE = 64 * 1024


class HostConfigError(FerryError):
    pass


HostConfig = namedtuple("HostConfig", KEYS, defaults=(frozenset(),))


def load(root: Path) -> HostConfig:
    from ..kvm.cpufeatures import KNOWN
    path = root / FILE
    try:
        values = read_yaml_settings(path, MAX_FILE, HostConfigError, "the host's settings")
    except FileNotFoundError:
        return HostConfig()
    if values is None:
        values = {}  # an empty file sets nothing
    if not isinstance(values, dict):
        raise HostConfigError(f"{path}: expected a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(values) - set(KEYS), key=str)
    if unknown:
        raise HostConfigError(f"{path}: {inputs.shown(unknown[0])}: unknown key, allowed keys are {', '.join(KEYS)}")
    hidden = values.get("cpu_hidden") or []
    if not isinstance(hidden, list) or any(not isinstance(name, str) or name not in KNOWN for name in hidden):
        raise HostConfigError(f"{path}: cpu_hidden: expected a list of CPU feature names (ferry host-info "
                              f"lists them), got {inputs.shown(hidden)}")
    return HostConfig(cpu_hidden=frozenset(hidden))
