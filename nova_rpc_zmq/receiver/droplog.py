"""Drops that come in floods, logged as one summary per reason and interval.

A topic nobody consumes can lose tens of thousands of messages a minute;
one log line each would bury the log (and a blocked log pipe stops the
receiver). ``DropLog`` logs the first drop of a reason at once, with its
example, then sums the rest up: at most one line per reason and
``interval`` seconds, giving the count, the first example of the interval
and the last topic and peer. Plain object, no clock of its own: the loop
that owns it passes ``now`` (so it can be tested without sleeping).

Every reason goes through it, the hostile ones (``bad_frame``,
``too_large`` ...) as well as the flow ones: a peer that floods us with
garbage gets a few lines, not one per frame. ``internal_error`` logs the
traceback of a bug once per distinct place (exception type, file, line)
and sums up the repeats like any other drop.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from types import TracebackType

LOG = logging.getLogger(__name__)

#: Seconds between two summary lines of one reason.
INTERVAL = 10.0
#: Distinct places of internal errors whose traceback is logged; beyond it
#: (a bug that moves, e.g. in generated code) repeats are only summed up.
MAX_PLACES = 100

ExcInfo = tuple[type[BaseException], BaseException, "TracebackType | None"]


@dataclass
class _Pending:
    """Drops of one reason not logged yet."""

    count: int = 0
    first: str = ""
    last_topic: str | None = None
    last_peer: str = "?"


class DropLog:
    """Rate-limited log of drops, one summary per reason and interval.

    Not thread-safe: one loop calls ``record`` and ``flush``.
    """

    def __init__(self, interval: float = INTERVAL,
                 logger: logging.Logger = LOG) -> None:
        self.interval = interval
        self.log = logger
        self._next: dict[str, float] = {}    # reason -> earliest next line
        self._pending: dict[str, _Pending] = {}
        self._places: set[tuple[str, str, int]] = set()
        #: the earliest time a pending summary is due (inf when none is)
        self.due = float("inf")

    def record(self, reason: str, topic: str | None, peer: str,
               detail: str, now: float) -> None:
        """Count one drop; logs a line only when none for ``reason`` was
        logged in the last ``interval`` seconds."""
        if now >= self._next.get(reason, 0.0) and reason not in self._pending:
            self.log.warning(
                "dropped a message from %s (topic %r): %s%s; further %s drops "
                "are summed up every %.0f s", peer, topic, reason,
                " (%s)" % detail if detail else "", reason, self.interval)
            self._next[reason] = now + self.interval
            return
        pending = self._pending.get(reason)
        if pending is None:
            pending = self._pending[reason] = _Pending(
                first="topic %r from %s%s" % (topic, peer,
                                              ": %s" % detail if detail else ""))
            self.due = min(self.due, self._next[reason])
        pending.count += 1
        pending.last_topic = topic
        pending.last_peer = peer

    def flush(self, now: float, force: bool = False) -> None:
        """Log the summaries that are due (every one with ``force``)."""
        if not force and now < self.due:
            return
        due = float("inf")
        for reason in list(self._pending):
            at = self._next[reason]
            if not force and now < at:
                due = min(due, at)
                continue
            p = self._pending.pop(reason)
            self.log.warning(
                "dropped %d more messages: %s since the last line (first: %s; "
                "last: topic %r from %s)", p.count, reason, p.first,
                p.last_topic, p.last_peer)
            self._next[reason] = now + self.interval
        self.due = due

    def internal_error(self, exc_info: ExcInfo, topic: str | None, peer: str,
                       now: float) -> None:
        """Log a bug hit while handling a message: with its traceback the
        first time at its place (exception type, file, line where it was
        raised), else summed up as an ``internal_error`` drop."""
        etype, exc, tb = exc_info
        last = traceback.extract_tb(tb)[-1] if tb is not None else None
        place = (etype.__name__, last.filename if last else "?",
                 (last.lineno or 0) if last else 0)
        if place not in self._places and len(self._places) < MAX_PLACES:
            self._places.add(place)
            self.log.error("internal error routing a message from %s (topic %r); "
                           "dropped it. Repeats at %s:%d are summed up",
                           peer, topic, place[1], place[2], exc_info=exc_info)
            return
        self.record("internal_error", topic, peer,
                    "%s: %s at %s:%d" % (place[0], exc, place[1], place[2]), now)
