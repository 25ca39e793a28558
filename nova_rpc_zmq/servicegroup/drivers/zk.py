"""ServiceGroup driver ``zk``: ephemeral znodes in ZooKeeper, via kazoo.

Options (from ``Settings``): ``zookeeper_address`` (``[zookeeper] address``,
``host:port[,host:port...]``); ``zookeeper_recv_timeout`` - the session
timeout in milliseconds (4000): a member whose process dies or is cut off
is removed by the ZooKeeper servers this long after its last contact;
``zookeeper_sg_prefix`` (``/servicegroups``); ``zookeeper_sg_retry_interval``
- the longest pause, in seconds, between two reconnection attempts (5).

Layout: ``<prefix>/<group>/<member>`` is an *ephemeral* znode owned by the
member's session (data: JSON with the service and the join time), so it
lives exactly as long as the session.  ``<prefix>/.known/<group>/<member>``
is a persistent record written at join, so a member that died stays
*known* (down) - the liveness view relies on that; group and member names
may therefore not start with '.'.

Reads come from memory: each group asked about gets two ``ChildrenWatch``
(members present, members known); ZooKeeper pushes changes and the driver
tells its listeners, so nothing is polled.  kazoo runs on
``kazoo.handlers.eventlet`` in a monkey-patched process and on threads
otherwise, chosen through ``nova_rpc_zmq.concurrency``.

Sessions: while the connection is down (SUSPENDED) the last view is kept
as it is and kazoo reconnects with capped back-off.  When the servers
declare the session expired (LOST) the ephemeral nodes of this process
are gone: they are dropped from the local view too, and re-created as
soon as a new session is CONNECTED - members re-join by themselves.
Note that a ZooKeeper server restarted with its data directory restores
open sessions, so a short server outage expires nothing; and that servers
rebuilt with empty data refuse clients that have seen a newer transaction
id (ZooKeeper's own rule): restart the services after such a rebuild.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.recipe.watchers import ChildrenWatch

from nova_rpc_zmq import concurrency, errors, options
from nova_rpc_zmq.servicegroup.drivers import base

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)
KNOWN = ".known"

# kazoo logs every failed reconnection attempt as a warning; we log the
# change of state once (BackendHealth) and keep its chatter for debug
_KAZOO_CHATTER = ("Connection dropped", "Connection time-out",
                  "Transition to CONNECTING", "Session has expired",
                  "Connecting to", "Zookeeper connection lost",
                  "Failed connecting to Zookeeper")


class _QuietKazooLog(logging.LoggerAdapter):
    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if level < logging.ERROR and str(msg).startswith(_KAZOO_CHATTER):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


def _kazoo_handler(handler: concurrency.Handler) -> Any:
    if handler.green:
        from kazoo.handlers.eventlet import SequentialEventletHandler
        return SequentialEventletHandler()
    from kazoo.handlers.threading import SequentialThreadingHandler
    return SequentialThreadingHandler()


class ZkDriver(base.Driver):
    """Ephemeral znodes in ZooKeeper; see the module docstring."""

    name = "zk"
    pushes_changes = True

    def __init__(self, zookeeper_address: str | None, *,
                 service_down_time: float = options.default("service_down_time"),
                 report_interval: float = options.default("report_interval"),
                 recv_timeout_ms: int = options.default("zookeeper_recv_timeout"),
                 sg_prefix: str = options.default("zookeeper_sg_prefix"),
                 retry_interval: float = options.default("zookeeper_sg_retry_interval"),
                 handler: concurrency.Handler | None = None,
                 start_timeout: float | None = None) -> None:
        super().__init__(service_down_time=service_down_time,
                         report_interval=report_interval, handler=handler)
        if not zookeeper_address or not str(zookeeper_address).strip():
            raise errors.ConfigurationError(
                "servicegroup_driver = zk needs [zookeeper] address = "
                "host:port[,host:port...]")
        self._address = str(zookeeper_address).strip()
        if not sg_prefix.startswith("/") or sg_prefix.endswith("/") and sg_prefix != "/":
            raise errors.ConfigurationError(
                "[zookeeper] sg_prefix %r must be an absolute znode path "
                "without a trailing '/', e.g. /servicegroups" % sg_prefix)
        self.prefix = sg_prefix.rstrip("/") or ""
        self.health = base.BackendHealth("zk", self._address, LOG)
        self.kz_handler = _kazoo_handler(self.handler)
        sleep = self.kz_handler.sleep_func
        self.client = KazooClient(
            hosts=self._address, timeout=max(0.5, recv_timeout_ms / 1000.0),
            handler=self.kz_handler,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2,
                              "max_delay": max(0.2, float(retry_interval)),
                              "sleep_func": sleep},
            command_retry={"max_tries": 2, "delay": 0.1, "max_delay": 1.0,
                           "sleep_func": sleep},
            logger=_QuietKazooLog(logging.getLogger("kazoo.client"), {}))
        self._lock = threading.RLock()        # state below; never held on I/O
        self._watch_lock = threading.Lock()   # one watch set-up at a time
        self._mine: dict[tuple[str, str], Any] = {}
        self._pending: set[tuple[str, str]] = set()
        self._live: dict[str, set[str]] = {}
        self._known: dict[str, set[str]] = {}
        self._gone_at: dict[tuple[str, str], float] = {}
        self._watches: dict[str, tuple[Any, Any]] = {}
        self._session_id: int | None = None
        self._stopped = False
        self._rejoining = False
        self.rejoins = 0  # sessions after which members were re-created
        self.client.add_listener(self._on_state)
        timeout = start_timeout or max(2.0, recv_timeout_ms / 1000.0)
        try:
            self.client.start(timeout=timeout)
        except Exception as exc:  # kazoo's handler-specific timeout error
            self._close_client()
            raise base.ServiceGroupUnavailable(
                "zk", self._address, "no ZooKeeper session within %.1fs (%s)"
                % (timeout, type(exc).__name__)) from exc
        self._session_id = self.client.client_id[0] if self.client.client_id else None

    @classmethod
    def from_settings(cls, settings: config.Settings,
                      handler: concurrency.Handler | None = None) -> "ZkDriver":
        """Build from ``Settings`` (``zookeeper_address``,
        ``zookeeper_recv_timeout``, ``zookeeper_sg_prefix``,
        ``zookeeper_sg_retry_interval``, ``service_down_time``,
        ``report_interval``)."""
        return cls(settings.zookeeper_address,
                   service_down_time=settings.service_down_time,
                   report_interval=settings.report_interval,
                   recv_timeout_ms=settings.zookeeper_recv_timeout,
                   sg_prefix=settings.zookeeper_sg_prefix,
                   retry_interval=settings.zookeeper_sg_retry_interval,
                   handler=handler)

    @property
    def address(self) -> str:
        return self._address

    def _path(self, group_id: str, member_id: str | None = None) -> str:
        path = "%s/%s" % (self.prefix, group_id)
        return path if member_id is None else "%s/%s" % (path, member_id)

    def _known_path(self, group_id: str, member_id: str | None = None) -> str:
        path = "%s/%s/%s" % (self.prefix, KNOWN, group_id)
        return path if member_id is None else "%s/%s" % (path, member_id)

    # -- session state -----------------------------------------------------

    def _on_state(self, state: str) -> None:
        """kazoo state listener: runs in kazoo's thread, must not block."""
        if self._stopped:
            return
        if state == KazooState.SUSPENDED:
            self.health.lost("connection to ZooKeeper suspended")
        elif state == KazooState.LOST:
            self.health.lost("ZooKeeper session expired")
            now = time.time()
            with self._lock:
                self._pending.update(self._mine)
                for g, m in self._mine:
                    if m in self._live.get(g, ()):
                        self._live[g].discard(m)
                        self._gone_at[(g, m)] = now
            self._notify()
        elif state == KazooState.CONNECTED:
            self.health.restored()
            cid = self.client.client_id
            sid = cid[0] if cid else None
            if sid != self._session_id:
                self._session_id = sid
                with self._lock:
                    self._pending.update(self._mine)
            if self._pending:
                self.handler.spawn(self._rejoin)

    def _rejoin(self) -> None:
        """Re-create the ephemeral nodes of the members still pending."""
        with self._lock:
            if self._rejoining:
                return
            self._rejoining = True
        try:
            backoff = base.Backoff(0.1, max(0.2, self.report_interval))
            for _ in range(1000):  # bounded; a later CONNECTED starts over
                if self._stopped or not self.client.connected:
                    return
                with self._lock:
                    todo = [(k, self._mine[k]) for k in self._pending if k in self._mine]
                    self._pending.intersection_update(self._mine)
                if not todo:
                    return
                for key, svc in todo:
                    try:
                        self._register(key[0], key[1], svc)
                        with self._lock:
                            still_mine = key in self._mine
                        if not still_mine:  # left while we re-created it
                            self.client.delete(self._path(key[0], key[1]))
                            continue
                        with self._lock:
                            self._pending.discard(key)
                            # the watch may not fire if the children list
                            # ends up as it was before the session was lost
                            if key[0] in self._live:
                                self._live[key[0]].add(key[1])
                                self._gone_at.pop(key, None)
                        self._notify()
                    except KazooException as exc:
                        LOG.debug("servicegroup zk: re-join of %s/%s failed: %s",
                                  key[0], key[1], exc)
                if not self._pending:
                    self.rejoins += 1
                    LOG.info("servicegroup zk: %d member(s) re-joined in a new "
                             "session", len(todo))
                    return
                self.handler.sleep(backoff.next())
        finally:
            with self._lock:
                self._rejoining = False

    def _register(self, group_id: str, member_id: str, service: Any) -> None:
        """Create the member's ephemeral node (taking over one left by an
        older session of ours) and its persistent 'known' record."""
        now = time.time()
        data = json.dumps({"service": service, "joined_at": now},
                          default=str).encode("utf-8")
        try:
            self.client.create(self._known_path(group_id, member_id),
                               json.dumps({"joined_at": now}).encode("utf-8"),
                               makepath=True)
        except NodeExistsError:
            pass
        path = self._path(group_id, member_id)
        try:
            self.client.create(path, data, ephemeral=True, makepath=True)
            return
        except NodeExistsError:
            pass
        _old, stat = self.client.get(path)
        if stat.ephemeralOwner == (self.client.client_id or (0,))[0]:
            return  # ours already
        # a node of another session: ours from before (not yet expired) or
        # a second process claiming the same name; take it when it goes
        LOG.warning("servicegroup zk: %s is held by another session; "
                    "re-creating it when that session ends", path)

        def retake(_event: Any) -> None:
            with self._lock:
                if (group_id, member_id) in self._mine:
                    self._pending.add((group_id, member_id))
            self.handler.spawn(self._rejoin)

        if self.client.exists(path, watch=retake) is None:
            retake(None)

    # -- membership of this process ---------------------------------------

    def join(self, member_id: str, group_id: str, service: Any = None) -> None:
        """Create the ephemeral node now (blocking); when ZooKeeper is away
        the member is queued and created on the next connection."""
        key = (base.check_name("group", group_id),
               base.check_name("member", member_id))
        with self._lock:
            self._mine[key] = service
        if not self.client.connected:
            with self._lock:
                self._pending.add(key)
            return
        try:
            self._register(group_id, member_id, service)
        except KazooException as exc:
            self.health.lost(exc)
            with self._lock:
                self._pending.add(key)

    def leave(self, member_id: str, group_id: str) -> None:
        """Delete the member's ephemeral node and note when it left."""
        key = (group_id, member_id)
        with self._lock:
            self._mine.pop(key, None)
            self._pending.discard(key)
        try:
            self.client.delete(self._path(group_id, member_id))
        except NoNodeError:
            pass
        except KazooException as exc:
            LOG.warning("servicegroup zk: could not delete %s (%s); it goes "
                        "with the session", self._path(group_id, member_id), exc)
            return
        try:
            self.client.set(self._known_path(group_id, member_id),
                            json.dumps({"left_at": time.time()}).encode("utf-8"))
        except KazooException:
            pass  # only the 'left at' note is lost

    # -- watches -------------------------------------------------------------

    def _on_children(self, group_id: str, which: str, children: list[str]) -> Any:
        if self._stopped:
            return False
        now = time.time()
        with self._lock:
            new = set(children)
            if which == "live":
                old = self._live.get(group_id, set())
                for m in old - new:
                    self._gone_at[(group_id, m)] = now
                for m in new - old:
                    self._gone_at.pop((group_id, m), None)
                self._live[group_id] = new
                # a member may be present before its known record shows
                self._known.setdefault(group_id, set()).update(new)
            else:
                self._known[group_id] = new | self._live.get(group_id, set())
        self._notify()
        return None

    def _watch(self, group_id: str) -> None:
        """Watch ``group_id`` if not yet done (blocking once per group).

        Raises ServiceGroupUnavailable while the first listing is missing;
        the watches stay registered and fill in on the next connection.
        """
        with self._lock:
            if group_id in self._live:
                return
        if not self.client.connected:
            raise self.health.unavailable("not connected to ZooKeeper")
        try:
            with self._watch_lock:
                if group_id not in self._watches:
                    self.client.ensure_path(self._path(group_id))
                    self.client.ensure_path(self._known_path(group_id))
                    known = ChildrenWatch(self.client, self._known_path(group_id))
                    live = ChildrenWatch(self.client, self._path(group_id))
                    self._watches[group_id] = (live, known)
                    # registering the function lists the children once and
                    # re-registers after a lost session by itself
                    known(functools.partial(self._on_children, group_id, "known"))
                    live(functools.partial(self._on_children, group_id, "live"))
        except KazooException as exc:
            raise self.health.unavailable(exc) from exc
        with self._lock:
            if group_id not in self._live:
                raise self.health.unavailable("watch on %s not established yet"
                                              % self._path(group_id))

    # -- reads -----------------------------------------------------------------

    def members(self, group_ids: Iterable[str]) -> dict[str, list[base.MemberRecord]]:
        """From the watched view (one blocking set-up per new group)."""
        groups = sorted(set(group_ids))
        for g in groups:
            self._watch(g)
        now = time.time()
        out: dict[str, list[base.MemberRecord]] = {}
        with self._lock:
            for g in groups:
                live = self._live.get(g, set())
                recs = []
                for m in sorted(self._known.get(g, set()) | live):
                    up = m in live
                    recs.append(base.MemberRecord(
                        g, m, up, now if up else self._gone_at.get((g, m))))
                out[g] = recs
        return out

    def get_all(self, group_id: str) -> list[str]:
        self._watch(group_id)
        with self._lock:
            return sorted(self._live.get(group_id, set()))

    def is_up(self, group_id: str, member_id: str) -> bool:
        self._watch(group_id)
        with self._lock:
            return member_id in self._live.get(group_id, set())

    def groups(self) -> list[str]:
        if not self.client.connected:
            raise self.health.unavailable("not connected to ZooKeeper")
        try:
            names = set()
            for path in (self.prefix or "/", "%s/%s" % (self.prefix, KNOWN)):
                try:
                    names.update(self.client.get_children(path))
                except NoNodeError:
                    pass
        except KazooException as exc:
            raise self.health.unavailable(exc) from exc
        return sorted(n for n in names if not n.startswith(".")
                      and not (self.prefix == "" and n == "zookeeper"))

    def session_id(self) -> int | None:
        """The current ZooKeeper session id (tests use it to expire it)."""
        cid = self.client.client_id
        return cid[0] if cid else None

    def stop(self, leave: bool = True) -> None:
        """Close the session: ZooKeeper removes the ephemeral nodes at once.
        With ``leave`` the 'left at' notes are written first."""
        if self._stopped:
            return
        if leave and self.client.connected:
            with self._lock:
                mine = list(self._mine)
            for group_id, member_id in mine:
                self.leave(member_id, group_id)
        self._stopped = True
        self._close_client()

    def _close_client(self) -> None:
        try:
            self.client.stop()
        except Exception:  # noqa: BLE001 - closing anyway
            LOG.debug("servicegroup zk: error while stopping kazoo", exc_info=True)
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            LOG.debug("servicegroup zk: error while closing kazoo", exc_info=True)
