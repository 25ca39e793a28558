"""Dynamic direct connections (``[oslo_messaging_zmq]
use_dynamic_connections = true``): a connection per message.

``DynamicOutbound`` has the interface of ``sockets.Outbound`` (``send``,
``close``) but keeps no socket between messages: each ``send`` opens a
PUSH to the member's ``host:port``, waits for the connection, queues the
message, and closes the socket with ``zmq_linger`` (the driver's
``_linger_ms``), so that libzmq flushes the message and then lets the
connection go. A controller then holds only the connections of the
messages in flight, whatever the number of hosts; each message pays a TCP
connect and a ZMTP handshake (the deployment guide calls this topology
the slowest one, and fanout, one connection per server, linear).

How a send waits for the connection: the socket has ``ZMQ_IMMEDIATE``, so
libzmq gives it a pipe only once the TCP connection is up and the ZMTP
handshake (with CURVE, the key exchange) has succeeded; until then a
``NOBLOCK`` send raises ``zmq.Again`` and nothing is queued. ``send``
retries it with growing pauses through the concurrency handler's
``sleep`` (the way ``sockets.Outbound`` waits for room), at most ``wait``
seconds. We chose this over a socket monitor waiting for
``HANDSHAKE_SUCCEEDED``: a monitor costs a second socket pair (two more
descriptors) per message and a blocking poll, which would stop every
green thread in a monkey-patched process, while the retried send works
the same on green and native threads. A server that is dead but still
registered therefore never gets the message: the socket is closed after
``wait`` with nothing queued, costing that wait and one socket's
teardown, and the driver offers the message to the next worker (at most
``zmq_failover_connections + 1`` of a bare topic, see ``driver.py``
``_deliver``). A message is never handed over twice.

With ``rpc_zmq_curve`` each socket is a CURVE client of its host's key
(``curve.Curve.connect``), as in ``sockets.Outbound``; a host that
refused our handshake raises ``curve.HostRefused`` at the next send.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import zmq

from nova_rpc_zmq import concurrency, frames, zmqio
from nova_rpc_zmq.oslo_driver.sockets import HWM, member_host

if TYPE_CHECKING:
    from nova_rpc_zmq.oslo_driver.curve import Curve

LOG = logging.getLogger(__name__)

#: Seconds of the first and of the longest pause between two tries of a
#: send waiting for its connection.
FIRST_PAUSE = 0.0005
LONGEST_PAUSE = 0.01
#: Milliseconds between libzmq's connection attempts to a peer that
#: refused the connection (a dead server still registered), within one
#: send's wait.
RECONNECT_IVL_MS = 100


class DynamicOutbound:
    """A PUSH per message, closed after the send (same interface as
    ``sockets.Outbound``); thread-safe: each send owns its socket.

    ``opened``, ``sent`` and ``refused`` count sockets opened, messages
    queued and sends given up after their wait (for tests and metrics).
    """

    def __init__(self, handler: concurrency.Handler, ctx: Any,
                 linger_ms: int, curve: Curve | None = None) -> None:
        self.handler = handler
        self._ctx = ctx
        self._linger_ms = linger_ms
        self._curve = curve
        self._closed = False
        # plain counters: a lost increment under races costs nothing
        self.opened = 0
        self.sent = 0
        self.refused = 0
        self._count_lock = handler.Lock()

    def _open(self, member: str) -> Any:
        """A PUSH connecting to ``member``; raises ``zmq.ZMQError`` after
        ``close`` and ``curve.NoServerKey`` for a host without a key."""
        if self._closed:
            raise zmq.ZMQError(zmq.ENOTSOCK, "transport cleaned up")
        sock = zmqio.make_socket(
            self._ctx, zmq.PUSH, linger=self._linger_ms, sndhwm=HWM,
            immediate=True,
            options={zmq.RECONNECT_IVL: RECONNECT_IVL_MS})
        try:
            if self._curve is not None:
                self._curve.connect(sock, member_host(member))
            sock.connect("tcp://%s" % member)
        except BaseException:
            sock.close(0)
            raise
        with self._count_lock:
            self.opened += 1
        return sock

    def send(self, member: str, parts: list, wait: float | None) -> bool:
        """Connect to ``member`` (``host:port``), queue ``parts`` once the
        connection is up, close the socket; waits at most ``wait`` seconds
        (None: for ever) for the connection.

        Returns False when it did not go (nothing was queued: a message is
        never sent twice). Raises ``zmq.ZMQError`` after ``close``; with
        CURVE, ``curve.HostRefused`` / ``curve.NoServerKey`` as
        ``sockets.Outbound.send``.
        """
        host = member_host(member)
        if self._curve is not None:
            refused, _ = self._curve.refusal(host)
            if refused is not None:
                raise refused
        deadline = None if wait is None else time.monotonic() + wait
        sock = self._open(member)
        queued = False
        try:
            pause = FIRST_PAUSE
            while not self._closed:
                try:
                    frames.send(sock, parts, frames.NOBLOCK)
                    queued = True
                    break
                except zmq.Again:
                    pass
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.handler.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE)
        finally:
            # queued: libzmq flushes it within the linger, then lets go;
            # not queued: nothing to keep
            sock.close(self._linger_ms if queued else 0)
        with self._count_lock:
            if queued:
                self.sent += 1
            else:
                self.refused += 1
        if not queued and self._closed:
            raise zmq.ZMQError(zmq.ENOTSOCK, "transport cleaned up")
        return queued

    def close(self) -> None:
        """Refuse further sends; a send waiting for its connection gives
        up at its next try (messages already queued keep their linger)."""
        self._closed = True
