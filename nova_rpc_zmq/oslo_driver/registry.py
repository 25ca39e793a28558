"""Where a target's servers listen: the matchmakers of the oslo.messaging
driver.

A registry maps a *key* (``exchange/topic``, ``exchange/topic/server``, a
notification topic) to *members*, the ``host:port`` strings of the sockets
that serve it. Servers ``register`` (again every ``zmq_target_update``
seconds) and ``unregister`` when they stop; callers ask ``members``.

* ``DummyRegistry`` (``zmq+dummy://``): this process only.
* ``DirectoryRegistry`` (``zmq://``): this host, nothing else running. One
  directory per key under a runtime directory, one small file per member,
  named by the member and holding its TTL and the registering process id;
  its mtime is the registration time. Written atomically (a rename),
  ignored and removed once older than its TTL or once its process is gone.
* ``RedisRegistry`` (``zmq+redis://``, ``redis_registry.py``).
* ``liveness.LiveRegistry`` wraps any of them when a ServiceGroup driver
  is configured: hosts it reports down are left out.

All are thread-safe and never unpickle anything. ``Lookup`` is the
callers' policy over a registry (no sockets): it asks the registry at most
every ``CACHE_SECONDS`` per key, keeps the last answer when the registry
fails (Redis away: traffic to known servers goes on), and orders a key's
members: strict round robin (each message starts one member further on,
so three casts to three servers reach all three), members that recently
refused a message last (the round robin goes on over the others).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from typing import Any

LOG = logging.getLogger(__name__)

#: Bound on the members one key may list (and on a directory scan).
MAX_MEMBERS = 4096
#: Longest file name used (most file systems allow 255 bytes).
MAX_NAME = 200
#: Between a notification listener's pool and its ``host:port``.
POOL_SEPARATOR = "@"


class Registry:
    """The contract of a matchmaker back end (thread-safe)."""

    name = "abstract"

    def register(self, key: str, member: str, ttl: float) -> None:
        """Record ``member`` under ``key`` for ``ttl`` seconds (<= 0: for
        ever). Raises on a back end failure."""
        raise NotImplementedError

    def unregister(self, key: str, member: str) -> None:
        """Forget ``member`` under ``key``; never raises (logs)."""
        raise NotImplementedError

    def members(self, key: str) -> list[str]:
        """The live members of ``key``, sorted. Raises on a back end
        failure (the caller keeps what it knew)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; registrations are left to their TTL."""


class DummyRegistry(Registry):
    """Registrations shared by every transport of this process."""

    name = "dummy"
    _lock = threading.Lock()
    _table: dict[str, dict[str, float]] = {}

    def register(self, key: str, member: str, ttl: float) -> None:
        expires = time.monotonic() + ttl if ttl > 0 else float("inf")
        with self._lock:
            self._table.setdefault(key, {})[member] = expires

    def unregister(self, key: str, member: str) -> None:
        with self._lock:
            self._table.get(key, {}).pop(member, None)

    def members(self, key: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            entries = self._table.get(key, {})
            for member in [m for m, exp in entries.items() if exp < now]:
                del entries[member]
            return sorted(entries)


def _encode(text: str) -> str:
    """A file name for any text (no '/', no leading '.')."""
    raw = base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")
    return "k" + raw.rstrip("=")


def _decode(name: str) -> str | None:
    if not name.startswith("k"):
        return None
    raw = name[1:]
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)
                                        ).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def default_runtime_dir() -> str:
    """``$XDG_RUNTIME_DIR/nova-rpc-zmq-oslo`` or a per-user directory in
    the temporary directory."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "nova-rpc-zmq-oslo")
    return os.path.join(tempfile.gettempdir(),
                        "nova-rpc-zmq-oslo-%d" % os.getuid())


class DirectoryRegistry(Registry):
    """Registrations of this host's processes, in a directory.

    The directory is created 0700; one owned by another user or writable
    by others is refused (``PermissionError``), since its entries decide
    where messages go.
    """

    name = "directory"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get("NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR") \
            or default_runtime_dir()
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        info = os.stat(self.path)
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP
                                                         | stat.S_IWOTH):
            raise PermissionError(
                "registry directory %s must be owned by uid %d and not "
                "writable by group or others; fix its mode or set "
                "NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR" % (self.path, os.getuid()))

    def _key_dir(self, key: str) -> str:
        name = _encode(key)
        if len(name) > MAX_NAME:
            # a long topic: named by its digest (never decoded)
            name = "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()
        return os.path.join(self.path, name)

    def register(self, key: str, member: str, ttl: float) -> None:
        key_dir = self._key_dir(key)
        os.makedirs(key_dir, mode=0o700, exist_ok=True)
        # The TTL goes in the file, so readers in other processes apply
        # the writer's; written to a temporary name, then renamed (atomic).
        fd, tmp = tempfile.mkstemp(dir=key_dir, prefix=".tmp")
        try:
            os.write(fd, ("%s %d" % (float(ttl), os.getpid())).encode("ascii"))
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(key_dir, _encode(member)))

    def unregister(self, key: str, member: str) -> None:
        try:
            os.unlink(os.path.join(self._key_dir(key), _encode(member)))
        except FileNotFoundError:
            pass
        except OSError as exc:
            LOG.warning("could not unregister %s from %s in %s: %s",
                        member, key, self.path, exc)

    @staticmethod
    def _entry(path: str) -> tuple[float, int]:
        """(ttl, pid) of one registration file; (0, 0) when unreadable."""
        try:
            with open(path, "rb") as f:
                ttl, pid = f.read(64).decode("ascii").split()
            return float(ttl), int(pid)
        except (OSError, ValueError, UnicodeDecodeError):
            return 0.0, 0

    @staticmethod
    def _pid_gone(pid: int) -> bool:
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # alive, another user's
        return False

    def members(self, key: str) -> list[str]:
        key_dir = self._key_dir(key)
        found: list[str] = []
        now = time.time()
        try:
            entries = os.scandir(key_dir)
        except FileNotFoundError:
            return found
        with entries:
            for count, entry in enumerate(entries):
                if count >= MAX_MEMBERS:
                    LOG.warning("registry key %s lists more than %d members; "
                                "the rest are ignored", key, MAX_MEMBERS)
                    break
                member = _decode(entry.name)
                if member is None:
                    continue
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                ttl, pid = self._entry(entry.path)
                # All on this host: a registration whose process is gone
                # is dropped at once, not after its TTL.
                if (ttl > 0 and now - mtime > ttl) or self._pid_gone(pid):
                    self._remove_stale(entry.path)
                    continue
                found.append(member)
        return sorted(found)

    @staticmethod
    def _remove_stale(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass


def registry_for(kind: str, url: Any, conf: Any = None, host: str = "",
                 handler: Any = None) -> Registry:
    """The registry named ``kind`` (``dummy``, ``directory``, ``redis``,
    ``sentinel``) for the TransportURL ``url``; when ``conf`` configures a
    ServiceGroup driver, its answers leave out the hosts that driver
    reports down and ``host`` (``rpc_zmq_host``) joins the groups of what
    it registers (``liveness.LiveRegistry``)."""
    inner = _back_end(kind, url)
    if conf is None:
        return inner
    from nova_rpc_zmq.oslo_driver.liveness import LiveRegistry
    try:
        return LiveRegistry.wrap(inner, conf, host, handler)
    except BaseException:
        inner.close()
        raise


def _back_end(kind: str, url: Any) -> Registry:
    hosts = list(url.hosts)
    if kind == "dummy":
        return DummyRegistry()
    if kind == "directory":
        return DirectoryRegistry()
    if kind == "ring":
        # zmq+ring:// routes by the Nova-era ring file (oslo_driver/ring.py)
        # and registers nothing: an empty registry of this process
        return DummyRegistry()
    if kind == "redis":
        from nova_rpc_zmq.oslo_driver.redis_registry import RedisRegistry
        return RedisRegistry.from_hosts(hosts)
    if kind == "sentinel":
        from nova_rpc_zmq.oslo_driver.redis_registry import RedisRegistry
        return RedisRegistry.from_sentinels(hosts, url.virtual_host)
    raise ValueError("unknown matchmaker %r" % kind)


#: Seconds a registry answer is reused (new servers are seen this late).
CACHE_SECONDS = 0.2
#: Seconds the last answer is kept before asking a failed registry again.
FAILED_BACKOFF = 5.0
#: Seconds a member that refused a message is tried last.
SUSPECT_SECONDS = 10.0

class Lookup:
    """Cached registry look-ups and round-robin order (thread-safe)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._turn: dict[str, int] = {}
        self._suspects: dict[str, float] = {}

    def members(self, key: str, fresh: bool = False) -> list[str]:
        """The members of ``key`` (sorted); ``fresh`` skips the cache."""
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and not fresh and cached[0] > now:
            return cached[1]
        try:
            found = self.registry.members(key)
        except Exception as exc:
            known = cached[1] if cached is not None else []
            LOG.warning("the %s matchmaker failed (%s); using the %d "
                        "server(s) known for %s for %.0fs", self.registry.name,
                        exc, len(known), key, FAILED_BACKOFF)
            self._cache[key] = (now + FAILED_BACKOFF, known)
            return known
        self._cache[key] = (now + CACHE_SECONDS, found)
        return found

    def _ordered(self, turn_key: str, members: list[str]) -> list[str]:
        if not members:
            return members
        with self._lock:
            turn = self._turn.get(turn_key, 0)
            self._turn[turn_key] = turn + 1
            late: list[str] = []
            if self._suspects:
                now = time.monotonic()
                for member in [m for m, t in self._suspects.items()
                               if t < now]:
                    del self._suspects[member]
                # the turn goes round the others only: skipping a suspect
                # must not hand its turn to its neighbour as well
                late = [m for m in members if m in self._suspects]
                if late:
                    members = [m for m in members if m not in self._suspects]
            if not members:
                return late
            start = turn % len(members)
            return members[start:] + members[:start] + late

    def rotation(self, key: str, fresh: bool = False) -> list[str]:
        """The members of ``key`` in the order to try for one message."""
        return self._ordered(key, self.members(key, fresh))

    def pools(self, key: str) -> dict[str, list[str]]:
        """Notification listeners of ``key`` by pool ('' for none), each
        pool's ``host:port`` list in the order to try (an empty answer is
        checked with the registry at once)."""
        groups: dict[str, list[str]] = {}
        for member in self.members(key) or self.members(key, fresh=True):
            pool, sep, address = member.rpartition(POOL_SEPARATOR)
            if sep:
                groups.setdefault(pool, []).append(address)
        return {pool: self._ordered(key + POOL_SEPARATOR + pool, addresses)
                for pool, addresses in groups.items()}

    def suspect(self, member: str) -> None:
        """``member`` refused a message: try it last for a while."""
        with self._lock:
            self._suspects[member] = time.monotonic() + SUSPECT_SECONDS
