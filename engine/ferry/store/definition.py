"""VM definitions: the YAML a person writes, validated into a typed, versioned record.

Stored definitions carry ``format: 3`` (format 1 had no ``cpu``, 2 no ``tags``); disks and NICs
will join as new optional keys under a new format number, and older files keep loading.
"""

from __future__ import annotations

import os
import stat
import sys
from collections import namedtuple
from pathlib import Path

from .. import inputs
from ..layout import MAX_VCPUS
from ..errors import DefinitionError

FORMAT = 3
READS = (1, 2, 3)  # the formats this engine loads
BUILTIN_PREFIX = "builtin:"
MAX_MEMORY_MIB = 1024 * 1024
MAX_CMDLINE = 4095
MAX_FILE = 64 * 1024  # a definition is a few lines; anything bigger is not one
STDIN = "stdin"  # how messages name a definition read from standard input
KEYS = ("name", "vcpus", "memory", "kernel", "initrd", "cmdline", "cpu", "tags")
MAX_CPU_FEATURES = 256
MAX_TAGS = 64


# A named tuple, not a dataclass: every command reads definitions, and ``dataclasses``
# (with ``inspect``) would cost ``ferry list`` more than all the rest of its imports.
class Definition(namedtuple("Definition", KEYS, defaults=(None, "", "host", ()))):
    """name, vcpus, memory (MiB), kernel, initrd (or None), cmdline, cpu (``host``,
    ``baseline`` or a sorted tuple of feature names), tags (a sorted tuple: what
    checkpoint policies and placement select VMs by); immutable."""

    __slots__ = ()

    def to_dict(self) -> dict:
        values = self._asdict()
        if isinstance(self.cpu, tuple):
            values["cpu"] = list(self.cpu)
        values["tags"] = list(self.tags)
        return values

    def kernel_path(self) -> Path:
        return resolve_kernel(self.kernel)


def resolve_kernel(kernel: str) -> Path:
    if kernel.startswith(BUILTIN_PREFIX):
        from ..guests import builtin_kernel
        return builtin_kernel(kernel[len(BUILTIN_PREFIX):])
    return Path(kernel)


def _integer(values: dict, key: str, low: int, high: int, unit: str = "") -> int:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DefinitionError(f"{key}: expected a whole number{unit}, got {value!r}")
    if not low <= value <= high:
        raise DefinitionError(f"{key}: {value} is out of range, allowed {low} to {high}{unit}")
    return value


def _path(values: dict, key: str, required: bool) -> str | None:
    value = values.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{key}: expected a file path, got {value!r}")
    if key == "kernel" and value.startswith(BUILTIN_PREFIX):
        try:
            resolve_kernel(value)
        except Exception as err:
            raise DefinitionError(f"{key}: {err}") from None
        return value
    path = Path(value)
    if not path.is_absolute():
        raise DefinitionError(f"{key}: {value!r} must be an absolute path")
    if not path.is_file():
        raise DefinitionError(f"{key}: no such file {value}")
    return value


def validate(values) -> Definition:
    if not isinstance(values, dict):
        raise DefinitionError(f"definition: expected a mapping of keys, got {type(values).__name__}")
    values = {k: v for k, v in values.items() if k != "format"}
    unknown = sorted(set(values) - set(KEYS), key=str)
    if unknown:
        raise DefinitionError(f"{inputs.shown(unknown[0])}: unknown key, allowed keys are {', '.join(KEYS)}")
    try:
        name = inputs.vm_name(values.get("name"))
    except inputs.InvalidName as err:
        raise DefinitionError(str(err)) from None
    memory = _integer(values, "memory", 2, MAX_MEMORY_MIB, " MiB")
    if memory % 2:
        raise DefinitionError(f"memory: {memory} MiB must be a multiple of 2 MiB")
    return Definition(name=name, vcpus=_integer(values, "vcpus", 1, MAX_VCPUS),
                      memory=memory, kernel=_path(values, "kernel", True),
                      initrd=_path(values, "initrd", False), cmdline=_cmdline(values), cpu=_cpu(values),
                      tags=_tags(values))


def _tags(values: dict) -> tuple[str, ...]:
    tags = values.get("tags") or []
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise DefinitionError(f"tags: expected a list of at most {MAX_TAGS} tags, got {inputs.shown(tags)}")
    try:
        return tuple(sorted({inputs.tag(tag) for tag in tags}))
    except inputs.InvalidName as err:
        raise DefinitionError(str(err)) from None


def _cpu(values: dict):
    """The CPU model: ``host`` (the default), ``baseline``, or a list of feature names."""
    from ..kvm.cpufeatures import KNOWN, MODELS

    cpu = values.get("cpu")
    if cpu is None:  # not given, or null as a module passes an option it was not given
        return "host"
    if isinstance(cpu, str):
        if cpu not in MODELS:
            raise DefinitionError(f"cpu: {inputs.shown(cpu)} is not a CPU model; use host, baseline "
                                  "or a list of feature names")
        return cpu
    if not isinstance(cpu, list) or not cpu or len(cpu) > MAX_CPU_FEATURES:
        raise DefinitionError("cpu: expected host, baseline or a list of 1 to "
                              f"{MAX_CPU_FEATURES} feature names, got {inputs.shown(cpu)}")
    unknown = [name for name in cpu if not isinstance(name, str) or name not in KNOWN]
    if unknown:
        raise DefinitionError(f"cpu: {inputs.shown(unknown[0])} is not a CPU feature this engine knows "
                              "(Linux's /proc/cpuinfo names, as ferry host-info lists them)")
    return tuple(sorted(set(cpu)))


def _cmdline(values: dict) -> str:
    cmdline = values.get("cmdline") or ""
    if not isinstance(cmdline, str) or len(cmdline) > MAX_CMDLINE:
        raise DefinitionError(f"cmdline: expected text of at most {MAX_CMDLINE} characters")
    # The guest reads it as one NUL-terminated line: a NUL would cut it, a newline or
    # other control character would reach the kernel as garbage.
    bad = next((c for c in cmdline if not c.isprintable()), None)
    if bad is not None:
        raise DefinitionError(f"cmdline: control character {bad!r} is not allowed; "
                              "use printable characters and spaces only")
    return cmdline


def read_text(path: Path) -> str:
    """A definition file's text: a regular file of at most MAX_FILE bytes (never a device or FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise DefinitionError(f"cannot read definition {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DefinitionError(f"cannot read definition {path}: not a regular file")
        return _decoded(handle.read(MAX_FILE + 1), path)


def read_stdin() -> str:
    """A definition piped in (``ferry define -``), held to the same size as a file."""
    return _decoded(sys.stdin.buffer.read(MAX_FILE + 1), STDIN)


def _decoded(data: bytes, source) -> str:
    if len(data) > MAX_FILE:
        raise DefinitionError(f"{source}: larger than {MAX_FILE // 1024} KiB, not a VM definition")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise DefinitionError(f"{source}: not UTF-8 text") from None


def _yaml_problem(err) -> str:
    """Where and what, in one line: "line 3, column 7: expected ',' or ']', but got ':'"."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load_file(path: Path | str) -> Definition:
    """The definition in the file at ``path``, or on standard input for ``-`` (YAML, so JSON too)."""
    import yaml  # here: commands that read no definition skip its import

    if str(path) == "-":
        path, text = STDIN, read_stdin()
    else:
        text = read_text(path)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DefinitionError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise DefinitionError(f"{path}: nested too deeply to be a VM definition") from None
    if isinstance(values, dict) and values.get("format", FORMAT) not in READS:
        raise DefinitionError(f"format: {inputs.shown(values['format'])} is not supported, this engine reads "
                              f"formats {', '.join(map(str, READS))}")
    return validate(values)


def dump(definition: Definition) -> str:
    import yaml

    return yaml.safe_dump({"format": FORMAT, **definition.to_dict()}, sort_keys=False)
