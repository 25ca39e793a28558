"""Liveness for the oslo.messaging driver: the hosts a matchmaker returns,
filtered by a ServiceGroup driver (``db``, ``zk``, ``mc``).

On when the ConfigOpts handed to the driver sets ``servicegroup_driver``
(in ``[DEFAULT]``, as for the Nova-era transport; the driver's own options,
``service_down_time``, ``report_interval``, ``[database] connection``,
``[zookeeper] address``, ``memcached_servers``, are read from the same
files; see ``nova_rpc_zmq.servicegroup``). Then ``LiveRegistry`` wraps the
matchmaker's registry:

* ``register`` also joins the target's group once per process: the bare
  topic for an RPC server (``compute``), ``<topic>.<priority>`` for a
  notification listener, with ``rpc_zmq_host`` as the member; the
  ServiceGroup driver keeps the member alive (heartbeats or a session).
* ``members`` drops the members whose host the liveness view
  (``servicegroup.LivenessView``, in memory) reports down in that group or
  as a receiver; so a host whose process hangs or dies stops getting
  messages after ``service_down_time`` (plus one refresh), not after
  ``zmq_target_expire``. A host never recorded in a group counts as up
  (fail open), as on the Nova-era side.

The verdict is per host: two processes of one host serving the same topic
keep one member alive together. Nothing is asked per message: the view is
read in ``members``, which ``registry.Lookup`` calls at most every
``CACHE_SECONDS`` per key.
"""

from __future__ import annotations

import logging
from typing import Any

from nova_rpc_zmq import errors
from nova_rpc_zmq.oslo_driver.registry import POOL_SEPARATOR, Registry

LOG = logging.getLogger(__name__)

#: Key prefixes (``driver.rpc_key`` / ``driver.notify_key``) whose third
#: part, after ``<prefix>/<exchange>/``, is the group.
GROUPED_PREFIXES = ("rpc", "notify")


def group_of(key: str) -> str | None:
    """The ServiceGroup group of registry ``key`` (``rpc/<exchange>/
    <topic>[/<server>]`` -> ``topic``; ``notify/<exchange>/<topic.priority>``
    -> ``topic.priority``), None for any other shape."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] not in GROUPED_PREFIXES or not parts[2]:
        return None
    return parts[2]


def host_of(member: str) -> str:
    """The host of a member (``host:port`` or ``pool@host:port``)."""
    address = member.rpartition(POOL_SEPARATOR)[2]
    return address.rpartition(":")[0] or address


def servicegroup_settings(conf: Any) -> Any:
    """The ``config.Settings`` of ``conf`` when it enables a ServiceGroup
    driver, else None. Raises ``errors.ConfigurationError`` for a bad
    value of the ServiceGroup options."""
    if conf is None:
        return None
    from nova_rpc_zmq import config
    settings = config.settings_for(conf, rpc_backend="impl_zmq")
    return settings if settings.servicegroup_enabled else None


class LiveRegistry(Registry):
    """A registry whose answers leave out hosts reported down.

    ``api`` is a ``servicegroup.API``, ``view`` a ``LivenessView`` over it
    (both closed by ``close``), ``host`` this process's ``rpc_zmq_host``.
    Thread-safe as the wrapped registry is.
    """

    def __init__(self, inner: Registry, api: Any, view: Any,
                 host: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.api = api
        self.view = view
        self.host = host
        self._joined: set[str] = set()
        self._watched: set[str] = set()

    @classmethod
    def wrap(cls, inner: Registry, conf: Any, host: str,
             handler: Any = None) -> Registry:
        """``inner`` filtered by the ServiceGroup driver ``conf`` enables,
        or ``inner`` itself when none is. Raises
        ``ServiceGroupUnavailable`` naming the back end when it does not
        answer, ``errors.ConfigurationError`` for a bad option."""
        settings = servicegroup_settings(conf)
        if settings is None:
            return inner
        from nova_rpc_zmq.servicegroup import API, LivenessView
        api = API(settings, handler=handler)
        try:
            view = LivenessView.from_settings(api, settings, handler=handler)
        except BaseException:
            api.stop(leave=False)
            raise
        LOG.info("the %s matchmaker's hosts are filtered by the %s "
                 "servicegroup driver (down after %.0fs)", inner.name,
                 settings.servicegroup_driver, api.service_down_time)
        return cls(inner, api, view, host)

    def register(self, key: str, member: str, ttl: float) -> None:
        self.inner.register(key, member, ttl)
        group = group_of(key)
        if group is None or group in self._joined:
            return
        try:
            self.api.join(self.host, group)
        except errors.LocalError as exc:
            LOG.warning("%s cannot join the servicegroup %r (%s); callers "
                        "count it up there", self.host, group, exc)
        except Exception as exc:
            # the registration stands (callers fail open on a member never
            # recorded); the join is tried again at the next refresh
            LOG.warning("%s could not join the servicegroup %r (retried "
                        "at the next zmq_target_update): %s", self.host,
                        group, exc)
            return
        self._joined.add(group)

    def unregister(self, key: str, member: str) -> None:
        # The group stays joined: another listener of this process (or
        # of this host) may serve it; a stopped server leaves the
        # matchmaker, which is what callers read first.
        self.inner.unregister(key, member)

    def members(self, key: str) -> list[str]:
        found = self.inner.members(key)
        group = group_of(key)
        if not found or group is None:
            return found
        if group not in self._watched:
            # first look at this group: read it now (one query), so the
            # first message already avoids a host known down
            self._watched.add(group)
            self.view.watch_topics([group])
        is_up = self.view.is_up
        alive = [m for m in found if is_up(host_of(m), group)]
        if len(alive) < len(found):
            LOG.debug("%s: left out %s (reported down)", key,
                      ", ".join(sorted(set(found) - set(alive))))
        return alive

    def close(self) -> None:
        try:
            self.view.close()
            # heartbeats stop; the member goes down after service_down_time
            # unless another process of this host keeps it alive
            self.api.stop(leave=False)
        except Exception as exc:
            LOG.warning("stopping the servicegroup of the %s matchmaker "
                        "failed: %s", self.name, exc)
        self.inner.close()
