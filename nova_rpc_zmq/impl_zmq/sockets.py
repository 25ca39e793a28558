"""Outbound sockets: one cached PUSH socket per peer receiver.

The old driver opened, used and closed a socket for every message; here a
socket is made on first use of a peer and kept. Every socket has a finite
linger and a send timeout (a PUSH to a dead peer blocks at the high-water
mark; it must not block forever).

Budget: one socket per peer (plus, with CURVE, the handshake monitor's
two), so a controller reaches thousands of hosts within the open-files
limit (``zmqio.socket_cap``). A socket unused for
``rpc_zmq_outbound_idle_timeout`` is closed (with linger, so what it
still holds is flushed) and reopened by the next send; a socket that
cannot be opened because the budget is spent raises ``SocketBudgetError``
naming the limit and the fix, never a raw ``ZMQError``.
"""

from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import netaddr, zmqio
from nova_rpc_zmq.concurrency import Handler
from nova_rpc_zmq.errors import RPCException, SocketBudgetError, Timeout
from nova_rpc_zmq.matchmaker.broker import BROKER

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Messages queued per peer before a send has to wait.
SEND_HWM = 10000
#: Milliseconds a closing socket may keep flushing (cleanup() and exit).
LINGER_MS = 2000
#: What libzmq says when the descriptors or the context's socket cap ran out.
_EXHAUSTED = (errno.EMFILE, errno.ENFILE)
#: Seconds between two "budget spent" log lines (each failure is counted).
_BUDGET_LOG_EVERY = 60.0
#: Once the budget was spent, sockets idle this long go even with
#: ``rpc_zmq_outbound_idle_timeout = 0``.
_BUDGET_IDLE = 60.0


class Outbound:
    """Cached PUSH sockets keyed by peer host. Thread- and green-safe.

    ``evicted`` counts sockets closed for idleness, ``budget_refusals``
    sockets refused because the open-files budget was spent.
    """

    def __init__(self, handler: Handler, ctx: Any, settings: Settings,
                 configure: Callable[[Any, str], None] | None = None) -> None:
        self.handler = handler
        self.ctx = ctx
        self.port = settings.rpc_zmq_port
        self.broker = settings.rpc_zmq_broker_ip
        self.broker_port = settings.rpc_zmq_start_port
        self.own_host = settings.rpc_zmq_host
        self.own_address = netaddr.local_connect_address(
            settings.rpc_zmq_bind_address)
        self.send_timeout = float(settings.rpc_cast_timeout)
        self.idle_timeout = float(settings.rpc_zmq_outbound_idle_timeout)
        self._configure = configure
        self._socks: dict[str, tuple[Any, Any]] = {}
        self._used: dict[str, float] = {}
        self._create_lock = handler.Lock()
        self.closed = False
        # green sockets already serialise blocking sends between green
        # threads; native threads need a lock per socket
        self._needs_lock = not handler.green
        # sweeping a few times per idle period bounds how long past its
        # timeout a socket lives, at one pass over the table each time
        self._sweep_every = max((self.idle_timeout or _BUDGET_IDLE) / 4.0,
                                0.05)
        self._budget_spent = False
        self._next_sweep = time.monotonic() + self._sweep_every
        self._last_budget_log = float("-inf")
        self.evicted = 0
        self.budget_refusals = 0

    def endpoint(self, host: str) -> str:
        """``tcp://`` address of ``host``'s receiver (ours for our own name);
        for ``broker.BROKER``, the broker's front end."""
        if host == BROKER:
            if not self.broker:
                raise RPCException("a message for the broker, but "
                                   "rpc_zmq_broker_ip is not set")
            return netaddr.tcp_endpoint(self.broker, self.broker_port)
        if host == self.own_host or host in ("localhost", None):
            host = self.own_address
        return netaddr.tcp_endpoint(host, self.port)

    def _socket(self, host: str) -> tuple[Any, Any]:
        entry = self._socks.get(host)
        if entry is not None:
            return entry
        with self._create_lock:
            entry = self._socks.get(host)
            if entry is None:
                if self.closed:
                    # a socket made now would keep the context's term()
                    # waiting for ever (a method finishing after cleanup)
                    raise RPCException("cannot send to host %s: this process's "
                                       "RPC driver was closed (rpc.cleanup())" % host)
                entry = (self._open(host),
                         self.handler.Lock() if self._needs_lock else None)
                self._socks[host] = entry
        return entry

    def _open(self, host: str) -> Any:
        """A new PUSH socket connected to ``host``; SocketBudgetError when
        the process may open no more (the half-made socket is closed)."""
        endpoint = self.endpoint(host)
        options: dict[int, Any] = {zmq.RECONNECT_IVL_MAX: 2000}
        if endpoint.startswith("tcp://["):
            options[zmq.IPV6] = 1
        try:
            sock = zmqio.make_socket(
                self.ctx, zmq.PUSH, linger=LINGER_MS, sndhwm=SEND_HWM,
                sndtimeo=int(self.send_timeout * 1000), options=options)
        except zmq.ZMQError as exc:
            if exc.errno in _EXHAUSTED:
                raise self._exhausted(host, exc) from exc
            raise
        try:
            if self._configure is not None:
                self._configure(sock, host)
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            if exc.errno in _EXHAUSTED:
                # e.g. the CURVE handshake monitor's sockets did not fit
                raise self._exhausted(host, exc) from exc
            raise
        except BaseException:
            sock.close(0)   # e.g. no CURVE key for host: leak nothing
            raise
        LOG.debug("connected to %s (%s)", host, endpoint)
        return sock

    def _exhausted(self, host: str, exc: Exception) -> SocketBudgetError:
        """The error for a spent budget; logged at most once a minute (the
        caller logs or raises each one, ``budget_refusals`` counts them)."""
        self.budget_refusals += 1
        error = SocketBudgetError(host, zmqio.raise_fd_limit(), len(self._socks),
                                  detail="ZeroMQ: %s" % exc)
        now = time.monotonic()
        if now - self._last_budget_log >= _BUDGET_LOG_EVERY:
            self._last_budget_log = now
            LOG.error("%s (%d refused so far)", error, self.budget_refusals)
        # make room for later sends: the next send sweeps out idle peers,
        # even with eviction off (not here: the caller holds _create_lock)
        self._budget_spent = True
        self._next_sweep = now
        return error

    def send(self, host: str, frames: list[bytes], topic: str = "") -> None:
        """Queue ``frames`` for ``host``'s receiver.

        Returns as soon as ZeroMQ holds the message; waits only when the
        peer's queue is full, at most ``rpc_cast_timeout`` seconds, then
        raises Timeout naming the host. Raises SocketBudgetError when no
        socket to ``host`` can be opened.
        """
        now = time.monotonic()
        if now >= self._next_sweep:
            self._evict_idle(now)
        self._used[host] = now
        for _attempt in range(2):
            sock, lock = self._socket(host)
            try:
                if self._send_on(sock, lock, frames):
                    return
            except (zmq.Again, TimeoutError) as exc:
                raise Timeout(
                    info="could not hand a message to host %s (%s) within "
                         "%.0fs: its receiver is not taking messages; is "
                         "nova-rpc-zmq-receiver running there?"
                         % (host, self.endpoint(host), self.send_timeout),
                    topic=topic) from exc
            # evicted (or forgotten) between look-up and send: a new one
            self._drop_entry(host, sock)
        raise Timeout(info="the socket to host %s kept being closed while "
                           "sending" % host, topic=topic)

    def _send_on(self, sock: Any, lock: Any, frames: list[bytes]) -> bool:
        """Send on ``sock``; False when it was closed meanwhile."""
        # Frames are copied into ZeroMQ (copy=True): zero-copy sends start
        # pyzmq's garbage-collector thread, which blocks a monkey-patched
        # process's hub; the copy costs less than that risk.
        try:
            if lock is None:
                if sock.closed:
                    return False
                try:
                    frames_io.send(sock, frames, frames_io.NOBLOCK)
                except zmq.Again:
                    with self.handler.deadline(self.send_timeout):
                        sock.send_multipart(frames)
            else:
                with lock:
                    if sock.closed:
                        return False
                    frames_io.send(sock, frames)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.ENOTSOCK:
                return False
            raise
        return True

    def _drop_entry(self, host: str, sock: Any) -> None:
        with self._create_lock:
            entry = self._socks.get(host)
            if entry is not None and entry[0] is sock:
                del self._socks[host]

    def _evict_idle(self, now: float) -> None:
        """Close sockets unused for ``idle_timeout`` seconds (with linger:
        what they hold is still flushed). Once the budget was spent, also
        with eviction off, taking peers idle for over a minute."""
        self._next_sweep = now + self._sweep_every
        timeout = self.idle_timeout or (_BUDGET_IDLE if self._budget_spent
                                        else 0)
        if not timeout:
            return
        idle: list[tuple[str, tuple[Any, Any]]] = []
        with self._create_lock:
            for host, entry in list(self._socks.items()):
                if now - self._used.get(host, now) >= timeout:
                    del self._socks[host]
                    self._used.pop(host, None)
                    idle.append((host, entry))
        for host, (sock, lock) in idle:
            self._close(sock, lock, LINGER_MS)
            LOG.debug("closed the socket to %s: unused for %.0fs", host,
                      timeout)
        self.evicted += len(idle)

    def _close(self, sock: Any, lock: Any, linger_ms: int) -> None:
        if lock is None:
            sock.close(linger_ms)
        else:
            with lock:  # not while another thread sends on it
                sock.close(linger_ms)

    def forget(self, host: str) -> None:
        """Close ``host``'s socket (it was refused); the next send makes a new one."""
        with self._create_lock:
            entry = self._socks.pop(host, None)
        if entry is not None:
            self._close(entry[0], entry[1], 0)

    def reopen(self, host: str) -> None:
        """Replace ``host``'s socket by a fresh, empty one now (a refused
        peer: the new socket's own handshake tells whether it was fixed)."""
        self.forget(host)
        self._used[host] = time.monotonic()
        self._socket(host)

    def hosts(self) -> list[str]:
        """Hosts with an open socket now."""
        return list(self._socks)

    @property
    def peer_count(self) -> int:
        """How many hosts have an open socket now (``len(hosts())``)."""
        return len(self._socks)

    def close(self, linger_ms: int = LINGER_MS) -> None:
        """Close every socket, letting each flush for ``linger_ms``."""
        with self._create_lock:
            self.closed = True
            socks, self._socks = self._socks, {}
            self._used.clear()
        for sock, _lock in socks.values():
            sock.close(linger_ms)
