"""The one-time migration token file both ends read."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FerryError


def read_token(path: Path | None) -> bytes:
    if path is None:
        raise FerryError("token-file: a one-time token file is required")
    try:
        mode = os.stat(path).st_mode
        token = Path(path).read_bytes().strip()
    except OSError as err:
        raise FerryError(f"token-file: cannot read {path}: {err.strerror}") from None
    if mode & 0o077:
        # As ssh with private keys: a secret others can read is no secret.
        raise FerryError(f"token-file: {path} is open to group or others (mode {mode & 0o777:04o}); "
                         f"run chmod 600 {path}")
    if len(token) < 16:
        raise FerryError(f"token-file: {path} holds {len(token)} bytes, at least 16 are required")
    return token
