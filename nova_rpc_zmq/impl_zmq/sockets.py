"""Outbound sockets: one cached PUSH socket per peer receiver.

The old driver opened, used and closed a socket for every message; here a
socket is made on first use of a peer and kept. Every socket has a finite
linger and a send timeout (a PUSH to a dead peer blocks at the high-water
mark; it must not block forever).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import netaddr
from nova_rpc_zmq.concurrency import Handler
from nova_rpc_zmq.errors import Timeout

LOG = logging.getLogger(__name__)

#: Messages queued per peer before a send has to wait.
SEND_HWM = 10000
#: Milliseconds a closing socket may keep flushing (cleanup() and exit).
LINGER_MS = 2000


class Outbound:
    """Cached PUSH sockets keyed by peer host. Thread- and green-safe."""

    def __init__(self, handler: Handler, ctx: Any, settings: Any,
                 configure: Callable[[Any, str], None] | None = None) -> None:
        self.handler = handler
        self.ctx = ctx
        self.port = settings.rpc_zmq_port
        self.own_host = settings.rpc_zmq_host
        self.own_address = netaddr.local_connect_address(
            settings.rpc_zmq_bind_address)
        self.send_timeout = float(settings.rpc_cast_timeout)
        self._configure = configure
        self._socks: dict[str, tuple[Any, Any]] = {}
        self._create_lock = handler.Lock()
        # green sockets already serialise blocking sends between green
        # threads; native threads need a lock per socket
        self._needs_lock = handler.name == "threading"

    def endpoint(self, host: str) -> str:
        """``tcp://`` address of ``host``'s receiver (ours for our own name)."""
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
                zmq = self.handler.zmq
                sock = self.ctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, LINGER_MS)
                sock.setsockopt(zmq.SNDHWM, SEND_HWM)
                sock.setsockopt(zmq.SNDTIMEO, int(self.send_timeout * 1000))
                sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
                endpoint = self.endpoint(host)
                if endpoint.startswith("tcp://["):
                    sock.setsockopt(zmq.IPV6, 1)
                if self._configure is not None:
                    self._configure(sock, host)
                sock.connect(endpoint)
                lock = self.handler.Lock() if self._needs_lock else None
                entry = (sock, lock)
                self._socks[host] = entry
                LOG.debug("connected to %s (%s)", host, endpoint)
        return entry

    def send(self, host: str, frames: list[bytes], topic: str = "") -> None:
        """Queue ``frames`` for ``host``'s receiver.

        Returns as soon as ZeroMQ holds the message; waits only when the
        peer's queue is full, at most ``rpc_cast_timeout`` seconds, then
        raises Timeout naming the host.
        """
        sock, lock = self._socket(host)
        zmq = self.handler.zmq
        # Frames are copied into ZeroMQ (copy=True): zero-copy sends start
        # pyzmq's garbage-collector thread, which blocks a monkey-patched
        # process's hub; the copy costs less than that risk.
        try:
            if lock is None:
                try:
                    frames_io.send(sock, frames, frames_io.NOBLOCK)
                except zmq.Again:
                    with self.handler.deadline(self.send_timeout):
                        sock.send_multipart(frames)
            else:
                with lock:
                    frames_io.send(sock, frames)
        except (zmq.Again, TimeoutError) as exc:
            raise Timeout(
                info="could not hand a message to host %s (%s) within %.0fs: "
                     "its receiver is not taking messages; is "
                     "nova-rpc-zmq-receiver running there?"
                     % (host, self.endpoint(host), self.send_timeout),
                topic=topic) from exc

    def forget(self, host: str) -> None:
        """Close ``host``'s socket (it was refused); the next send makes a new one."""
        with self._create_lock:
            entry = self._socks.pop(host, None)
        if entry is not None:
            sock, lock = entry
            if lock is None:
                sock.close(0)
            else:
                with lock:  # not while another thread sends on it
                    sock.close(0)

    def hosts(self) -> list[str]:
        return list(self._socks)

    def close(self, linger_ms: int = LINGER_MS) -> None:
        """Close every socket, letting each flush for ``linger_ms``."""
        with self._create_lock:
            socks, self._socks = self._socks, {}
        for sock, _lock in socks.values():
            sock.close(linger_ms)
