"""The forwarding loop of a ROUTER proxy.

Two ROUTER sockets, one ``zmq.Poller``, one thread:

* ``frontend``: callers' DEALERs (``proxied.ProxyOutbound``) send
  ``[dest, *frames]``; the proxy reads ``[caller, dest, *frames]`` and sends
  ``[dest, caller, *frames]`` on the backend.
* ``backend``: the DEALERs of servers, listeners and reply sockets
  (``proxied.ProxyInbound``, routing id = their member) connect here.
  What one of them sends, ``[peer, dest, *frames]``, goes to the frontend
  as ``[dest, peer, *frames]``.

Only the routing-key frame is read; nothing is kept. Both ROUTERs are
``ROUTER_MANDATORY`` and every send is ``NOBLOCK``: a destination that is
not connected (``unroutable``) or whose queue is full (``peer_full``), or a
message that cannot be routed at all (``too_few_frames``,
``bad_routing_id``), is counted, logged once per interval and reason
(``DropLog``) and dropped; the loop never blocks on a peer. The sender of
an ``unroutable`` message is told so (``proxied.UNROUTABLE``), so that it
tries that destination last (a server gone without unregistering).

With a publisher (``publisher_port`` not None), a frontend message to
``pubsub.PUBLISH_ID`` is not forwarded but published on the proxy's PUB
socket (``publisher.Publisher``); a proxy without one drops it
(``no_publisher``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from nova_rpc_zmq import metrics, wire, zmqio
from nova_rpc_zmq.oslo_driver.proxied import MAX_ROUTING_ID, UNROUTABLE
from nova_rpc_zmq.oslo_driver.pubsub import PUBLISH_ID
from nova_rpc_zmq.oslo_driver.sockets import bind_random
from nova_rpc_zmq.proxy import publisher
from nova_rpc_zmq.proxy.curve import ProxyCurve
from nova_rpc_zmq.receiver.droplog import DropLog

LOG = logging.getLogger(__name__)

#: Milliseconds the poller waits before the loop looks at its stop flag.
WAKE_MS = 200
#: Messages read from one socket before the other gets its turn.
BATCH = 256
#: High-water mark of both ROUTERs (messages per peer).
HWM = 10000
#: Every reason a message is dropped (shown at 0 from the start).
DROP_REASONS = ("too_few_frames", "bad_routing_id", "unroutable",
                "peer_full", "send_failed")
#: The two sides, by the name the metrics use.
SIDES = ("frontend", "backend")


def _shown(routing_id: bytes) -> str:
    """A routing id for a log line (auto ids are binary)."""
    try:
        text = routing_id.decode("ascii")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return "0x" + routing_id.hex()


class RouterProxy:
    """The sockets and the loop of one proxy.

    ``bind`` binds both ROUTERs (raises ``zmq.ZMQError`` or
    ``sockets.PortRangeExceeded``); ``run`` forwards until ``stop`` (any
    thread, or a signal handler); ``close`` closes the sockets. Counters
    and gauges are plain attributes read by the metrics page.
    ``publisher_port`` (0: random) adds the PUB socket of a publisher
    proxy (``publisher``, None without). With ``curve`` every socket is a
    CURVE server (``proxy/curve.py``).
    """

    def __init__(self, bind: str, frontend_port: int, backend_port: int,
                 port_range: tuple[int, int, int], debug: bool = False,
                 publisher_port: int | None = None,
                 curve: ProxyCurve | None = None) -> None:
        self.debug = debug
        self.curve = curve
        self.counters = metrics.Counters("proxy")
        self.peers = dict.fromkeys(SIDES, 0)
        self.turned = time.monotonic()
        self.drops = DropLog(logger=LOG)
        self._stopping = False
        self._ctx = zmq.Context()
        self.frontend = self._router()
        self.backend = self._router()
        self.publisher: publisher.Publisher | None = None
        self._monitors: dict[Any, str] = {}
        try:
            self._secure(self.frontend, "frontend")
            self._secure(self.backend, "backend")
            self.frontend_port = self._bind(self.frontend, bind,
                                            frontend_port, port_range)
            self.backend_port = self._bind(self.backend, bind, backend_port,
                                           port_range)
            if publisher_port is not None:
                self.peers["publisher"] = 0
                self.publisher = publisher.Publisher(
                    self._ctx, bind, publisher_port, port_range,
                    self.counters, self.drops,
                    before_bind=lambda sock: self._secure(sock, "publisher"))
        except BaseException:
            self.close()
            raise

    def _secure(self, sock: Any, side: str) -> None:
        """With CURVE, make ``sock`` (unbound) a CURVE server; its peers
        are then counted from the authenticator's monitor, the socket's
        only one."""
        if self.curve is None:
            return
        self.curve.serve(self._ctx, sock,
                         publisher.peer_counter(self.peers, side))

    def counter_names(self) -> list[str]:
        """The counters shown from the start."""
        names = ["received_" + s for s in SIDES] + \
            ["forwarded_" + s for s in SIDES] + \
            ["notices_sent", "notices_lost"] + \
            ["dropped." + r for r in DROP_REASONS]
        if self.publisher is not None:
            names += ["published"] + ["dropped." + r for r
                                      in publisher.DROP_REASONS]
        return names

    def _router(self) -> Any:
        limit = wire.DEFAULT_LIMITS.max_msg_size
        return zmqio.make_socket(
            self._ctx, zmq.ROUTER, linger=0, hwm=HWM, maxmsgsize=limit,
            options={zmq.ROUTER_MANDATORY: 1})

    @staticmethod
    def _bind(sock: Any, address: str, port: int,
              port_range: tuple[int, int, int]) -> int:
        if port:
            sock.bind("tcp://%s:%d" % (address, port))
            return port
        return bind_random(sock, address, *port_range)

    def stop(self) -> None:
        """Make ``run`` return within ``WAKE_MS``; safe in a signal
        handler."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def run(self) -> None:
        """Forward until ``stop``; never raises for a peer's message."""
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        watched = [(self.frontend, "frontend"), (self.backend, "backend")]
        if self.publisher is not None:
            watched.append((self.publisher.sock, "publisher"))
        for sock, side in watched if self.curve is None else ():
            monitor = sock.get_monitor_socket(
                zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
            self._monitors[monitor] = side
            poller.register(monitor, zmq.POLLIN)
        routes = {self.frontend: (self.backend, "frontend", "backend"),
                  self.backend: (self.frontend, "backend", "frontend")}
        while not self._stopping:
            ready = dict(poller.poll(WAKE_MS))
            now = time.monotonic()
            self.turned = now
            for sock in ready:
                route = routes.get(sock)
                if route is not None:
                    self._forward(sock, *route)
                else:
                    self._peer_events(sock)
            self.drops.flush(now)
        self.drops.flush(time.monotonic(), force=True)

    def _peer_events(self, monitor: Any) -> None:
        publisher.count_peers(monitor, self.peers, self._monitors[monitor])

    def _forward(self, source: Any, target: Any, came: str, goes: str) -> None:
        count = self.counters.incr
        for _ in range(BATCH):
            try:
                parts = source.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            count("received_" + came)
            if len(parts) < 3:
                self._drop("too_few_frames", parts[0].bytes, came,
                           "%d frame(s); a message needs the sender's id, "
                           "the destination's and a body" % len(parts))
                continue
            sender, dest = parts[0].bytes, parts[1].bytes
            if not dest or len(dest) > MAX_ROUTING_ID:
                self._drop("bad_routing_id", sender, came,
                           "destination id of %d bytes" % len(dest))
                continue
            if dest == PUBLISH_ID and came == "frontend":
                self._publish(sender, parts[2:])
                continue
            parts[0], parts[1] = dest, sender
            try:
                target.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._drop("peer_full", sender, came,
                           "%s's queue on the %s is full" % (_shown(dest), goes))
                continue
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    raise  # closed under us: the proxy stops
                if exc.errno != zmq.EHOSTUNREACH:
                    self._drop("send_failed", sender, came, "to %s: %s"
                               % (_shown(dest), exc))
                    continue
                self._drop("unroutable", sender, came,
                           "%s is not connected to the %s"
                           % (_shown(dest), goes))
                self._tell_unroutable(source, sender, dest)
                continue
            count("forwarded_" + goes)
            if self.debug:
                LOG.debug("%s -> %s: %s -> %s, %d frame(s)", came, goes,
                          _shown(sender), _shown(dest), len(parts) - 2)

    def _publish(self, sender: bytes, frames: list) -> None:
        if self.publisher is None:
            self._drop("no_publisher", sender, "frontend",
                       "a fanout to publish, but this proxy has no "
                       "publisher (--publisher-port)")
            return
        self.publisher.publish(_shown(sender), frames, self.debug)

    def _tell_unroutable(self, source: Any, sender: bytes,
                         dest: bytes) -> None:
        """Tell the sender, if it is still there and has room, that
        ``dest`` is not connected here (``proxied.UNROUTABLE``)."""
        try:
            source.send_multipart([sender, dest, UNROUTABLE], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.counters.incr("notices_lost")
            return
        self.counters.incr("notices_sent")

    def _drop(self, reason: str, sender: bytes, came: str,
              detail: str) -> None:
        self.counters.incr("dropped." + reason)
        self.drops.record(reason, None, "%s peer %s" % (came, _shown(sender)),
                          detail, time.monotonic())

    def close(self) -> None:
        """Close the sockets and the context (nothing is kept to send)."""
        for monitor in list(self._monitors):
            monitor.close(0)
        self._monitors.clear()
        if getattr(self, "publisher", None) is not None:
            self.publisher.close()  # type: ignore[union-attr]
        for sock in (getattr(self, "frontend", None),
                     getattr(self, "backend", None)):
            if sock is not None:
                sock.close(0)
        if self.curve is not None:
            self.curve.close()
        self._ctx.term()
