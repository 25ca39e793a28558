"""The Redis matchmaker of the oslo.messaging driver (``zmq+redis://``,
and ``zmq+sentinel://`` for a master found through Redis Sentinel).

Layout, under the prefix ``nova_rpc_zmq:oslo``:

* ``<prefix>:<key>`` is a set of members (``host:port``); its TTL is
  renewed with every registration;
* ``<prefix>:<key>|<member>`` is one member's registration, a string with
  Redis' own TTL of ``zmq_target_expire`` seconds (none when <= 0), so
  expiry follows Redis' clock, not the hosts'.

``members`` reads the set and keeps the members whose registration still
exists, removing the others from the set. Values are plain text; nothing
is unpickled.

Options: ``zmq_target_expire``, ``zmq_target_update`` (the refresh is the
driver's), the URL's ``host:port`` (the first host; the password of the
URL, if any); for Sentinel every ``host:port`` of the URL and the master
name as its path (default ``oslo-messaging-zeromq``).
"""

from __future__ import annotations

import logging
from typing import Any

from nova_rpc_zmq.oslo_driver.registry import MAX_MEMBERS, Registry

LOG = logging.getLogger(__name__)

PREFIX = "nova_rpc_zmq:oslo"
#: Seconds a Redis command may take before the back end counts as down.
SOCKET_TIMEOUT = 1.0
#: The Sentinels' master name when the URL has no path
#: (``zmq+sentinel://h1:26379,h2:26379/<master>``).
DEFAULT_MASTER = "oslo-messaging-zeromq"


def set_key(key: str) -> str:
    """The Redis key of ``key``'s member set."""
    return "%s:%s" % (PREFIX, key)


def member_key(key: str, member: str) -> str:
    """The Redis key of one registration."""
    return "%s:%s|%s" % (PREFIX, key, member)


class RedisRegistry(Registry):
    """Registrations in one Redis server (thread-safe: redis-py pools)."""

    name = "redis"

    def __init__(self, client: Any, where: str) -> None:
        self._redis = client
        self.where = where

    @staticmethod
    def _options() -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        # No retries inside redis-py: a Redis that is away must cost a
        # caller one refused connection, not seconds of back-off (the
        # caller keeps the servers it knew; servers refresh later).
        return {"socket_timeout": SOCKET_TIMEOUT,
                "socket_connect_timeout": SOCKET_TIMEOUT,
                "retry": Retry(NoBackoff(), 0), "decode_responses": True}

    @classmethod
    def from_hosts(cls, hosts: list[Any]) -> "RedisRegistry":
        """One Redis server: the first of a TransportURL's hosts (default
        127.0.0.1:6379), with the URL's password if any."""
        import redis
        first = hosts[0] if hosts else None
        host = (first.hostname if first else None) or "127.0.0.1"
        port = (first.port if first else None) or 6379
        password = (first.password if first else None) or None
        client = redis.Redis(host=host, port=port, password=password,
                             **cls._options())
        return cls(client, "Redis %s:%s" % (host, port))

    @classmethod
    def from_sentinels(cls, hosts: list[Any], master: str | None
                       ) -> "RedisRegistry":
        """The master that the Sentinels at ``hosts`` (default port 26379)
        name for ``master`` (default ``DEFAULT_MASTER``); a failover is
        followed at the next command."""
        from redis.sentinel import Sentinel
        if not hosts:
            raise ValueError("zmq+sentinel:// needs the Sentinels: "
                             "zmq+sentinel://host1:26379,host2:26379")
        name = master or DEFAULT_MASTER
        password = hosts[0].password or None
        sentinel = Sentinel(
            [(h.hostname or "127.0.0.1", h.port or 26379) for h in hosts],
            sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT,
                             "socket_connect_timeout": SOCKET_TIMEOUT},
            password=password, **cls._options())
        client = sentinel.master_for(name, **cls._options())
        return cls(client, "Redis master %r of Sentinels %s" % (
            name, ",".join("%s:%s" % (h.hostname, h.port) for h in hosts)))

    def register(self, key: str, member: str, ttl: float) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.sadd(set_key(key), member)
        if ttl > 0:
            seconds = max(1, int(ttl))
            pipe.set(member_key(key, member), "1", ex=seconds)
            pipe.expire(set_key(key), seconds)
        else:
            pipe.set(member_key(key, member), "1")
            pipe.persist(set_key(key))
        pipe.execute()

    def unregister(self, key: str, member: str) -> None:
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.srem(set_key(key), member)
            pipe.delete(member_key(key, member))
            pipe.execute()
        except Exception as exc:  # Redis away: the TTL removes it later
            LOG.warning("could not unregister %s from %s in %s (its TTL "
                        "will): %s", member, key, self.where, exc)

    def members(self, key: str) -> list[str]:
        listed = sorted(str(m) for m in self._redis.smembers(set_key(key))
                        )[:MAX_MEMBERS]
        if not listed:
            return []
        alive = self._redis.mget([member_key(key, m) for m in listed])
        gone = [m for m, flag in zip(listed, alive) if flag is None]
        if gone:
            self._redis.srem(set_key(key), *gone)
        return [m for m, flag in zip(listed, alive) if flag is not None]

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception as exc:
            LOG.debug("closing the Redis client failed: %s", exc)
