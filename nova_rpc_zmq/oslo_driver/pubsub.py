"""Fanout through PUB/SUB publisher proxies (``[oslo_messaging_zmq]
use_pub_sub = true``).

A proxy started with a publisher (``nova-rpc-zmq-proxy --publisher-port``,
or ``use_pub_sub = true`` in its file) registers
``host:frontend_port:publisher_port`` under ``PUBLISHER_KEY`` besides its
router registration. Then:

* a caller's fanout goes as ONE message ``[PUBLISH_MEMBER, subscription,
  *frames]`` to the frontend of one publisher proxy (``FanoutSender``: a
  DEALER connected to every listed publisher, libzmq's round robin over
  the live ones, a dead one left as ``ProxyOutbound`` leaves it); the
  proxy publishes ``[subscription, *frames]`` on its PUB socket;
* each RPC server holds a SUB socket (``Subscriber``) connected to every
  publisher the matchmaker lists (followed every ``PROXY_REFRESH``
  seconds) or, when ``subscribe_on`` is set, to those ``host:port``
  endpoints only (local publishers, ``--local-publisher``); it is
  subscribed to its fanout key and hands the frames to the same callback
  as its inbound socket.

With ``rpc_zmq_curve`` both are CURVE clients of each publisher, whose
certificate is named by the host it announces (or, for ``subscribe_on``,
by the entry's host), as for router proxies (``curve.ProxyCurve``).

Each fanout is published by exactly one proxy, so a server gets it once
however many publishers it is subscribed to. When no publisher is listed
(the proxies run with ``use_pub_sub = false``), the caller logs one error
naming the setting that disagrees and fans out through the router proxies
to each server, as without ``use_pub_sub``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import zmq
import zmq.utils.monitor

from nova_rpc_zmq import concurrency, wire, zmqio
from nova_rpc_zmq.oslo_driver.curve import Curve, NoServerKey, ProxyCurve
from nova_rpc_zmq.oslo_driver.proxied import (CONNECT_WAIT, HEARTBEAT_IVL_MS,
                                              await_handshakes,
                                              HEARTBEAT_TIMEOUT_MS, HWM,
                                              PROXY_KEY, PROXY_REFRESH,
                                              PROXY_SETTLE, READ_WAKE_MS,
                                              RECONNECT_IVL_MS, ProxyList,
                                              ProxyOutbound)

LOG = logging.getLogger(__name__)

#: The registry key under which publisher proxies announce themselves.
PUBLISHER_KEY = "proxy/publisher"
#: The destination frame of a message for a proxy's publisher. It starts
#: with a zero byte, like the routing ids libzmq makes up itself, so no
#: peer can take it as its own routing id.
PUBLISH_ID = b"\x00publish"
#: ``PUBLISH_ID`` as the member ``ProxyOutbound.send`` takes.
PUBLISH_MEMBER = PUBLISH_ID.decode("ascii")
#: Ends a subscription prefix, so that a subscriber of ``rpc/x/a`` does
#: not get the fanouts of ``rpc/x/ab``.
SUBSCRIPTION_END = b"\x00"
#: Longest subscription frame a publisher accepts.
MAX_SUBSCRIPTION = 1024


def subscription(key: str) -> bytes:
    """The first frame of a published fanout of registry ``key``, and the
    prefix its subscribers subscribe to."""
    return key.encode("utf-8") + SUBSCRIPTION_END


def publisher_member(host: str, frontend_port: int,
                     publisher_port: int) -> str:
    """What a publisher proxy registers:
    ``host:frontend_port:publisher_port``."""
    return "%s:%d:%d" % (host, frontend_port, publisher_port)


def parse_subscribe_on(entries: list[str]) -> list[str]:
    """``tcp://`` endpoints of ``subscribe_on`` (``host:port`` each).
    Raises ValueError naming the entry and the fix."""
    endpoints = []
    for entry in entries:
        host, _, port = entry.strip().rpartition(":")
        try:
            number = int(port)
        except ValueError:
            number = 0
        if not host or not 0 < number < 65536:
            raise ValueError("subscribe_on entry %r is not host:port; list "
                             "the publishers as host:port,host:port"
                             % entry)
        endpoints.append("tcp://%s:%d" % (host.strip("[]"), number))
    return endpoints


def publishers(lookup: Any, lock: Any) -> ProxyList:
    """The publisher proxies the matchmaker lists (``current("frontend")``:
    where callers send, ``current("backend")``: their PUB sockets)."""
    return ProxyList(lookup, lock, PROXY_SETTLE, key=PUBLISHER_KEY,
                     third="publisher_port")


class FanoutSender:
    """Sends each fanout once, to one publisher proxy (thread-safe).

    ``send`` returns False when no publisher is listed or none took the
    message (nothing was queued): the caller then fans out itself.
    """

    def __init__(self, handler: concurrency.Handler, ctx: Any,
                 linger_ms: int, lookup: Any,
                 curve: Curve | None = None) -> None:
        self.ctx = ctx
        self._lookup = lookup
        self._publishers = publishers(lookup, handler.Lock())
        self._out = ProxyOutbound(handler, ctx, linger_ms, self._publishers,
                                  curve=curve)
        self._missing_told = False

    def send(self, key: str, parts: list, wait: float, what: str) -> bool:
        """Hand ``parts`` (a fanout of registry ``key``) to one publisher
        within ``wait`` seconds; False: not sent, fan out otherwise."""
        try:
            self._publishers.refresh()
        except Exception as exc:  # noqa: BLE001 - keep what we knew
            LOG.warning("could not list the publisher proxies: %s", exc)
        if not self._publishers.current("backend"):
            self._tell_missing(what)
            return False
        self._missing_told = False
        if self._out.send(PUBLISH_MEMBER, [subscription(key)] + list(parts),
                          wait):
            return True
        LOG.warning("%s: no publisher proxy took the fanout within %.1fs; "
                    "sent to each server through the router proxies "
                    "instead", what, wait)
        return False

    def _tell_missing(self, what: str) -> None:
        if self._missing_told:
            return
        self._missing_told = True
        routers = self._lookup.members(PROXY_KEY)
        LOG.error(
            "%s: [oslo_messaging_zmq] use_pub_sub = true here, but no "
            "publisher proxy is registered under %s in the matchmaker "
            "(router proxies: %s): the proxies run with use_pub_sub = false "
            "and no --publisher-port. Set use_pub_sub the same in the "
            "services' and the proxies' files; meanwhile fanout goes to "
            "each server through the router proxies", what, PUBLISHER_KEY,
            ", ".join(routers) or "none")

    def close(self) -> None:
        self._out.close()


class Subscriber:
    """A SUB socket subscribed to one fanout key, connected to every
    publisher (``subscribe_on``'s, else the matchmaker's), and its reader.

    ``on_message(frames)`` runs in the reader with the frames after the
    subscription and must not raise (what it raises is logged and the
    message dropped). The constructor waits up to ``CONNECT_WAIT`` seconds
    for the handshake with each publisher, so that a server that has
    started gets the fanouts sent afterwards.
    """

    def __init__(self, handler: concurrency.Handler, ctx: Any, key: str,
                 on_message: Callable[[list], None], what: str,
                 listed: ProxyList | None,
                 fixed: list[str] | None = None,
                 curve: Curve | None = None) -> None:
        self.handler = handler
        self.what = what
        self.prefix = subscription(key)
        self._on_message = on_message
        self._listed = listed
        self._fixed = set(fixed or ())
        self._endpoints: set[str] = set()
        self._stopped = False
        self._sock = zmqio.make_socket(
            ctx, zmq.SUB, linger=0, hwm=HWM, rcvtimeo=READ_WAKE_MS,
            maxmsgsize=wire.DEFAULT_LIMITS.max_msg_size,
            subscribe=self.prefix,
            options={zmq.HEARTBEAT_IVL: HEARTBEAT_IVL_MS,
                     zmq.HEARTBEAT_TIMEOUT: HEARTBEAT_TIMEOUT_MS,
                     zmq.HEARTBEAT_TTL: HEARTBEAT_TIMEOUT_MS,
                     zmq.RECONNECT_IVL: RECONNECT_IVL_MS})
        self._secure = ProxyCurve(curve, self._sock) \
            if curve is not None else None
        self._unkeyed: set[str] = set()
        try:
            self._follow(wait=CONNECT_WAIT)
        except BaseException:
            self._sock.close(0)
            raise
        self._reader = handler.spawn(self._read)

    def _wanted(self) -> set[str]:
        if self._listed is None:
            return self._fixed
        try:
            self._listed.refresh()
        except Exception as exc:  # noqa: BLE001 - keep what we have
            LOG.warning("%s: could not list the publisher proxies: %s",
                        self.what, exc)
        return self._listed.current("backend")

    def _follow(self, wait: float = 0.0) -> None:
        """Connect to new publishers, leave unlisted ones; with ``wait``,
        wait for the handshake with each new one (at most ``wait`` s)."""
        wanted = self._wanted()
        if wait and not wanted:
            LOG.warning("%s: no publisher proxy is listed under %s in the "
                        "matchmaker (use_pub_sub = true here: do the "
                        "proxies run with it?); fanouts reach this server "
                        "through the router proxies until one is",
                        self.what, PUBLISHER_KEY)
        # with CURVE the handshake watcher holds the socket's monitor
        monitor = self._sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED) \
            if wait and self._secure is None else None
        try:
            added = wanted - self._endpoints
            for endpoint in sorted(added):
                try:
                    if self._secure is not None:
                        self._secure.before_connect(endpoint)
                    self._sock.connect(endpoint)
                except NoServerKey as exc:
                    if endpoint not in self._unkeyed:
                        self._unkeyed.add(endpoint)
                        LOG.error("%s: not subscribed to publisher %s: %s",
                                  self.what, endpoint, exc)
                    continue
                except zmq.ZMQError as exc:
                    LOG.warning("%s: cannot subscribe to publisher %s: %s",
                                self.what, endpoint, exc)
                    continue
                self._endpoints.add(endpoint)
                LOG.info("%s: subscribed to publisher %s", self.what,
                         endpoint)
            for endpoint in sorted(self._endpoints - wanted):
                try:
                    self._sock.disconnect(endpoint)
                except zmq.ZMQError:
                    pass  # already gone
                self._endpoints.discard(endpoint)
                LOG.info("%s: left publisher %s (no longer listed)",
                         self.what, endpoint)
            if monitor is not None:
                self._await(monitor, added & self._endpoints, wait)
            if self._secure is not None:
                self._secure.retry(self._endpoints)
                if wait:
                    self._warn_missing(self._secure.await_handshakes(
                        added & self._endpoints, wait), wait)
        finally:
            if monitor is not None:
                self._sock.disable_monitor()
                monitor.close(0)

    def _await(self, monitor: Any, pending: set[str], wait: float) -> None:
        self._warn_missing(await_handshakes(monitor, pending, wait), wait)

    def _warn_missing(self, missing: set[str], wait: float) -> None:
        if missing:
            LOG.warning("%s: no handshake with publisher %s yet (refused, "
                        "or none within %.1fs); fanouts published there "
                        "reach us once it connects", self.what,
                        ", ".join(sorted(missing)), wait)

    def _read(self) -> None:
        sock, handle = self._sock, self._on_message
        recv = zmqio.recv_function(self.handler)
        followed = time.monotonic()
        while not self._stopped:
            # with CURVE also to retry publishers that refused us
            if (self._listed is not None or self._secure is not None) \
                    and time.monotonic() - followed >= PROXY_REFRESH:
                followed = time.monotonic()
                self._follow()
            try:
                parts = recv(sock)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                if not self._stopped:
                    LOG.error("%s: reading the fanout subscription failed, "
                              "no more fanouts are read: %s", self.what, exc)
                return
            if len(parts) < 2 or parts[0] != self.prefix:
                LOG.warning("%s: dropped a published message of %d "
                            "frame(s) not of our subscription", self.what,
                            len(parts))
                continue
            try:
                handle(parts[1:])
            except Exception:
                LOG.exception("%s: a fanout message was dropped", self.what)

    def close(self) -> None:
        """Stop the reader (within ``READ_WAKE_MS``) and close the socket;
        fanouts not yet read are dropped."""
        if self._stopped:
            return
        self._stopped = True
        self.handler.join(self._reader, 5.0)
        self._sock.close(0)
        if self._secure is not None:
            self._secure.close()
