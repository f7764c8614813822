"""The checkpoint policy: a YAML document of templates and per-VM / per-tag settings.

    templates:
      production: {frequently: 4, frequent_minutes: 15, hourly: 24, daily: 7, daily_hour: 2}
    vms:
      web1: {use_template: production, daily: 30}
    tags:
      db: {use_template: production, hourly: 48}

A VM's settings are the defaults, then each ``tags`` entry whose tag the VM carries (in
the policy's order), then its ``vms`` entry; an entry's ``use_template`` applies before
its own keys. A VM that neither names nor tag matches is not the policy's: nothing of
it is taken or pruned. Every key is checked here, once, with a one-line error that
names the key and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import inputs
from ..errors import FerryError
from ..files import read_yaml_settings

PERIODS = ("frequently", "hourly", "daily", "weekly", "monthly", "yearly")
# Each period's nominal length in seconds, for freshness (``check``) and its default ages.
PERIOD_SECONDS = {"frequently": None, "hourly": 3600, "daily": 86400, "weekly": 7 * 86400,
                  "monthly": 31 * 86400, "yearly": 366 * 86400}
MAX_KEEP = 100_000
MAX_FILE = 256 * 1024
MAX_HOOK = 4096
TOP_KEYS = ("templates", "vms", "tags")

# key: (low, high, default) for whole numbers; the preferred times use cron's ranges
# (weekly_wday 0 = Sunday).
NUMBERS = {
    **{period: (0, MAX_KEEP, 0) for period in PERIODS},
    "frequent_minutes": (1, 1440, 15),
    "hourly_min": (0, 59, 0),
    "daily_hour": (0, 23, 0), "daily_min": (0, 59, 0),
    "weekly_wday": (0, 6, 1), "weekly_hour": (0, 23, 0), "weekly_min": (0, 59, 0),
    "monthly_mday": (1, 31, 1), "monthly_hour": (0, 23, 0), "monthly_min": (0, 59, 0),
    "yearly_mon": (1, 12, 1), "yearly_mday": (1, 31, 1), "yearly_hour": (0, 23, 0), "yearly_min": (0, 59, 0),
    "hook_timeout": (1, 86400, 60),
}
SWITCHES = {"take": True, "prune": True, "live": True, "compress": False}
TEXTS = ("pre_hook", "post_hook")
AGES = tuple(f"{period}_{level}" for period in PERIODS for level in ("warn", "crit"))
KEYS = ("use_template", *NUMBERS, *SWITCHES, *TEXTS, "min_free", *AGES)
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", re.IGNORECASE)


class PolicyError(FerryError):
    pass


@dataclass(frozen=True)
class VmPolicy:
    """One VM's settings, every key resolved; ``source`` names the policy (recorded in origins)."""
    values: dict
    source: str = "policy"

    def __getitem__(self, key: str):
        return self.values[key]

    def keep(self, period: str) -> int:
        return self.values[period]

    def interval(self, period: str) -> int:
        """The period's length in seconds (``frequently``: its ``frequent_minutes``)."""
        return PERIOD_SECONDS[period] or self.values["frequent_minutes"] * 60

    def age_limit(self, period: str, level: str) -> float:
        """Seconds after which the newest checkpoint of ``period`` is stale: given, or by
        default one and a half periods (warn) and three (crit)."""
        given = self.values.get(f"{period}_{level}")
        return given if given is not None else self.interval(period) * (1.5 if level == "warn" else 3)

    def active_periods(self) -> list[str]:
        return [period for period in PERIODS if self.values[period] > 0]


DEFAULTS = {**{key: spec[2] for key, spec in NUMBERS.items()}, **SWITCHES,
            **dict.fromkeys(TEXTS), "min_free": None, **dict.fromkeys(AGES)}


@dataclass(frozen=True)
class Policy:
    source: str
    templates: dict
    vms: dict
    tags: dict

    def for_vm(self, name: str, vm_tags=()) -> VmPolicy | None:
        """The VM's settings, or None when the policy does not cover it."""
        entries = [self.tags[tag] for tag in self.tags if tag in vm_tags]
        if name in self.vms:
            entries.append(self.vms[name])
        if not entries:
            return None
        values = dict(DEFAULTS)
        for entry in entries:
            values.update(self._expand(entry))
        return VmPolicy(values, self.source)

    def _expand(self, entry: dict) -> dict:
        values: dict = {}
        for template in entry.get("use_template", ()):
            values.update(self._expand(self.templates[template]))
        values.update({k: v for k, v in entry.items() if k != "use_template"})
        return values


def load(path: Path | str) -> Policy:
    def error(message: str) -> PolicyError:
        return PolicyError(f"policy {message}")
    try:
        document = read_yaml_settings(Path(path), MAX_FILE, error, "a checkpoint policy")
    except FileNotFoundError:
        raise error(f"{path}: cannot read: No such file or directory") from None
    return parse(document, str(path))


def parse(document, source: str = "policy") -> Policy:
    """Check a policy document (the parsed YAML) into a Policy."""
    if document is None:
        document = {}
    _mapping(document, source, f"a mapping of {', '.join(TOP_KEYS)}")
    _known(document, source, TOP_KEYS)
    sections = {key: _mapping(document.get(key) or {}, f"{source}: {key}", "a mapping of names to settings")
                for key in TOP_KEYS}
    templates = {_named(inputs.tag, name, f"{source}: templates"):
                 _entry(entry, f"{source}: templates.{name}") for name, entry in sections["templates"].items()}
    vms = {_named(inputs.vm_name, name, f"{source}: vms"): _entry(entry, f"{source}: vms.{name}")
           for name, entry in sections["vms"].items()}
    tags = {_named(inputs.tag, name, f"{source}: tags"): _entry(entry, f"{source}: tags.{name}")
            for name, entry in sections["tags"].items()}
    policy = Policy(source, templates, vms, tags)
    for where, group in (("templates", templates), ("vms", vms), ("tags", tags)):
        for name, entry in group.items():
            _check_templates(policy, entry, f"{source}: {where}.{name}", [name] if where == "templates" else [])
    return policy


def _named(check, name, where: str) -> str:
    try:
        return check(name, where)
    except inputs.InvalidName as err:
        raise PolicyError(str(err)) from None


def _mapping(value, where: str, expected: str) -> dict:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: expected {expected}, got {inputs.shown(value)}")
    return value


def _known(values: dict, where: str, allowed) -> None:
    unknown = sorted(set(values) - set(allowed), key=str)
    if unknown:
        raise PolicyError(f"{where}: {inputs.shown(unknown[0])} is not a policy key; allowed: {', '.join(allowed)}")


def _entry(entry, where: str) -> dict:
    entry = _mapping(entry if entry is not None else {}, where, "a mapping of policy keys")
    _known(entry, where, KEYS)
    checked = {key: _value(key, value, f"{where}.{key}") for key, value in entry.items()}
    if "use_template" in checked:
        checked["use_template"] = _templates_named(entry["use_template"], f"{where}.use_template")
    return checked


def _value(key: str, value, where: str):
    if key in NUMBERS:
        low, high, _ = NUMBERS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PolicyError(f"{where}: expected a whole number {low} to {high}, got {inputs.shown(value)}")
        return value
    if key in SWITCHES:
        if not isinstance(value, bool):
            raise PolicyError(f"{where}: expected true or false, got {inputs.shown(value)}")
        return value
    if key in TEXTS:
        return _hook(value, where)
    if key == "min_free":
        return _size(value, where)
    if key in AGES:
        return duration(value, where)
    return value  # use_template, checked by the caller


def _hook(value, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_HOOK or "\0" in value:
        raise PolicyError(f"{where}: expected a shell command of 1 to {MAX_HOOK} characters, "
                          f"got {inputs.shown(value)}")
    return value


def _templates_named(value, where: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and inputs.TAG.fullmatch(n) for n in names):
        raise PolicyError(f"{where}: expected a template name or a list of them, got {inputs.shown(value)}")
    return tuple(names)


def _check_templates(policy: Policy, entry: dict, where: str, path: list[str]) -> None:
    """Every template named exists, and no template reaches itself."""
    for template in entry.get("use_template", ()):
        if template not in policy.templates:
            known = ", ".join(policy.templates) or "none"
            raise PolicyError(f"{where}.use_template: no template {template!r} (templates: {known})")
        if template in path:
            raise PolicyError(f"{where}.use_template: template {template!r} uses itself "
                              f"({' -> '.join(path + [template])})")
        _check_templates(policy, policy.templates[template], where, path + [template])


def duration(value, where: str) -> float:
    """Seconds from ``90m``, ``28h``, ``2d``, ``1w`` (or a number of minutes)."""
    if not isinstance(value, bool) and isinstance(value, int) and value > 0:
        return value * 60.0
    match = DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise PolicyError(f"{where}: expected a duration like 90m, 28h, 2d or 1w, got {inputs.shown(value)}")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def _size(value, where: str):
    """``min_free``: bytes with K/M/G/T (powers of 1024), or a share of the file system (``10%``)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share < 100:
            raise PolicyError(f"{where}: {inputs.shown(value)}: a share must lie between 0% and 100%")
        return {"percent": share}
    if not isinstance(value, bool) and isinstance(value, int) and value >= 0:
        return {"bytes": value}
    match = SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise PolicyError(f"{where}: expected a size like 20G or a share like 10%, got {inputs.shown(value)}")
    return {"bytes": int(float(match.group(1)) * 1024 ** "_KMGT".index(match.group(2).upper() or "_"))}
