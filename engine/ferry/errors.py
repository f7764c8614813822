"""Errors the engine reports to people: one line, no traceback."""


class FerryError(Exception):
    """A failure explained in one line (``ferry`` prints it and exits 1)."""


class DefinitionError(FerryError):
    """A VM definition is invalid; the message names the key."""


class NotFound(FerryError):
    """No VM (or snapshot) of that name."""


class Conflict(FerryError):
    """The request contradicts the VM's current state (e.g. undefine while running)."""
