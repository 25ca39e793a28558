"""PUB/SUB publishers of a proxy (``[oslo_messaging_zmq] use_pub_sub``).

* ``Publisher``: the PUB socket of a central proxy. A caller's fanout
  reaches the proxy's frontend as ``[caller, PUBLISH_ID, subscription,
  *frames]`` (``oslo_driver/pubsub.py``); the router loop hands
  ``[subscription, *frames]`` here and it is published once. The proxy
  registers ``host:frontend_port:publisher_port`` under
  ``pubsub.PUBLISHER_KEY``.
* ``LocalPublisher`` (``--local-publisher``): a PUB socket only, on a
  service host; a SUB socket subscribed to everything and connected to
  every central publisher the matchmaker lists republishes what they
  publish, so the host's services (``subscribe_on = localhost:port``) hold
  one connection each to it and the central publishers one per host.

A message that cannot be published (no subscription frame, or one too
long or not ended by ``pubsub.SUBSCRIPTION_END``) is counted and logged
(``DropLog``) and dropped. PUB sockets never block: a subscriber whose
queue is full misses messages inside libzmq, uncounted.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import zmq
import zmq.utils.monitor

from nova_rpc_zmq import metrics, wire, zmqio
from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.oslo_driver.curve import endpoint_host
from nova_rpc_zmq.oslo_driver.proxied import (HEARTBEAT_IVL_MS,
                                              HEARTBEAT_TIMEOUT_MS,
                                              PROXY_REFRESH,
                                              RECONNECT_IVL_MS, ProxyList)
from nova_rpc_zmq.oslo_driver.pubsub import MAX_SUBSCRIPTION, SUBSCRIPTION_END
from nova_rpc_zmq.oslo_driver.sockets import bind_random
from nova_rpc_zmq.receiver.droplog import DropLog

LOG = logging.getLogger(__name__)

#: High-water mark of the PUB socket (messages per subscriber) and of a
#: local publisher's SUB socket.
HWM = 10000
#: Why a publisher drops a message (shown at 0 from the start).
DROP_REASONS = ("bad_subscription", "no_publisher", "publish_failed")
#: Milliseconds the local publisher's poller waits before it looks at its
#: stop flag and at the central publishers listed.
WAKE_MS = 200
#: Messages a local publisher forwards before it looks at the rest.
BATCH = 256
#: Socket events that change the count of connected peers.
PEER_EVENTS: dict[int, int] = {zmq.EVENT_ACCEPTED: 1,
                               zmq.EVENT_DISCONNECTED: -1}


def bad_subscription(frames: list) -> str | None:
    """Why ``[subscription, *frames]`` cannot be published, or None."""
    if len(frames) < 2:
        return "%d frame(s): a subscription and a body are needed" \
            % len(frames)
    first = frames[0]
    first = first.bytes if hasattr(first, "bytes") else first
    if len(first) > MAX_SUBSCRIPTION or not first.endswith(SUBSCRIPTION_END):
        return "a subscription frame of %d bytes not ending in %r" \
            % (len(first), SUBSCRIPTION_END)
    return None


def pub_socket(ctx: Any, bind: str, port: int,
               port_range: tuple[int, int, int],
               before_bind: Callable[[Any], None] | None = None
               ) -> tuple[Any, int]:
    """A bound PUB socket and its port (0: random in ``port_range``);
    ``before_bind(sock)`` runs first (CURVE). Raises ``zmq.ZMQError`` or
    ``sockets.PortRangeExceeded``."""
    sock = zmqio.make_socket(ctx, zmq.PUB, linger=0, sndhwm=HWM)
    try:
        if before_bind is not None:
            before_bind(sock)
        if port:
            sock.bind("tcp://%s:%d" % (bind, port))
        else:
            port = bind_random(sock, bind, *port_range)
    except BaseException:
        sock.close(0)
        raise
    return sock, port


def peer_counter(peers: dict[str, int], side: str
                 ) -> Callable[[int], None]:
    """A callback that applies one socket event (``PEER_EVENTS``, plus
    CONNECTED for a SUB) to ``peers[side]``: the peer count of a socket
    whose monitor the CURVE authenticator holds."""
    def count(event: int) -> None:
        delta = PEER_EVENTS.get(event, 1 if event == zmq.EVENT_CONNECTED
                                else 0)
        peers[side] = max(0, peers[side] + delta)
    return count


def count_peers(monitor: Any, peers: dict[str, int], side: str,
                events: dict[int, int] | None = None) -> None:
    """Apply the monitor events waiting on ``monitor`` to ``peers[side]``
    (``events``: event -> change of the count, ``PEER_EVENTS`` by
    default)."""
    changes = PEER_EVENTS if events is None else events
    for _ in range(BATCH):
        try:
            event = zmq.utils.monitor.recv_monitor_message(monitor,
                                                           zmq.NOBLOCK)
        except zmq.Again:
            return
        delta = changes.get(event["event"], 0)
        peers[side] = max(0, peers[side] + delta)


class Publisher:
    """The PUB socket of a central proxy; used by the router loop's thread
    only. ``publish`` never raises for a peer's message."""

    def __init__(self, ctx: Any, bind: str, port: int,
                 port_range: tuple[int, int, int], counters: Any,
                 drops: DropLog,
                 before_bind: Callable[[Any], None] | None = None) -> None:
        self.sock, self.port = pub_socket(ctx, bind, port, port_range,
                                          before_bind)
        self._counters = counters
        self._drops = drops

    def publish(self, sender: str, frames: list, debug: bool) -> None:
        """Publish ``[subscription, *frames]`` from caller ``sender``."""
        why = bad_subscription(frames)
        if why is not None:
            self.drop("bad_subscription", sender, why)
            return
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                raise  # closed under us: the proxy stops
            self.drop("publish_failed", sender, str(exc))
            return
        self._counters.incr("published")
        if debug:
            LOG.debug("frontend -> publisher: %s -> %r, %d frame(s)", sender,
                      frames[0].bytes if hasattr(frames[0], "bytes")
                      else frames[0], len(frames) - 1)

    def drop(self, reason: str, sender: str, detail: str) -> None:
        self._counters.incr("dropped." + reason)
        self._drops.record(reason, None, "publisher, from %s" % sender,
                           detail, time.monotonic())

    def close(self) -> None:
        self.sock.close(0)


class LocalPublisher:
    """A local publisher: republishes every central publisher's messages.

    Same surface as ``RouterProxy`` for the command line and the metrics
    page: ``run`` until ``stop``, ``close``; ``counters``, ``peers``
    (``publisher``: local subscribers, ``central``: central publishers
    connected), ``turned``, ``stopping``. The central publishers' list is
    read by a thread of its own, so a slow matchmaker never holds up the
    loop.
    """

    def __init__(self, bind: str, port: int,
                 port_range: tuple[int, int, int], central: ProxyList,
                 debug: bool = False, curve: Any = None) -> None:
        self.debug = debug
        self.curve = curve
        self.counters = metrics.Counters("proxy")
        self.peers = {"publisher": 0, "central": 0}
        self.turned = time.monotonic()
        self.drops = DropLog(logger=LOG)
        self._central = central
        self._stopping = False
        self._ended = threading.Event()
        self._ctx = zmq.Context()
        self._endpoints: set[str] = set()
        self._unkeyed: set[str] = set()
        self.sub = zmqio.make_socket(
            self._ctx, zmq.SUB, linger=0, rcvhwm=HWM,
            maxmsgsize=wire.DEFAULT_LIMITS.max_msg_size, subscribe=b"",
            options={zmq.HEARTBEAT_IVL: HEARTBEAT_IVL_MS,
                     zmq.HEARTBEAT_TIMEOUT: HEARTBEAT_TIMEOUT_MS,
                     zmq.HEARTBEAT_TTL: HEARTBEAT_TIMEOUT_MS,
                     zmq.RECONNECT_IVL: RECONNECT_IVL_MS})
        try:
            self.pub, self.port = pub_socket(
                self._ctx, bind, port, port_range,
                None if curve is None else
                lambda sock: curve.serve(self._ctx, sock, peer_counter(
                    self.peers, "publisher")))
        except BaseException:
            self.sub.close(0)
            if curve is not None:
                curve.close()
            self._ctx.term()
            raise
        self._lister = threading.Thread(target=self._list, name="central",
                                        daemon=True)

    @staticmethod
    def counter_names() -> list[str]:
        """The counters shown from the start."""
        return ["received_central", "published"] + \
            ["dropped." + r for r in ("bad_subscription", "publish_failed")]

    def stop(self) -> None:
        """Make ``run`` return within ``WAKE_MS``; safe in a signal
        handler."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _list(self) -> None:
        """Keep the central publishers' list fresh (its own thread)."""
        while not self._ended.wait(PROXY_REFRESH):
            try:
                self._central.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the known ones
                LOG.warning("could not list the central publishers: %s",
                            exc)

    def _follow(self) -> None:
        wanted = self._central.current("backend")
        for endpoint in sorted(wanted - self._endpoints):
            try:
                if self.curve is not None:
                    self.curve.before_connect(self.sub,
                                              endpoint_host(endpoint))
                self.sub.connect(endpoint)
            except ConfigurationError as exc:
                if endpoint not in self._unkeyed:
                    self._unkeyed.add(endpoint)
                    LOG.error("not subscribed to central publisher %s: "
                              "rpc_zmq_curve_keys_dir: %s", endpoint, exc)
                continue
            except zmq.ZMQError as exc:
                LOG.warning("cannot subscribe to central publisher %s: %s",
                            endpoint, exc)
                continue
            self._endpoints.add(endpoint)
            LOG.info("subscribed to central publisher %s", endpoint)
        for endpoint in sorted(self._endpoints - wanted):
            try:
                self.sub.disconnect(endpoint)
            except zmq.ZMQError:
                pass  # already gone
            self._endpoints.discard(endpoint)
            LOG.info("left central publisher %s (no longer listed)",
                     endpoint)

    def run(self) -> None:
        """Republish until ``stop``; never raises for a peer's message."""
        try:
            self._central.refresh()
        except Exception as exc:  # noqa: BLE001 - the lister tries again
            LOG.warning("could not list the central publishers: %s", exc)
        self._lister.start()
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        monitors = {}
        watched = [(self.sub, "central",
                    zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)]
        if self.curve is None:
            # with CURVE the authenticator holds the PUB's monitor and
            # counts its peers
            watched.append((self.pub, "publisher",
                            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED))
        for sock, side, events in watched:
            monitor = sock.get_monitor_socket(events)
            monitors[monitor] = side
            poller.register(monitor, zmq.POLLIN)
        peer_events: dict[int, int] = dict(PEER_EVENTS)
        peer_events[zmq.EVENT_CONNECTED] = 1
        try:
            while not self._stopping:
                self._follow()
                ready = dict(poller.poll(WAKE_MS))
                now = time.monotonic()
                self.turned = now
                for sock in ready:
                    if sock is self.sub:
                        self._republish()
                    else:
                        count_peers(sock, self.peers, monitors[sock],
                                    peer_events)
                self.drops.flush(now)
            self.drops.flush(time.monotonic(), force=True)
        finally:
            self._ended.set()
            for monitor in monitors:
                monitor.close(0)

    def _republish(self) -> None:
        count = self.counters.incr
        for _ in range(BATCH):
            try:
                parts = self.sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            count("received_central")
            why = bad_subscription(parts)
            if why is not None:
                self._drop("bad_subscription", why)
                continue
            try:
                self.pub.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    raise
                self._drop("publish_failed", str(exc))
                continue
            count("published")
            if self.debug:
                LOG.debug("central -> publisher: %r, %d frame(s)",
                          parts[0].bytes, len(parts) - 1)

    def _drop(self, reason: str, detail: str) -> None:
        self.counters.incr("dropped." + reason)
        self.drops.record(reason, None, "a central publisher", detail,
                          time.monotonic())

    def close(self) -> None:
        """Close the sockets and the context."""
        self._ended.set()
        if self._lister.is_alive():
            self._lister.join(5.0)
        self.sub.close(0)
        self.pub.close(0)
        if self.curve is not None:
            self.curve.close()
        self._ctx.term()
