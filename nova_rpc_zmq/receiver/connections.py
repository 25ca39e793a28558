"""How many TCP peers are connected to the receiver's port.

libzmq accepts and closes TCP connections inside its I/O threads and tells
the application only through a socket monitor: an ``ACCEPTED`` event for
each connection taken, a ``DISCONNECTED`` event for each one closed
(whoever closed it: the peer, a failed or timed-out handshake, a refused
CURVE key, or libzmq itself). ``ConnectionCount`` watches the receiver's
inbound socket and keeps the count that ``/metrics`` shows as
``connections_open``, and ``connections_closed`` as a counter.

A frame larger than the inbound socket's MAXMSGSIZE (``OVERSIZE_MARGIN``
times ``rpc_zmq_max_msg_size``) makes libzmq close that peer's connection
before the receiver sees any of it. libzmq reports that closure with the
same single ``DISCONNECTED`` event as a peer that hangs up (the stream
engine's decode error is a ``protocol_error`` after the handshake, which
raises no other event), so it cannot be told apart and is not counted as a
drop: it shows only as one more closed connection.

A socket has one monitor. With ``rpc_zmq_curve`` the ZAP authenticator
takes it (to count handshakes refused before ZAP is asked) and hands this
count the same two events (``ZapAuthenticator.watch_server(sock,
on_connection=count.event)``), in its own thread as they come; without
CURVE the count has a monitor of its own (``watch``), read by the routing
loop. Either way one thread at a time applies events, and a refused
handshake ends in ``DISCONNECTED`` like any other closure, so a refused
peer does not stay counted.

The monitor's events queue in an inproc pipe without a bound on the
reading side, so none are lost between two reads; ``read()`` takes them
all without blocking.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import zmq

from nova_rpc_zmq import zmqio
from nova_rpc_zmq.metrics import Counters

LOG = logging.getLogger(__name__)

#: Seconds between two reads of the monitor by the routing loop: the gauge
#: is at most this old, and a busy loop pays one clock comparison per turn.
READ_EVERY = 0.1
#: The inproc pipe of the monitor (inproc names are per context).
MONITOR_ENDPOINT = "inproc://nova-rpc-zmq-inbound-monitor"
#: Events of the first frame of a monitor message: uint16 event, uint32 value.
_EVENT = struct.Struct("=HI")


class ConnectionCount:
    """The open TCP connections of one listening socket, from its monitor.

    ``open`` is read by the metrics thread (a plain int). Events come
    either from a monitor of its own (``watch``, then ``read()`` in the
    loop that owns the socket) or from the monitor's owner, who calls
    ``event()``; one thread at a time.
    """

    def __init__(self, counters: Counters) -> None:
        """A count at 0 that advances ``connections_closed`` of
        ``counters``; it sees nothing until ``watch`` or ``event``."""
        self.open = 0
        self.counters = counters
        self._sock: Any = None
        self._mon: Any = None
        self._closed = False

    def watch(self, ctx: Any, sock: Any) -> None:
        """Monitor ``sock`` of context ``ctx`` from here on: call before
        it binds so that no connection is missed, from the thread that
        owns it; one per context. Raises ``zmq.ZMQError``."""
        addr = MONITOR_ENDPOINT
        sock.monitor(addr, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            # rcvhwm 0: no bound, so a burst of connections between two
            # reads loses no event (the count would drift for good)
            self._mon = zmqio.make_socket(ctx, zmq.PAIR, linger=0, rcvhwm=0)
            self._mon.connect(addr)
        except zmq.ZMQError:
            sock.disable_monitor()
            raise
        self._sock = sock

    def event(self, kind: int) -> None:
        """Apply one monitor event (``zmq.EVENT_*``; others are ignored)."""
        if self._closed:
            return
        if kind == zmq.EVENT_ACCEPTED:
            self.open += 1
        elif kind == zmq.EVENT_DISCONNECTED:
            # a connection taken before the monitor started: not counted
            self.open = max(0, self.open - 1)
            self.counters.incr("connections_closed")

    def read(self) -> int:
        """Apply every event waiting on the own monitor (none without
        ``watch``); returns how many were read."""
        n = 0
        mon = self._mon
        if mon is None:
            return n
        while True:
            try:
                parts = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            if len(parts[0]) < _EVENT.size:
                continue  # not a monitor event: nothing else writes here
            self.event(_EVENT.unpack_from(parts[0])[0])

    def close(self) -> None:
        """Stop counting; call before the watched socket is closed (the
        own monitor must stop on a live socket)."""
        self._closed = True
        if self._mon is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError as exc:
                LOG.debug("monitor of the inbound socket already gone: %s", exc)
            self._mon.close(0)
            self._mon = None
        self.open = 0
