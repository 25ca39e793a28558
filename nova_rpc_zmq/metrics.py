"""Counters: every drop, refusal and late reply is counted somewhere.

A ``Counters`` object is a named bag of integers. Increments are plain dict
updates (atomic enough under the GIL for counting); ``snapshot()`` copies.
``render()`` gives the text served on the receiver's health port.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class Counters:
    """Named integer counters, grouped by a dotted prefix."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._values: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def incr(self, name: str, amount: int = 1) -> None:
        self._values[name] += amount

    def get(self, name: str) -> int:
        return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def render(self) -> str:
        """``prefix.name value`` lines, sorted, for humans and scripts."""
        lines = []
        for name, value in sorted(self.snapshot().items()):
            full = "%s.%s" % (self.prefix, name) if self.prefix else name
            lines.append("%s %d" % (full, value))
        return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, int]:
    """Inverse of ``Counters.render`` (used by tests and `status`)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out
