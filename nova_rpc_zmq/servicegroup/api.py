"""The ServiceGroup API: who is alive, as Nova's ``servicegroup.API`` asks.

A service calls ``join(member, group)`` once (its host name in its topic's
group) and the driver keeps it alive; anyone asks ``service_is_up``,
``get_all`` or ``last_seen``.  The driver comes from ``servicegroup_driver``:
``db`` (SQL heartbeat rows, the default), ``zk`` (ZooKeeper ephemeral
nodes) or ``mc`` (memcached keys with a time-to-live); each documents its
options in its module docstring.

Start: the back end must answer when the API is built - an unreachable
one raises ``ServiceGroupUnavailable`` naming its address, so a typo in the
config fails at once instead of marking every host dead.

While the back end is away (after a good start) nothing raises:

* heartbeats (db, mc) are retried with exponential back-off capped at
  ``report_interval``; kazoo (zk) reconnects with back-off capped at
  ``zookeeper_sg_retry_interval``.  The loss and the recovery are each
  logged once, not once per attempt.
* reads answer from the **last known view**: ``service_is_up`` and
  ``get_all`` return the verdicts of the last successful read of that
  group, frozen (not aged), and a member never read answers False.
  Why frozen: an outage of the liveness store says nothing about the
  compute hosts; ageing the old view would, after ``service_down_time``,
  declare every host dead and stop all routing, turning a monitoring
  outage into a full one.  Calls keep flowing to hosts known live; a host
  that dies meanwhile costs timeouts, as it did before liveness existed.
* when the back end returns after an outage longer than
  ``service_down_time``, every heartbeat in it is stale: for one
  ``service_down_time`` after recovery the ``db`` and ``mc`` drivers count
  a member up if it was alive when the outage began, so members are not
  all declared dead in the moment before their next heartbeat lands.
* per driver: ``db`` and ``mc`` raise inside and fall back here; ``zk``
  keeps its watched sets unchanged while SUSPENDED (its own members drop
  out locally when the session is declared expired, and re-join on the
  next session); ``mc`` with several servers keeps working when some
  are down (keys rehash to live servers; see ``drivers/mc.py``).

Thread-safe; works in a plain threaded process and an eventlet
monkey-patched one (background work goes through
``nova_rpc_zmq.concurrency.get_handler()``).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable

from oslo_config import cfg

from nova_rpc_zmq import concurrency, errors
from nova_rpc_zmq.servicegroup.drivers import DRIVER_NAMES, load_driver
from nova_rpc_zmq.servicegroup.drivers.base import (
    Driver, MemberRecord, ServiceGroupUnavailable)

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

__all__ = ["API", "MemberRecord", "ServiceGroupUnavailable", "member_key"]


def member_key(member: Any) -> tuple[str, str]:
    """``(group, member)`` for what ``service_is_up`` accepts.

    Accepted: a mapping with ``topic`` and ``host`` (a Nova service record:
    the group is the topic, the member the host), a mapping with ``group``
    and ``member``, or a ``(group, member)`` pair.  Anything else raises
    ``errors.LocalError``.
    """
    if isinstance(member, dict) or hasattr(member, "keys"):
        if member.get("topic") and member.get("host"):
            return str(member["topic"]), str(member["host"])
        if member.get("group") and member.get("member"):
            return str(member["group"]), str(member["member"])
    elif isinstance(member, (tuple, list)) and len(member) == 2:
        return str(member[0]), str(member[1])
    raise errors.LocalError(
        "service_is_up needs a service record with 'topic' and 'host' or a "
        "(group, member) pair, got %r" % (member,))


class API:
    """Join groups and ask who is up; see the module docstring.

    ``settings`` is a ``config.Settings`` (or any object with the same
    attribute names), an oslo.config ``ConfigOpts``, or None: the process's
    configuration (``oslo_config.cfg.CONF``, through ``config.settings_for``), as
    Nova's ``servicegroup.API()`` reads it (``servicegroup_driver``,
    ``service_down_time``, ``report_interval``, ``[zookeeper]``,
    ``memcached_servers``, ``[database]``); ``driver`` overrides ``settings.servicegroup_driver``
    with a name ('db', 'zk', 'mc') or a ready ``Driver``; ``handler`` picks
    the concurrency model (default: the one this process runs).
    Raises ``ServiceGroupUnavailable`` when the back end does not answer at
    start, ``errors.ConfigurationError`` for a bad driver name or option.
    """

    def __init__(self, settings: config.Settings | cfg.ConfigOpts | None = None,
                 driver: str | Driver | None = None,
                 handler: concurrency.Handler | None = None) -> None:
        self.handler = handler or concurrency.get_handler()
        if settings is None or isinstance(settings, cfg.ConfigOpts):
            from nova_rpc_zmq import config
            # rpc_backend does not matter here (it may name another
            # transport): fixed as the drop-in module fixes it, so both
            # share one Settings
            settings = config.settings_for(settings, rpc_backend="impl_zmq")
        self.settings = settings
        if isinstance(driver, Driver):
            self.driver = driver
        else:
            name = driver or settings.servicegroup_driver
            if name not in DRIVER_NAMES:
                raise errors.ConfigurationError(
                    "servicegroup_driver = %r is not known; use one of %s"
                    % (name, ", ".join(DRIVER_NAMES)))
            self.driver = load_driver(name, settings, self.handler)
        self._lock = threading.Lock()
        # group -> member -> record: the last successful read of each group
        self._view: dict[str, dict[str, MemberRecord]] = {}

    @property
    def service_down_time(self) -> float:
        return self.driver.service_down_time

    @property
    def report_interval(self) -> float:
        return self.driver.report_interval

    @property
    def available(self) -> bool:
        """False while the back end is known to be unreachable."""
        return self.driver.available

    # -- membership ------------------------------------------------------

    def join(self, member_id: str, group_id: str, service: Any = None) -> None:
        """Join ``group_id`` as ``member_id`` and stay alive there.

        Blocks for the first registration only (heartbeats or the session
        keep it afterwards).  ``service`` is stored with the member when
        it is JSON-serialisable (anything else as its ``str``).  If the back
        end went away after start, the member is registered once it is
        back; no error is raised.
        """
        LOG.debug("servicegroup: %s joins %s", member_id, group_id)
        self.driver.join(member_id, group_id, service)

    def leave(self, member_id: str, group_id: str) -> None:
        """Leave ``group_id``: the member is seen down at once, but stays
        known to the group (so routing treats the host as down for it)."""
        self.driver.leave(member_id, group_id)
        with self._lock:
            rec = self._view.get(group_id, {}).get(member_id)
            if rec is not None:
                self._view[group_id][member_id] = MemberRecord(
                    rec.group, rec.member, False, rec.last_seen, rec.service)

    # -- reads --------------------------------------------------------------

    def _guard(self, what: str, fn: Callable[[], Any], fallback: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ServiceGroupUnavailable as exc:
            LOG.debug("servicegroup: %s answered from the last view: %s", what, exc)
            return fallback()

    def service_is_up(self, member: Any) -> bool:
        """True when the member is alive (see ``member_key`` for what
        ``member`` may be).  Never raises for back-end trouble: answers
        from the last known view then."""
        group, name = member_key(member)

        def read() -> bool:
            up = self.driver.is_up(group, name)
            with self._lock:
                old = self._view.setdefault(group, {}).get(name)
                self._view[group][name] = MemberRecord(
                    group, name, up, old.last_seen if old else None,
                    old.service if old else None)
            return up

        def cached() -> bool:
            with self._lock:
                rec = self._view.get(group, {}).get(name)
            return bool(rec and rec.up)

        return self._guard("service_is_up", read, cached)

    def members(self, group_ids: Iterable[str]) -> dict[str, list[MemberRecord]]:
        """Every member each group ever recorded, up or down, with
        ``last_seen``; from the last known view while the back end is away."""
        groups = sorted(set(group_ids))

        def read() -> dict[str, list[MemberRecord]]:
            got = self.driver.members(groups)
            with self._lock:
                for g, recs in got.items():
                    self._view[g] = {r.member: r for r in recs}
            return got

        def cached() -> dict[str, list[MemberRecord]]:
            with self._lock:
                return {g: sorted(self._view.get(g, {}).values(),
                                  key=lambda r: r.member) for g in groups}

        return self._guard("members", read, cached)

    def get_all(self, group_id: str) -> list[str]:
        """Members of ``group_id`` up now, sorted."""
        return sorted(r.member for r in self.members([group_id])[group_id] if r.up)

    def last_seen(self, member_id: str, group_id: str) -> float | None:
        """Epoch seconds of the member's last sign of life, or None when
        unknown (never joined; a ZooKeeper member gone before we watched)."""
        for rec in self.members([group_id])[group_id]:
            if rec.member == member_id:
                return rec.last_seen
        return None

    def groups(self) -> list[str]:
        """Every group the back end knows (for ``nova-rpc-zmq status``)."""
        def cached() -> list[str]:
            with self._lock:
                return sorted(self._view)
        return self._guard("groups", self.driver.groups, cached)

    # -- notifications and shutdown -------------------------------------------

    @property
    def pushes_changes(self) -> bool:
        """True when the driver tells listeners about changes (zk)."""
        return self.driver.pushes_changes

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on membership changes (drivers with watches
        only); it must return quickly."""
        self.driver.add_listener(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Undo ``add_listener``."""
        self.driver.remove_listener(callback)

    def stop(self, leave: bool = True) -> None:
        """Stop heartbeats and close the back end.  ``leave`` (default)
        marks this process's members down first; ``leave=False`` just
        stops, so they go down after ``service_down_time`` as after a crash
        (for ZooKeeper, closing the session removes them at once)."""
        self.driver.stop(leave=leave)
