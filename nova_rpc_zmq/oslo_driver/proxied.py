"""The sockets of the oslo.messaging driver through ROUTER proxies
(``[oslo_messaging_zmq] use_router_proxy = true``).

Proxies (``nova-rpc-zmq-proxy``, ``nova_rpc_zmq/proxy/``) register
``host:frontend_port:backend_port`` under ``PROXY_KEY`` in the matchmaker
of the transport URL. Every socket here is connected to every proxy the
matchmaker lists (a refresh every ``PROXY_REFRESH`` seconds adds new ones
and drops those no longer listed):

* ``ProxyInbound`` (RPC servers, notification listeners, a caller's reply
  socket): a DEALER whose routing id is its *member*
  (``<rpc_zmq_host>~<random hex>``), connected to each proxy's backend. A
  proxy delivers ``[caller, *frames]`` to it; its reader hands ``frames``
  to the callback. The member is what the registry lists, so registry,
  ``Lookup``, round robin and replies work as with direct connections.
* ``ProxyOutbound``: one DEALER connected to each proxy's frontend; a
  message to ``member`` goes out as ``[member, *frames]`` and libzmq's
  round robin spreads messages over the proxies. ``ZMQ_IMMEDIATE`` and
  ZMTP heartbeats make a proxy that is gone (killed, unreachable) lose its
  pipe within ``HEARTBEAT_TIMEOUT_MS``: messages then go to the others.
  A proxy answers a message for a member it does not know with
  ``[member, UNROUTABLE]``: the next send to that member is refused (the
  driver tries the next server) and the member is reported to
  ``on_unroutable`` (the driver's ``Lookup.suspect``), so a server killed
  before it could unregister costs a message, not its share of the
  traffic until its registration expires.

With ``rpc_zmq_curve`` (``curve``) both are CURVE clients of each proxy,
whose certificate is ``<keys_dir>/<host>.key``, ``host`` being the name the
proxy announces (``curve.ProxyCurve``): a proxy we hold no certificate of
is left out (``NoServerKey`` when it is the only one), and a send raises
``HostRefused`` once every proxy refused our key.

A proxy listed for the first time after our first look is used for
sending only ``PROXY_SETTLE`` seconds later, so that the servers' inbound
sockets (which refresh as often) are connected to it first: a proxy drops
a message for a member not connected to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable

import zmq
import zmq.utils.monitor

from nova_rpc_zmq import concurrency, frames, wire, zmqio
from nova_rpc_zmq.oslo_driver.curve import Curve, NoServerKey, ProxyCurve

LOG = logging.getLogger(__name__)

#: The registry key under which router proxies announce themselves.
PROXY_KEY = "proxy/router"
#: Seconds between two looks at the proxies the matchmaker lists.
PROXY_REFRESH = 0.5
#: Seconds a newly listed proxy waits before callers send through it.
PROXY_SETTLE = 1.5
#: Milliseconds a reader waits before it looks at its stop flag (as
#: ``sockets.READ_WAKE_MS``).
READ_WAKE_MS = 200
#: High-water mark of every socket (messages).
HWM = 10000
#: ZMTP heartbeats: a ping every interval; no answer within the timeout
#: drops the pipe (a proxy that is gone without a TCP reset).
HEARTBEAT_IVL_MS = 200
HEARTBEAT_TIMEOUT_MS = 800
#: Milliseconds between reconnection attempts to a proxy that is gone.
RECONNECT_IVL_MS = 100
#: Separates the host from the random part of a member id.
MEMBER_SEPARATOR = "~"
#: Longest routing id ZeroMQ accepts.
MAX_ROUTING_ID = 255
#: What a proxy sends back to a caller, ``[dest, UNROUTABLE]``, for a
#: message to a member not connected to it (a stale registration of a
#: server that is gone): the caller tries that member last for a while.
UNROUTABLE = b"\x00unroutable"
#: Members a sender remembers as unroutable (for its next send to them),
#: at most, and seconds after which one not sent to again is forgotten.
UNROUTABLE_MAX = 1024
UNROUTABLE_KEPT = 10.0
#: Notices read from the proxies before each send, at most.
NOTICES_PER_SEND = 100
#: Seconds ``ProxyInbound`` waits at start for its handshake with each
#: proxy (before that a proxy would drop messages for it).
CONNECT_WAIT = 2.0


def proxy_member(host: str, frontend_port: int, backend_port: int) -> str:
    """What a proxy registers: ``host:frontend_port:backend_port``."""
    return "%s:%d:%d" % (host, frontend_port, backend_port)


def parse_proxy_member(member: str) -> tuple[str, int, int] | None:
    """``(host, frontend_port, backend_port)`` of a registration, or None
    for one that is not of that form (logged by the caller)."""
    host, _, rest = member.rpartition(":")
    host, _, front = host.rpartition(":")
    try:
        fport, bport = int(front), int(rest)
    except ValueError:
        return None
    if not host or not (0 < fport < 65536 and 0 < bport < 65536):
        return None
    return host, fport, bport


def new_member(host: str) -> str:
    """A member id for a new inbound socket of ``host``: unique, usable as
    a ZeroMQ routing id and in a reply topic. Raises ValueError when
    ``host`` makes it too long or has characters a topic cannot hold."""
    member = "%s%s%s" % (host, MEMBER_SEPARATOR, uuid.uuid4().hex[:16])
    if len(member) > MAX_ROUTING_ID or "@" in host:
        raise ValueError("rpc_zmq_host %r cannot name a member id behind a "
                         "router proxy (at most %d characters, no '@')"
                         % (host, MAX_ROUTING_ID - 17))
    wire.reply_topic(member)  # raises LocalError for a bad host name
    return member


class ProxyList:
    """The proxies the registry lists, as ``tcp://`` endpoints (no
    sockets: the policy of which to connect to, and since when).

    ``current(side)`` returns the endpoints of ``side`` (``frontend`` or
    ``backend``) to be connected now; ``settle`` delays senders' use of
    proxies listed after the first look. ``key`` is the registry key read
    (``pubsub.PUBLISHER_KEY`` for publishers, whose third port, their PUB
    socket's, is then what ``backend`` names). Thread-safe.
    """

    def __init__(self, lookup: Any, lock: Any, settle: float = 0.0,
                 every: float = PROXY_REFRESH / 2,
                 clock: Callable[[], float] = time.monotonic,
                 key: str = PROXY_KEY, third: str = "backend_port") -> None:
        self.key = key
        self._third = third
        self._lookup = lookup
        self._lock = lock
        self._settle = settle
        self._every = every
        self._clock = clock
        self._seen: dict[tuple[str, int, int], float] = {}
        self._first = True
        self._asked = float("-inf")
        self._bad: set[str] = set()

    def refresh(self) -> None:
        """Ask the registry again, at most every ``every`` seconds for
        all the sockets of a transport. Waits for another thread's look
        only before the first one is done (afterwards the list made
        before is used meanwhile); a failing registry
        keeps what was known and is asked again after ``Lookup``'s
        back-off, so an absent Redis costs one thread one time-out at a
        time, as for a caller's look-up of its servers."""
        # the very first look is waited for: there is no list to use yet
        if not self._lock.acquire(blocking=self._first):
            return
        try:
            now = self._clock()
            if now - self._asked < self._every:
                return
            self._asked = now
            members = self._lookup.members(self.key)
            self._update(members, self._clock())
        finally:
            self._lock.release()

    def _update(self, members: list[str], now: float) -> None:
        listed = set()
        for member in members:
            parsed = parse_proxy_member(member)
            if parsed is None:
                if member not in self._bad:
                    self._bad.add(member)
                    LOG.warning("ignoring %r under %s in the matchmaker: not "
                                "host:frontend_port:%s", member, self.key,
                                self._third)
                continue
            listed.add(parsed)
            if parsed not in self._seen:
                self._seen[parsed] = now - (self._settle if self._first
                                            else 0.0)
        for gone in set(self._seen) - listed:
            del self._seen[gone]
        self._first = False

    def current(self, side: str) -> set[str]:
        """Endpoints of ``side``: every listed proxy's backend (inbound
        sockets connect at once), the frontends of the settled ones."""
        now = self._clock()
        if side == "backend":
            return {"tcp://%s:%s" % (p[0], p[2]) for p in list(self._seen)}
        return {"tcp://%s:%s" % (p[0], p[1])
                for p, since in list(self._seen.items())
                if now - since >= self._settle}


class _Connections:
    """The endpoints one socket is connected to, brought in line with a
    wanted set (the socket's owner holds its lock)."""

    def __init__(self, what: str, secure: "ProxyCurve | None" = None
                 ) -> None:
        self.what = what
        self.secure = secure
        self.endpoints: set[str] = set()
        #: endpoints left out for want of a certificate (logged once)
        self.unkeyed: set[str] = set()

    def sync(self, sock: Any, wanted: set[str]) -> set[str]:
        """Connect to new endpoints, disconnect from dropped ones;
        returns the endpoints just connected. With CURVE, a proxy whose
        certificate we lack is left out (logged, see ``curve.py``)."""
        added = wanted - self.endpoints
        for endpoint in sorted(added):
            try:
                if self.secure is not None:
                    self.secure.before_connect(endpoint)
                sock.connect(endpoint)
            except NoServerKey as exc:
                if endpoint not in self.unkeyed:
                    self.unkeyed.add(endpoint)
                    LOG.error("%s: not connected to proxy %s: %s",
                              self.what, endpoint, exc)
                added.discard(endpoint)
                continue
            except zmq.ZMQError as exc:
                LOG.warning("%s: cannot connect to proxy %s: %s", self.what,
                            endpoint, exc)
                added.discard(endpoint)
                continue
            LOG.info("%s: connected to proxy %s", self.what, endpoint)
        for endpoint in sorted(self.endpoints - wanted):
            try:
                sock.disconnect(endpoint)
            except zmq.ZMQError:
                pass  # never connected or already gone
            LOG.info("%s: left proxy %s (no longer listed)", self.what,
                     endpoint)
        self.endpoints = (self.endpoints & wanted) | added
        return added


def _dealer(ctx: Any, linger_ms: int, routing_id: str | None = None) -> Any:
    options: dict[int, Any] = {zmq.HEARTBEAT_IVL: HEARTBEAT_IVL_MS,
               zmq.HEARTBEAT_TIMEOUT: HEARTBEAT_TIMEOUT_MS,
               zmq.HEARTBEAT_TTL: HEARTBEAT_TIMEOUT_MS,
               zmq.RECONNECT_IVL: RECONNECT_IVL_MS}
    if routing_id is not None:
        options[zmq.ROUTING_ID] = routing_id.encode("ascii")
    return zmqio.make_socket(
        ctx, zmq.DEALER, linger=linger_ms, hwm=HWM, immediate=True,
        rcvtimeo=READ_WAKE_MS, maxmsgsize=wire.DEFAULT_LIMITS.max_msg_size,
        options=options)


class ProxyOutbound:
    """One DEALER to every proxy's frontend, shared by threads (same
    interface as ``sockets.Outbound``)."""

    def __init__(self, handler: concurrency.Handler, ctx: Any,
                 linger_ms: int, proxies: ProxyList,
                 on_unroutable: Callable[[str], None] | None = None,
                 curve: Curve | None = None) -> None:
        self.handler = handler
        self._proxies = proxies
        self._on_unroutable = on_unroutable
        # member -> when a proxy said so; forgotten after UNROUTABLE_KEPT
        self._unroutable: dict[str, float] = {}
        self._lock = handler.Lock()
        self._sock = _dealer(ctx, linger_ms)
        self._secure = ProxyCurve(curve, self._sock) \
            if curve is not None else None
        self._links = _Connections("outbound", self._secure)
        self._missing: set[str] = set()
        self._synced = 0.0
        self._closed = False

    def _sync(self) -> None:
        """Follow the proxy list (under ``_lock``, every PROXY_REFRESH)."""
        now = time.monotonic()
        if now - self._synced < PROXY_REFRESH:
            return
        self._synced = now
        try:
            self._proxies.refresh()
        except Exception as exc:  # noqa: BLE001 - keep the proxies we have
            LOG.warning("could not list the router proxies: %s", exc)
        wanted = self._proxies.current("frontend")
        self._links.sync(self._sock, wanted)
        self._missing = wanted - self._links.endpoints
        if self._secure is not None:
            self._secure.retry(self._links.endpoints)

    def _check_curve(self) -> None:
        """With CURVE: raise ``HostRefused`` when every proxy refused our
        handshake, ``NoServerKey`` when we hold no certificate of any
        listed proxy (under ``_lock``)."""
        if self._secure is None:
            return
        refused = self._secure.refusal(self._links.endpoints)
        if refused is not None:
            raise refused
        if self._missing and not self._links.endpoints:
            endpoint = sorted(self._missing)[0]
            self._secure.before_connect(endpoint)  # raises NoServerKey

    def _read_notices(self) -> None:
        """Take the proxies' UNROUTABLE notices (under ``_lock``)."""
        for _ in range(NOTICES_PER_SEND):
            try:
                notice = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(notice) != 2 or notice[1] != UNROUTABLE:
                LOG.warning("dropped a message of %d frame(s) from a router "
                            "proxy (only unroutable notices come this way)",
                            len(notice))
                continue
            member = notice[0].decode("ascii", "replace")
            LOG.warning("%s is not connected to a router proxy (gone "
                        "without unregistering?): a message to it was "
                        "dropped; tried last from now on", member)
            now = time.monotonic()
            if len(self._unroutable) >= UNROUTABLE_MAX:
                # callers gone long ago (replies to them): forget the old
                for old in [m for m, t in self._unroutable.items()
                            if now - t > UNROUTABLE_KEPT]:
                    del self._unroutable[old]
            if len(self._unroutable) < UNROUTABLE_MAX:
                self._unroutable[member] = now
            if self._on_unroutable is not None:
                self._on_unroutable(member)

    def send(self, member: str, parts: list, wait: float | None) -> bool:
        """Queue ``[member, *parts]`` to one connected proxy, waiting at
        most ``wait`` seconds (None: for ever) for one.

        Returns False when no proxy took it (nothing was queued). Raises
        ``zmq.ZMQError`` after ``close``; with CURVE, ``HostRefused`` when
        every proxy refused our handshake and ``NoServerKey`` when no
        listed proxy has a certificate in our keys dir.
        """
        deadline = None if wait is None else time.monotonic() + wait
        pause = 0.0005
        routed = [member.encode("ascii")] + list(parts)
        while True:
            with self._lock:
                if self._closed:
                    raise zmq.ZMQError(zmq.ENOTSOCK, "transport cleaned up")
                self._sync()
                self._check_curve()
                self._read_notices()
                if self._unroutable.pop(member, None) is not None:
                    return False
                try:
                    frames.send(self._sock, routed, frames.NOBLOCK)
                    return True
                except zmq.Again:
                    pass
            if deadline is not None and time.monotonic() >= deadline:
                if not self._links.endpoints:
                    LOG.warning("no proxy is listed under %s in the "
                                "matchmaker: is nova-rpc-zmq-proxy running "
                                "with the same transport_url?",
                                self._proxies.key)
                return False
            self.handler.sleep(pause)
            pause = min(pause * 2, 0.02)

    def close(self) -> None:
        """Close the socket (it keeps its linger for unsent messages)."""
        with self._lock:
            self._closed = True
            self._sock.close()
            if self._secure is not None:
                self._secure.close()


def await_handshakes(monitor: Any, pending: set[str], wait: float) -> set[str]:
    """Read ``monitor`` (HANDSHAKE_SUCCEEDED and CONNECT_RETRIED events) for
    at most ``wait`` seconds, until each endpoint of ``pending`` either
    completed its handshake or was refused; returns those that did not
    complete (``pending`` is emptied as they are heard of)."""
    missing = set(pending)
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        if not monitor.poll(50):
            continue
        event = zmq.utils.monitor.recv_monitor_message(monitor)
        endpoint = event["endpoint"].decode("ascii", "replace")
        pending.discard(endpoint)
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            missing.discard(endpoint)
    return missing


class ProxyInbound:
    """A DEALER with our member as routing id, connected to every proxy's
    backend, and its reader (same interface as ``sockets.Inbound``).

    ``port`` is the member id (``driver.member`` passes it through).
    ``on_message(frames)`` runs in the reader with the frames after the
    caller's id and must not raise (what it raises is logged and the
    message dropped).
    """

    def __init__(self, handler: concurrency.Handler, ctx: Any, host: str,
                 proxies: ProxyList, on_message: Callable[[list], None],
                 what: str, curve: Curve | None = None) -> None:
        self.handler = handler
        self.what = what
        self.port = new_member(host)
        self._on_message = on_message
        self._proxies = proxies
        self._sock = _dealer(ctx, 0, self.port)
        self._secure = ProxyCurve(curve, self._sock) \
            if curve is not None else None
        self._links = _Connections("%s %s" % (what, self.port), self._secure)
        self._stopped = False
        try:
            self._follow(wait=CONNECT_WAIT)
        except BaseException:
            self._sock.close(0)
            raise
        self._reader = handler.spawn(self._read)

    def _follow(self, wait: float = 0.0) -> None:
        """Connect to the listed proxies; with ``wait``, until the ZMTP
        handshake with each new one is done (or ``wait`` seconds)."""
        try:
            self._proxies.refresh()
        except Exception as exc:  # noqa: BLE001 - keep the proxies we have
            LOG.warning("%s: could not list the router proxies: %s",
                        self.what, exc)
        wanted = self._proxies.current("backend")
        if self._secure is not None:
            # the handshake watcher holds the socket's monitor
            added = self._links.sync(self._sock, wanted)
            self._secure.retry(self._links.endpoints)
            if wait:
                self._warn_missing(self._secure.await_handshakes(added, wait),
                                   wait)
            return
        if not wait:
            self._links.sync(self._sock, wanted)
            return
        # a refused connection (a proxy that is gone but still listed)
        # ends the wait for it as well as a handshake does
        monitor = self._sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED)
        try:
            added = self._links.sync(self._sock, wanted)
            self._warn_missing(await_handshakes(monitor, set(added), wait),
                               wait)
        finally:
            self._sock.disable_monitor()
            monitor.close(0)

    def _warn_missing(self, missing: set[str], wait: float) -> None:
        if missing:
            LOG.warning("%s: no handshake with proxy %s yet (refused, or "
                        "none within %.1fs); it gets messages for us "
                        "once it connects", self.what,
                        ", ".join(sorted(missing)), wait)

    def _read(self) -> None:
        sock, handle = self._sock, self._on_message
        recv = zmqio.recv_function(self.handler)
        followed = time.monotonic()
        while not self._stopped:
            if time.monotonic() - followed >= PROXY_REFRESH:
                followed = time.monotonic()
                self._follow()
            try:
                parts = recv(sock)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                if not self._stopped:
                    LOG.error("%s: reading %s failed, no more messages are "
                              "read: %s", self.what, self.port, exc)
                return
            if len(parts) < 2:
                LOG.warning("%s: dropped a message of %d frame(s) from a "
                            "proxy (expected the caller id and a body)",
                            self.what, len(parts))
                continue
            try:
                handle(parts[1:])
            except Exception:
                LOG.exception("%s: a message to %s was dropped", self.what,
                              self.port)

    @property
    def reading(self) -> bool:
        """Always True: the reader also follows the proxy list, so it
        runs even for a reply socket (``replies.py`` then reads nothing
        itself)."""
        return True

    def read(self, timeout: float) -> list | None:
        """Not for this socket: its own reader reads it (``reading``).
        Raises RuntimeError."""
        raise RuntimeError("%s %s has its own reader" % (self.what,
                                                         self.port))

    def close(self) -> None:
        """Stop the reader (within ``READ_WAKE_MS``) and close the socket;
        messages not yet read are dropped."""
        if self._stopped:
            return
        self._stopped = True
        self.handler.join(self._reader, 5.0)
        self._sock.close(0)
        if self._secure is not None:
            self._secure.close()
