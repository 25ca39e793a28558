"""CURVE on the oslo.messaging driver: who may connect to our PULL sockets,
and which key we expect from the PULL sockets we push to.

Off unless ``[oslo_messaging_zmq] rpc_zmq_curve = true``. The files are
those of the legacy driver (``nova_rpc_zmq.security``, docs/design.md
"Security"): ``rpc_zmq_curve_key_file`` holds this host's key pair,
``rpc_zmq_curve_keys_dir`` one public certificate ``<host>.key`` per host,
named by each host's ``rpc_zmq_host``.

* Every ``Inbound`` PULL (RPC servers, notification listeners, a caller's
  reply socket) is a CURVE server with our key pair, checked by one ZAP
  authenticator per ZeroMQ context that admits exactly the keys of the
  keys dir (``AllowList``: it follows the directory's changes). The
  authenticator starts before the first bind and stops at cleanup.
* Every ``Outbound`` PUSH to ``host:port`` is a CURVE client with our key
  pair and ``<keys_dir>/<host>.key`` as the server key. A host without a
  certificate there is our own configuration mistake: the send raises
  ``NoServerKey`` at once, naming the host and the file expected.
* A host that refuses our handshake (it does not list our key, or our
  copy of its key is stale) never gets a pipe (``ZMQ_IMMEDIATE``): nothing
  is queued for it. The handshake watcher logs why, naming the host and
  the file to fix, and from then on every send to that host (call, cast,
  reply, notification) raises ``HostRefused`` with those words at once,
  as the legacy driver does, instead of waiting for a timeout. libzmq
  gives up on a socket refused by ZAP for good, so at most every
  ``RETRY_REFUSED`` seconds such a send also replaces the host's sockets
  (re-reading its certificate): once the keys are fixed, sends resume
  without a restart.

Through router proxies and publishers (``proxied.py``, ``pubsub.py``)
one socket reaches several proxies: ``ProxyCurve`` sets each proxy's
server key (``<keys_dir>/<announced host>.key``) before each ``connect``,
its ``EndpointWatcher`` puts each handshake event down to the proxy of its
endpoint, and refused connections are made anew at most every
``RETRY_REFUSED`` seconds.

The ZAP loop blocks in ``zmq_poll``; in a monkey-patched process it runs
in a real OS thread (``NativeZapAuthenticator``), never on the hub.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import oslo_messaging
import zmq
import zmq.utils.monitor

from nova_rpc_zmq import concurrency
from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.security import (AllowList, HandshakeWatcher, KeyPair,
                                   NativeZapAuthenticator, configure_client,
                                   configure_server, curve_keypair,
                                   server_key_for)

LOG = logging.getLogger(__name__)

#: Seconds between two fresh sockets to a host that refused our handshake.
RETRY_REFUSED = 5.0
#: Seconds ``close`` waits for the ZAP and handshake loops to end.
STOP_WAIT = 2.0


class NoServerKey(oslo_messaging.MessageDeliveryFailure):
    """We have no usable certificate for the host we send to (our keys dir
    lacks ``<host>.key`` or it is malformed): a configuration mistake."""


class HostRefused(oslo_messaging.MessageDeliveryFailure):
    """The host we send to refused our CURVE handshake; the message says
    why and which file to fix (the handshake watcher's words)."""


class Curve:
    """This driver's CURVE set-up: the server side of ``Inbound`` sockets
    and the client side of ``Outbound`` ones.

    Thread-safe (green or native threads, those of ``handler``). Build it
    with ``from_options``; ``close`` at the driver's cleanup, after its
    sockets are closed and before its context is terminated.
    """

    def __init__(self, keypair: KeyPair, keys_dir: str, local_host: str,
                 handler: concurrency.Handler) -> None:
        self.keypair = keypair
        self.keys_dir = keys_dir
        self.local_host = local_host
        self.handler = handler
        # raises ConfigurationError naming rpc_zmq_curve_keys_dir
        self.allow_list = AllowList(keys_dir)
        self._lock = handler.Lock()
        self._pid = os.getpid()
        self._authenticators: list[NativeZapAuthenticator] = []
        self.watcher = self._new_watcher()
        self._retry_at: dict[str, float] = {}

    @classmethod
    def from_options(cls, zconf: Any, handler: concurrency.Handler
                     ) -> "Curve | None":
        """The set-up ``zconf`` (the ``[oslo_messaging_zmq]`` group) asks
        for, None with CURVE off. Reads the key pair and the keys dir now.

        Raises ConfigurationError naming the option, the file and the fix.
        """
        if not zconf.rpc_zmq_curve:
            return None
        keypair = curve_keypair(zconf.rpc_zmq_curve_key_file)
        return cls(keypair, zconf.rpc_zmq_curve_keys_dir, zconf.rpc_zmq_host,
                   handler)

    def _new_watcher(self) -> HandshakeWatcher:
        return HandshakeWatcher(self.handler, keys_dir=self.keys_dir,
                                local_host=self.local_host)

    def _after_fork(self) -> None:
        """A forked child has neither its parent's loops nor its context:
        it starts its own (the parent's objects are left alone)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._authenticators = []
                self.watcher = self._new_watcher()
                self._retry_at = {}

    # ------------------------------------------------------------ server --
    def _authenticator(self, ctx: Any) -> NativeZapAuthenticator:
        with self._lock:
            for auth in self._authenticators:
                if auth.context is ctx:
                    return auth
            auth = NativeZapAuthenticator(ctx, self.allow_list, self.handler)
            auth.start()
            self._authenticators.append(auth)
            return auth

    def serve(self, sock: Any, ctx: Any) -> None:
        """Make ``sock``, an unbound PULL of ``ctx``, a CURVE server that
        admits the keys of the keys dir; the context's authenticator starts
        on its first socket. Call from the thread that owns ``sock``."""
        self._after_fork()
        auth = self._authenticator(ctx)
        configure_server(sock, self.keypair)
        # counts and logs what ZAP never sees (a stale copy of our key)
        auth.watch_server(sock)

    @property
    def refused(self) -> dict[str, int]:
        """Handshakes our sockets refused so far, by reason (all contexts
        of this process)."""
        total: dict[str, int] = {}
        for auth in list(self._authenticators):
            for reason, count in auth.refused.items():
                total[reason] = total.get(reason, 0) + count
        return total

    # ------------------------------------------------------------ client --
    def connect(self, sock: Any, host: str) -> None:
        """Make ``sock``, an unconnected PUSH, a CURVE client of ``host``
        and watch its handshakes.

        Raises NoServerKey when the keys dir has no usable ``<host>.key``.
        """
        self._after_fork()
        try:
            server_key = server_key_for(host, self.keys_dir)
        except ConfigurationError as exc:
            raise NoServerKey("rpc_zmq_curve_keys_dir: %s" % exc) from None
        configure_client(sock, self.keypair, server_key)
        self.watcher.watch(sock, host)

    def refusal(self, host: str) -> tuple[HostRefused | None, bool]:
        """``(error, retry)``: why ``host`` refused our last handshake (None
        when it did not), and whether its sockets should be replaced now
        (at most every ``RETRY_REFUSED`` seconds; the refusal is then
        forgotten, so the new socket's handshake decides afresh)."""
        failure = self.watcher.failure(host)
        if failure is None:
            return None, False
        error = HostRefused(str(failure))
        now = time.monotonic()
        with self._lock:
            if now < self._retry_at.get(host, 0.0):
                return error, False
            self._retry_at[host] = now + RETRY_REFUSED
        self.watcher.clear(host)
        LOG.info("CURVE: new connection to %s, which refused the last "
                 "handshake (its keys or ours may have been fixed)", host)
        return error, True

    def close(self) -> None:
        """Stop the authenticators and the handshake watcher (this
        process's only); CURVE servers refuse every handshake afterwards."""
        if self._pid != os.getpid():
            return
        with self._lock:
            authenticators, self._authenticators = self._authenticators, []
        for auth in authenticators:
            auth.stop(STOP_WAIT)
        self.watcher.stop(STOP_WAIT)


def endpoint_host(endpoint: str) -> str:
    """The host of a ``tcp://host:port`` endpoint (brackets of an IPv6
    address removed): the name its certificate is filed under."""
    address = endpoint.partition("://")[2]
    return address.rpartition(":")[0].strip("[]")


class EndpointWatcher(HandshakeWatcher):
    """A ``HandshakeWatcher`` for one socket connected to several hosts
    (a DEALER to every router proxy): each monitor event is put down to
    the host of its endpoint, not to the socket's label, and the hosts
    whose handshake succeeded are remembered too (``succeeded``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._succeeded: set[str] = set()

    def succeeded(self, host: str) -> bool:
        """Whether our last handshake with ``host`` succeeded."""
        with self._lock:
            return host in self._succeeded

    def forget(self, host: str) -> None:
        """Forget how ``host``'s last handshake went (a new connection)."""
        self.clear(host)
        with self._lock:
            self._succeeded.discard(host)

    def _drain(self, item: Any) -> bool:
        for _ in range(100):
            try:
                event = zmq.utils.monitor.recv_monitor_message(item.pair,
                                                               zmq.NOBLOCK)
            except zmq.Again:
                return True
            except (ValueError, IndexError) as exc:
                LOG.error("unreadable monitor event dropped: %s", exc)
                continue
            kind, value = int(event["event"]), int(event["value"])
            if kind == zmq.EVENT_MONITOR_STOPPED:
                return False
            endpoint = event["endpoint"].decode("utf-8", "replace")
            host = endpoint_host(endpoint) or item.host
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.clear(host)
                with self._lock:
                    self._succeeded.add(host)
                continue
            with self._lock:
                self._succeeded.discard(host)
            self._record(type(item)(item.pair, host, item.mechanism), kind,
                         value, endpoint)
        return True


class ProxyCurve:
    """The client side of CURVE on one socket connected to several proxies
    (``proxied.py``, ``pubsub.py``): the server key of each proxy is
    ``<keys_dir>/<host>.key``, ``host`` being the name the proxy announces
    in the matchmaker (its ``--host``), set before each ``connect``.

    The handshakes are watched (the socket's monitor is this one): a
    proxy that refuses us is logged with the file to fix and reported by
    ``refusal`` as ``HostRefused`` naming the proxy's host and that
    file; ``retry`` makes a new connection to it at most every
    ``RETRY_REFUSED`` seconds (libzmq gives up on a refused one), so a
    key added later is used without a restart. Used under the socket
    owner's lock (or its one thread).
    """

    def __init__(self, curve: Curve, sock: Any) -> None:
        self.curve = curve
        self.sock = sock
        self._connected_once = False
        self._retry_at: dict[str, float] = {}
        self.watcher = EndpointWatcher(curve.handler,
                                       keys_dir=curve.keys_dir,
                                       local_host=curve.local_host)

    def before_connect(self, endpoint: str) -> None:
        """Set the server key of ``endpoint``'s proxy on the socket.
        Raises NoServerKey naming ``<keys_dir>/<host>.key``."""
        host = endpoint_host(endpoint)
        try:
            server_key = server_key_for(host, self.curve.keys_dir)
        except ConfigurationError as exc:
            raise NoServerKey(
                "rpc_zmq_curve_keys_dir: router proxy %s: %s" % (host, exc)) \
                from None
        if not self._connected_once:
            configure_client(self.sock, self.curve.keypair, server_key)
            self.watcher.watch(self.sock, host)
            self._connected_once = True
        else:
            self.sock.curve_serverkey = server_key

    def refusal(self, endpoints: set[str]) -> HostRefused | None:
        """``HostRefused`` when every proxy of ``endpoints`` refused our
        last handshake (the first one's words), else None."""
        if not endpoints:
            return None
        failures = []
        for endpoint in sorted(endpoints):
            failure = self.watcher.failure(endpoint_host(endpoint))
            if failure is None:
                return None
            failures.append(failure)
        return HostRefused("router proxy %s" % failures[0])

    def retry(self, endpoints: set[str]) -> None:
        """Connect anew to each proxy of ``endpoints`` that refused us, at
        most every ``RETRY_REFUSED`` seconds each."""
        now = time.monotonic()
        for endpoint in sorted(endpoints):
            host = endpoint_host(endpoint)
            if self.watcher.failure(host) is None \
                    or now < self._retry_at.get(endpoint, 0.0):
                continue
            self._retry_at[endpoint] = now + RETRY_REFUSED
            try:
                self.sock.disconnect(endpoint)
            except zmq.ZMQError:
                pass  # already gone
            try:
                self.before_connect(endpoint)
            except NoServerKey as exc:
                LOG.error("%s", exc)
                continue
            self.watcher.forget(host)
            self.sock.connect(endpoint)
            LOG.info("CURVE: new connection to router proxy %s, which "
                     "refused the last handshake", host)

    def await_handshakes(self, endpoints: set[str], wait: float
                         ) -> set[str]:
        """Wait at most ``wait`` seconds until the handshake with each
        proxy of ``endpoints`` succeeded or failed; those that did
        neither."""
        deadline = time.monotonic() + wait
        while True:
            missing = {e for e in endpoints
                       if not self.watcher.succeeded(endpoint_host(e))
                       and self.watcher.failure(endpoint_host(e)) is None}
            if not missing or time.monotonic() >= deadline:
                return missing
            self.curve.handler.sleep(0.02)

    def close(self) -> None:
        self.watcher.stop(STOP_WAIT)
