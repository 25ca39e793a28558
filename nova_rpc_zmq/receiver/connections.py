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
takes it (to count handshakes refused before ZAP is asked), so the
receiver counts no connections then and ``/metrics`` leaves both out.

The monitor's events queue in an inproc pipe without a bound on the
reading side, so none are lost between two reads; ``read()`` takes them
all without blocking. Not thread-safe: the routing loop's thread only.
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

    ``open`` is read by the metrics thread (a plain int); ``read()`` and
    ``close()`` by the loop that owns the socket.
    """

    def __init__(self, ctx: Any, sock: Any, counters: Counters) -> None:
        """Start monitoring ``sock`` of context ``ctx``, before it binds so
        that no connection is missed; one per context. Raises
        ``zmq.ZMQError``."""
        self.open = 0
        self.counters = counters
        self._sock = sock
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

    def read(self) -> int:
        """Apply every event waiting; returns how many were read."""
        n = 0
        mon = self._mon
        while True:
            try:
                parts = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            if len(parts[0]) < _EVENT.size:
                continue  # not a monitor event: nothing else writes here
            event, _fd = _EVENT.unpack_from(parts[0])
            if event == zmq.EVENT_ACCEPTED:
                self.open += 1
            elif event == zmq.EVENT_DISCONNECTED:
                # a connection taken before the monitor started: not counted
                self.open = max(0, self.open - 1)
                self.counters.incr("connections_closed")

    def close(self) -> None:
        """Stop monitoring; call before the watched socket is closed."""
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError as exc:
            LOG.debug("monitor of the inbound socket already gone: %s", exc)
        self._mon.close(0)
        self.open = 0
