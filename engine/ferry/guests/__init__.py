"""Guests that ship with the engine, built from ``engine/guests/`` at install time.

``selfcheck`` is the self-checking test guest (docs/selfcheck-guest.md):
tests boot it to prove that a snapshot, restore or migration lost no page
and no interrupt.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FerryError

BUILTIN = ("selfcheck",)


def builtin_kernel(name: str) -> Path:
    """The packaged ELF of built-in guest ``name``."""
    if name not in BUILTIN:
        raise FerryError(f"no built-in kernel named {name!r} (built-in: {', '.join(BUILTIN)})")
    path = Path(__file__).resolve().with_name(f"{name}.elf")
    if not path.is_file():
        raise FerryError(f"built-in kernel {name!r} is missing: {path} was not built "
                         f"(run 'make -C engine/guests/{name}', or reinstall ferry-engine "
                         f"where make and gcc are available)")
    return path
