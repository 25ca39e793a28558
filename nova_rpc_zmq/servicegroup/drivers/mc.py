"""ServiceGroup driver ``mc``: heartbeat keys in memcached.

Options (from ``Settings``): ``memcached_servers`` - a list of
``host:port`` (the client spreads keys over them by hash), or None for an
in-process store with the same time-to-live rules (all-in-one deployments
and tests: only members of this process are visible); ``report_interval``;
``service_down_time``.

Keys (all prefixed ``nrz-sg:``, hashed with SHA-256 when a name is not
memcached-safe or too long):

* ``nrz-sg:m:<group>:<member>`` - one per member, value JSON
  ``{"t": last heartbeat, "s": service}`` (or ``"left"`` after a graceful
  leave), rewritten every ``report_interval``: all members of the process
  in one ``set_multi``.  Its time-to-live is ``RETAIN_SECONDS`` (a day),
  far beyond ``service_down_time``: the verdict comes from ``"t"``, and a
  reader that starts after a member died can still say when it was last
  seen (``nova-rpc-zmq status``).
* ``nrz-sg:i:<group>`` - the group index (memcached cannot list keys):
  JSON ``{"m": {member: first seen}}``, never expires, only grows (so a
  dead member stays *known*, which the liveness view relies on).  Updated
  with ``gets``/``cas`` and a bounded retry; every heartbeat re-checks it, so
  an index lost with its server is rebuilt within one interval.
* ``nrz-sg:groups`` - the list of groups, kept the same way.

A member is up while the newest heartbeat time this process has seen for
it is within ``service_down_time`` (writer's clock: keep hosts in NTP
sync).  Remembering the newest time, rather than trusting a missing key,
tolerates the loss of one of several servers: the client rehashes the keys
of a dead server to a live one, where they are missing until the member's
next heartbeat - one ``report_interval``, well inside the down time.
Readers also keep asking for members they knew even when an index is
missing, so members keyed on live servers stay visible meanwhile.

While every server is away: heartbeats are retried with capped back-off
(cap ``report_interval``), reads raise ``ServiceGroupUnavailable`` and the
API answers from its last known view.

Never unpickled: python-memcached by default unpickles every value stored
with flag 1, so anyone who can write to memcached would run code in every
service using this driver.  This driver writes only ``str`` values (JSON)
and reads through ``SafeClient`` (``mc_store``), which hands back the raw
text of values stored as bytes or text and refuses everything else
(pickles, integers, compressed values) without decoding it; its pickler
and unpickler refuse too.  A value that is not ours - any of those, text that is not JSON, or
JSON of the wrong shape - is logged (at most once a minute, with how many
were ignored) and ignored: the member is treated as not heard from, and the
next heartbeat or index merge overwrites the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from nova_rpc_zmq import concurrency, errors, options
from nova_rpc_zmq.servicegroup.drivers import base
from nova_rpc_zmq.servicegroup.drivers.mc_store import (  # noqa: F401 - API
    MERGE_TRIES, LocalStore, MemcachedStore, NotOurs, RefusedValue,
    RefusingPickler, RefusingUnpickler, make_client)

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

KEY_PREFIX = "nrz-sg"
#: memcached refuses keys of 250 bytes or more; stay clear of it
MAX_KEY_LEN = 200
GROUPS_KEY = KEY_PREFIX + ":groups"
#: seconds a member key outlives its last write (memcached may evict it
#: sooner under memory pressure; the verdict never depends on the key's
#: presence, only on the heartbeat time it holds)
RETAIN_SECONDS = 24 * 3600
#: seconds between two log lines about values this driver did not write
NOT_OURS_LOG_INTERVAL = 60.0


def safe_key(*parts: str) -> str:
    """A memcached-safe key for ``parts``: printable ASCII without spaces,
    shorter than ``MAX_KEY_LEN``; otherwise a SHA-256 of the full name."""
    raw = ":".join((KEY_PREFIX,) + parts)
    if len(raw) < MAX_KEY_LEN and all(0x21 <= ord(c) <= 0x7E for c in raw):
        return raw
    return "%s:h:%s" % (KEY_PREFIX, hashlib.sha256(raw.encode("utf-8")).hexdigest())


def member_key(group_id: str, member_id: str) -> str:
    """The heartbeat key of one member."""
    return safe_key("m", group_id, member_id)


def index_key(group_id: str) -> str:
    """The key listing every member a group ever had."""
    return safe_key("i", group_id)


class NotOursLog:
    """Warns about values this driver did not write, at most once per
    ``interval`` seconds, with how many were ignored meanwhile.

    ``count`` is the total ignored.  Thread-safe.
    """

    def __init__(self, interval: float = NOT_OURS_LOG_INTERVAL) -> None:
        self.interval = interval
        self.count = 0
        self._unlogged = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def note(self, key: str, problem: str) -> None:
        """Count one ignored value of ``key``; log if the interval passed."""
        now = time.monotonic()
        with self._lock:
            self.count += 1
            self._unlogged += 1
            if self._last is not None and now - self._last < self.interval:
                return
            self._last, ignored, self._unlogged = now, self._unlogged, 0
        LOG.warning("servicegroup mc: ignored memcached key %s: %s; it is not "
                    "a value this driver wrote and is never unpickled (%d "
                    "such value(s) ignored since the last report). Something "
                    "else writes to these memcached servers: give the "
                    "servicegroup its own memcached or find the writer",
                    key, problem, ignored)


def _decode(raw: Any, key: str, not_ours: NotOursLog | None) -> Any:
    """The JSON document in ``raw`` (None when absent or not ours; the
    latter is reported to ``not_ours``)."""
    if raw is None:
        return None
    if isinstance(raw, NotOurs):
        problem = "stored with flags %d (%s), %d bytes, at %s" % (
            raw.flags, "a pickle" if raw.flags & 1 else "not text",
            raw.size, raw.server)
    else:
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            problem = "not JSON (%d characters)" % len(raw) \
                if isinstance(raw, (str, bytes)) else "not text"
    if not_ours is not None:
        not_ours.note(key, problem)
    return None


def _index_names(raw: Any, key: str, field: str,
                 not_ours: NotOursLog | None) -> dict[str, Any]:
    """The names an index (``field`` "m": name -> first seen) or the group
    list (``field`` "g": a list) holds, as a dict; {} when absent or not
    ours."""
    doc = _decode(raw, key, not_ours)
    if doc is None:
        return {}
    listed = doc.get(field) if isinstance(doc, dict) else None
    if field == "g" and isinstance(listed, list) \
            and all(isinstance(n, str) for n in listed):
        return dict.fromkeys(listed)
    if field == "m" and isinstance(listed, dict):
        return listed
    if not_ours is not None:
        not_ours.note(key, "JSON without a valid %r field" % field)
    return {}


def _heartbeat(raw: Any, key: str,
               not_ours: NotOursLog | None) -> dict[str, Any] | None:
    """A member key's document if it has our shape: finite numbers ``t``
    (and ``left``, when set); None otherwise."""
    doc = _decode(raw, key, not_ours)
    if doc is None:
        return None
    if isinstance(doc, dict) and _finite(doc.get("t")) and (
            doc.get("left") is None or _finite(doc.get("left"))):
        return doc
    if not_ours is not None:
        not_ours.note(key, "JSON that is not a heartbeat")
    return None


def _finite(value: Any) -> bool:
    """A real, finite number (JSON's NaN and Infinity would make a member
    up for ever; a bool is no time)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


class McDriver(base.Driver):
    """Heartbeat keys in memcached (or in-process); see the module docstring."""

    name = "mc"

    def __init__(self, memcached_servers: Sequence[str] | str | None =
                 options.default("memcached_servers"), *,
                 service_down_time: float = options.default("service_down_time"),
                 report_interval: float = options.default("report_interval"),
                 handler: concurrency.Handler | None = None,
                 socket_timeout: float | None = None) -> None:
        super().__init__(service_down_time=service_down_time,
                         report_interval=report_interval, handler=handler)
        servers = _server_list(memcached_servers)
        self.servers = servers
        if servers:
            timeout = socket_timeout or max(0.2, min(3.0, self.report_interval / 2))
            # a dead server is retried after one interval, not memcached's 30 s
            self.store: Any = MemcachedStore(servers, timeout,
                                             dead_retry=max(1.0, self.report_interval))
        else:
            self.store = LocalStore.shared()
        self.health = base.BackendHealth("mc", self.address, LOG)
        #: values found in memcached that this driver did not write
        self.not_ours = NotOursLog()
        if not self.store.alive():
            self.store.close()
            raise base.ServiceGroupUnavailable(
                "mc", self.address, "no memcached server accepts connections; "
                "check memcached_servers and that memcached runs")
        # not service_down_time: a key expiring with its member would hide
        # when a dead member was last seen from every reader started later
        self._ttl = int(math.ceil(max(self.service_down_time, RETAIN_SECONDS)))
        self._lock = threading.Lock()
        # held across a heartbeat and a leave, so that a heartbeat cannot
        # rewrite a member that left while it was running
        self._beat_lock = threading.Lock()
        self._mine: dict[tuple[str, str], Any] = {}
        # (group, member) -> (newest heartbeat time seen, left_at, service)
        self._seen: dict[tuple[str, str], tuple[float, float | None, Any]] = {}
        self._known_groups: set[str] = set()
        self._wake = self.handler.Event()
        self._stopped = False
        self._task: Any = None
        self.beats = 0

    @classmethod
    def from_settings(cls, settings: config.Settings,
                      handler: concurrency.Handler | None = None) -> "McDriver":
        """Build from ``Settings`` (``memcached_servers``,
        ``service_down_time``, ``report_interval``)."""
        return cls(settings.memcached_servers,
                   service_down_time=settings.service_down_time,
                   report_interval=settings.report_interval, handler=handler)

    @property
    def address(self) -> str:
        return ",".join(self.servers) if self.servers else "in-process store"

    # -- membership of this process ---------------------------------------

    def join(self, member_id: str, group_id: str, service: Any = None) -> None:
        """Write the member's key and index entry now, then keep them fresh.
        If every server is away the member is queued for the heartbeat."""
        key = (base.check_name("group", group_id),
               base.check_name("member", member_id))
        with self._lock:
            self._mine[key] = service
            if self._task is None:
                self._task = self.handler.spawn(self._run)
        try:
            self._beat([key])
            self.health.restored()
        except base.ServiceGroupUnavailable:
            pass  # logged by health; the heartbeat task retries

    def leave(self, member_id: str, group_id: str) -> None:
        """Stop the heartbeat and write a 'left' mark so readers see the
        member down at once (the index keeps it known)."""
        key = (group_id, member_id)
        with self._beat_lock:
            with self._lock:
                self._mine.pop(key, None)
            now = time.time()
            last = self._seen.get(key, (now, None, None))[0]
            self._seen[key] = (last, now, None)
            failed = self.store.set_multi(
                {member_key(group_id, member_id): json.dumps({"t": last, "left": now})},
                self._ttl)
        if failed:
            LOG.warning("servicegroup mc: could not mark %s/%s as left; it "
                        "will be seen down after service_down_time",
                        group_id, member_id)

    def _run(self) -> None:
        base.heartbeat_loop(
            lambda: self._beat(None), driver="mc", health=self.health,
            interval=lambda: self.report_interval, wake=self._wake,
            stopped=lambda: self._stopped, log=LOG)

    def _beat(self, only: list[tuple[str, str]] | None) -> None:
        """Refresh the keys of this process's members (or of ``only``) and
        make sure the indexes list them.  Raises ServiceGroupUnavailable
        when no server takes them."""
        with self._beat_lock:
            with self._lock:
                members = {k: v for k, v in self._mine.items()
                           if only is None or k in only}
            if members:
                self._beat_locked(members)

    def _beat_locked(self, members: dict[tuple[str, str], Any]) -> None:
        if not self.store.alive():
            raise self.health.unavailable("no memcached server answers")
        now = time.time()
        mapping = {member_key(g, m): json.dumps({"t": now, "s": svc}, default=str)
                   for (g, m), svc in members.items()}
        failed = self.store.set_multi(mapping, self._ttl)
        if len(failed) == len(mapping):
            raise self.health.unavailable("no memcached server stored the heartbeat")
        for (g, m), svc in members.items():
            self._seen[(g, m)] = (now, None, svc)
        by_group: dict[str, set[str]] = {}
        for g, m in members:
            by_group.setdefault(g, set()).add(m)
        keys = [index_key(g) for g in by_group] + [GROUPS_KEY]
        current = self.store.get_multi(keys)
        for g, names in by_group.items():
            listed = _index_names(current.get(index_key(g)), index_key(g), "m",
                                  self.not_ours)
            if not names <= set(listed):
                self._merge_index(g, names, now)
        groups_now = set(_index_names(current.get(GROUPS_KEY), GROUPS_KEY, "g",
                                      self.not_ours))
        if not set(by_group) <= groups_now:
            self.store.merge(GROUPS_KEY, _adder("g", set(by_group), now))
        self._known_groups.update(by_group)
        self.beats += 1

    def _merge_index(self, group_id: str, names: set[str], now: float) -> None:
        if not self.store.merge(index_key(group_id), _adder("m", names, now)):
            LOG.info("servicegroup mc: index of %s kept changing; the next "
                     "heartbeat adds %s", group_id, sorted(names))

    # -- reads -----------------------------------------------------------------

    def _verdict(self, key: tuple[str, str], now: float) -> base.MemberRecord:
        t, left, svc = self._seen.get(key, (None, None, None))
        up = (t is not None and left is None
              and now - t <= self.service_down_time)
        if not up and t is not None and left is None:
            cutoff = self.health.grace_cutoff(now, self.service_down_time)
            up = cutoff is not None and t >= cutoff
        return base.MemberRecord(key[0], key[1], up, t, svc)

    def _observe(self, key: tuple[str, str], raw: Any) -> None:
        value = _heartbeat(raw, member_key(*key), self.not_ours)
        if value is None:
            return  # absent or not ours: not heard from
        t = float(value["t"])
        old_t, old_left, old_svc = self._seen.get(key, (None, None, None))
        left = value.get("left")
        if left is not None:
            self._seen[key] = (max(t, old_t or t), float(left), old_svc)
        elif old_t is None or t >= old_t:
            self._seen[key] = (t, None, value.get("s"))

    def members(self, group_ids: Iterable[str]) -> dict[str, list[base.MemberRecord]]:
        """Two multi-gets: the indexes, then every member key."""
        groups = sorted(set(group_ids))
        if not groups:
            return {}
        if not self.store.alive():
            raise self.health.unavailable("no memcached server answers")
        indexes = self.store.get_multi([index_key(g) for g in groups])
        names: dict[str, set[str]] = {}
        for g in groups:
            listed = _index_names(indexes.get(index_key(g)), index_key(g), "m",
                                  self.not_ours)
            names[g] = set(listed) | {m for (gg, m) in list(self._seen) if gg == g}
        wanted = {member_key(g, m): (g, m) for g in groups for m in names[g]}
        values = self.store.get_multi(list(wanted))
        for k, raw in values.items():
            self._observe(wanted[k], raw)
        self.health.restored()
        now = time.time()
        return {g: [self._verdict((g, m), now) for m in sorted(names[g])]
                for g in groups}

    def is_up(self, group_id: str, member_id: str) -> bool:
        if not self.store.alive():
            raise self.health.unavailable("no memcached server answers")
        key = (group_id, member_id)
        raw = self.store.get_multi([member_key(group_id, member_id)])
        for v in raw.values():
            self._observe(key, v)
        self.health.restored()
        return self._verdict(key, time.time()).up

    def groups(self) -> list[str]:
        if not self.store.alive():
            raise self.health.unavailable("no memcached server answers")
        raw = self.store.get_multi([GROUPS_KEY]).get(GROUPS_KEY)
        listed = set(_index_names(raw, GROUPS_KEY, "g", self.not_ours))
        return sorted(listed | self._known_groups)

    def stop(self, leave: bool = True) -> None:
        if self._stopped:
            return
        with self._lock:
            mine = list(self._mine)
        if leave:
            for group_id, member_id in mine:
                try:
                    self.leave(member_id, group_id)
                except Exception:  # noqa: BLE001 - stopping anyway
                    LOG.exception("servicegroup mc: leave of %s/%s failed",
                                  group_id, member_id)
        self._stopped = True
        self._wake.set()
        self.store.close()


def _adder(field: str, names: set[str], now: float) -> Callable[[Any], str | None]:
    """A merge function adding ``names`` to the JSON object's ``field``
    (a dict name -> first seen, or a list); None when nothing is missing.
    A value that is not ours is replaced (the caller already reported it;
    other members re-add themselves at their next heartbeat)."""

    def fn(raw: Any) -> str | None:
        doc = _decode(raw, "", None)
        if not isinstance(doc, dict):
            doc = {}
        if field == "g":
            listed = doc.get("g")
            have = {n for n in listed if isinstance(n, str)} \
                if isinstance(listed, list) else set()
            if names <= have:
                return None
            doc["g"] = sorted(have | names)
        else:
            have_map = doc.get("m")
            if not isinstance(have_map, dict):
                have_map = {}
            if names <= set(have_map):
                return None
            for n in names:
                have_map.setdefault(n, now)
            doc["m"] = have_map
        return json.dumps(doc, sort_keys=True)

    return fn


def _server_list(value: Sequence[str] | str | None) -> list[str]:
    """Normalise ``memcached_servers``; raise ConfigurationError on junk."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    out = []
    for item in value:
        item = str(item).strip()
        if not item or item == "<None>":
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise errors.ConfigurationError(
                "memcached_servers entry %r is not host:port; write e.g. "
                "memcached_servers = 10.0.0.5:11211,10.0.0.6:11211" % item)
        out.append(item)
    return out
