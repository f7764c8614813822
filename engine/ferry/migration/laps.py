"""Where a span of time went: named steps, each timed from the end of the one before."""

from __future__ import annotations

import time


class Laps:
    def __init__(self):
        self.parts: dict[str, float] = {}
        self.last = time.monotonic()

    def lap(self, name: str) -> float:
        """Milliseconds since the last lap, recorded under ``name`` (added to it if taken before)."""
        now = time.monotonic()
        took = (now - self.last) * 1000
        self.parts[name] = round(self.parts.get(name, 0.0) + took, 3)
        self.last = now
        return took
