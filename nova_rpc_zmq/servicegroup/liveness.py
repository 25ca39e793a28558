"""The in-memory liveness view the matchmaker consults on every message.

``LivenessView.is_up(host, topic)`` is two set look-ups in memory; it never
asks the back end.  A background task refreshes the view from the
ServiceGroup API: at once when the driver pushes a change (zk watches), and
otherwise every ``refresh_interval`` (default ``report_interval``), or
sooner when a topic is asked about for the first time.

The rule: a host is up for a bare topic when

* its receiver member (group ``receiver_group``, member = host) is up, and
* if the group named after the topic has ever recorded that host, that
  member is up.

A host never recorded in a group counts as up there ("fail open").  Why:
services that do not join a servicegroup (older nodes during a rolling
upgrade, tools, a deployment without a liveness store) must keep getting
messages; only positive knowledge that a host is down removes it.  The
same applies to a topic whose group was never read yet: it is fetched in
the background and the host counts as up meanwhile.  While the back end is
away the view keeps the last known verdicts (see ``servicegroup.api``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Iterable

from nova_rpc_zmq import concurrency, options
from nova_rpc_zmq.servicegroup.drivers.base import MemberRecord

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

_EMPTY: frozenset[str] = frozenset()
#: topics tracked at most; protects memory against unbounded topic names
MAX_TOPICS = 10000


class LivenessView:
    """Which hosts are alive, for routing; see the module docstring.

    ``api`` is a ``servicegroup.API`` (or anything with ``members``,
    ``report_interval``, ``pushes_changes``, ``add_listener``).  The first
    refresh runs in the constructor (it never raises for back-end trouble).
    ``is_up`` and ``dead_hosts`` are safe from any thread and never block.
    """

    def __init__(self, api: Any,
                 receiver_group: str = options.default("rpc_zmq_receiver_group"),
                 refresh_interval: float | None = None,
                 handler: concurrency.Handler | None = None,
                 topics: Iterable[str] = ()) -> None:
        self.api = api
        self.receiver_group = receiver_group
        self.refresh_interval = float(refresh_interval or api.report_interval)
        self.handler = handler or concurrency.get_handler()
        self._topics: set[str] = set(topics)
        # group -> members known to be down; replaced whole on refresh
        self._down: dict[str, frozenset[str]] = {}
        self._records: dict[str, list[MemberRecord]] = {}
        self._wake = self.handler.Event()
        self._closed = False
        self.refreshes = 0
        self.refreshed_at: float | None = None
        self.refresh()
        if getattr(api, "pushes_changes", False):
            api.add_listener(self._wake.set)
        self._task = self.handler.spawn(self._run)

    @classmethod
    def from_settings(cls, api: Any, settings: config.Settings,
                      handler: concurrency.Handler | None = None) -> "LivenessView":
        """Build with ``rpc_zmq_receiver_group`` and ``report_interval``."""
        return cls(api, receiver_group=settings.rpc_zmq_receiver_group,
                   refresh_interval=settings.report_interval, handler=handler)

    # -- the hot path ----------------------------------------------------------

    def is_up(self, host: str, topic: str | None = None) -> bool:
        """True unless ``host`` is known down as a receiver or, when a bare
        ``topic`` is given, known down in that topic's group."""
        down = self._down
        if host in down.get(self.receiver_group, _EMPTY):
            return False
        if topic is None or topic == self.receiver_group:
            return True
        topic_down = down.get(topic)
        if topic_down is None:
            if topic not in self._topics and len(self._topics) < MAX_TOPICS:
                self._topics.add(topic)
                self._wake.set()
            return True
        return host not in topic_down

    def dead_hosts(self, hosts: Iterable[str], topic: str | None = None) -> list[str]:
        """The hosts of ``hosts`` that ``is_up`` rejects, in order."""
        return [h for h in hosts if not self.is_up(h, topic)]

    def watch_topics(self, topics: Iterable[str]) -> None:
        """Track these bare topics from now on (e.g. every topic of the
        ring file), so their first message is already filtered.

        Blocks for one read of the back end when a topic is new (the ring
        matchmaker calls this when it loads a ring); never raises for
        back-end trouble.
        """
        new = set(topics) - self._topics
        if not new:
            return
        self._topics.update(new)
        # Read now rather than wake the background task: that task may run
        # too late for the first message (under eventlet not before the
        # caller yields), which then goes to a host known to be dead.
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - the background task retries
            LOG.exception("liveness view: reading the groups of %s failed; "
                          "retrying in the background", ", ".join(sorted(new)))
            self._wake.set()

    # -- refreshing ----------------------------------------------------------------

    def refresh(self) -> None:
        """Read every tracked group once and swap the view (blocking)."""
        groups = {self.receiver_group} | set(self._topics)
        got = self.api.members(groups)
        self._down = {g: frozenset(r.member for r in recs if not r.up)
                      for g, recs in got.items()}
        self._records = got
        self.refreshed_at = time.time()
        self.refreshes += 1

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.refresh_interval)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep the view alive
                LOG.exception("liveness view refresh failed; keeping the "
                              "previous view")

    def snapshot(self) -> dict[str, Any]:
        """The view for ``nova-rpc-zmq status`` and health pages."""
        now = time.time()
        groups = {}
        for g, recs in sorted(self._records.items()):
            groups[g] = {r.member: {"up": r.up, "last_seen": r.last_seen,
                                    "age": None if r.last_seen is None
                                    else round(now - r.last_seen, 3)}
                         for r in recs}
        return {"receiver_group": self.receiver_group,
                "refreshed_at": self.refreshed_at,
                "available": bool(getattr(self.api, "available", True)),
                "groups": groups}

    def close(self) -> None:
        """Stop the refresh task (the API stays open: it is the caller's)."""
        self._closed = True
        if getattr(self.api, "pushes_changes", False):
            self.api.remove_listener(self._wake.set)
        self._wake.set()
