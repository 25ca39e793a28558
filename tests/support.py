"""Small shared test tools: timeout scaling, waiting with a deadline, ports
(from ``nova_rpc_zmq.testing``, shared with the demo and the benchmarks),
and closing TCP sockets so the peer sees the end."""

from __future__ import annotations

import socket

from nova_rpc_zmq.testing import TIMEOUT_SCALE, free_port, scaled, wait_for

__all__ = ["TIMEOUT_SCALE", "free_port", "hang_up", "scaled", "wait_for"]


def hang_up(*socks: socket.socket) -> None:
    """Shut down and close each TCP socket, so its peer sees the end at
    once; sockets already gone are ignored."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
