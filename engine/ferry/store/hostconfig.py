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

FILE = "host.yaml"
KEYS = ("cpu_hidden",)
MAX_FILE = 64 * 1024


class HostConfigError(FerryError):
    pass


HostConfig = namedtuple("HostConfig", KEYS, defaults=(frozenset(),))


def load(root: Path) -> HostConfig:
    import yaml  # here: most commands read no host settings

    from ..kvm.cpufeatures import KNOWN
    path = root / FILE
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE + 1)
    except FileNotFoundError:
        return HostConfig()
    except OSError as err:
        raise HostConfigError(f"{path}: cannot read: {err.strerror}") from None
    if len(data) > MAX_FILE:
        raise HostConfigError(f"{path}: larger than {MAX_FILE // 1024} KiB, not the host's settings")
    try:
        values = yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError):
        raise HostConfigError(f"{path}: not valid YAML") from None
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
