"""The driver's ZeroMQ I/O: contexts, sockets, receiving whole messages.

Every ZeroMQ context and socket of the package is made here, so that the
options a socket carries (linger, high-water marks, timeouts, size limit)
are set in one place and read in one call::

    ctx = zmqio.context(handler, io_threads=1)
    sock = zmqio.make_socket(ctx, zmq.PUSH, linger=0, sndhwm=1000)
    frames = zmqio.recv(handler, sock)

``context(handler)`` gives sockets that block the way ``handler``'s threads
need (green sockets that wait in the eventlet hub for a green handler,
plain sockets for native threads); constants and exceptions are plain
``zmq``'s in both cases.
"""

from __future__ import annotations

from typing import Any

import zmq

from nova_rpc_zmq import concurrency


def context(handler: concurrency.Handler, io_threads: int = 1,
            batch: bool = False) -> zmq.Context:
    """A ZeroMQ context for sockets used from ``handler``'s threads, with
    ``io_threads`` I/O threads (run under SCHED_BATCH when ``batch`` and
    the system allows it) and a socket cap below the open-files limit."""
    return handler.context(io_threads, batch)


def make_socket(ctx: Any, kind: int, *, linger: int | None = None,
                hwm: int | None = None, sndhwm: int | None = None,
                rcvhwm: int | None = None, rcvtimeo: int | None = None,
                sndtimeo: int | None = None, maxmsgsize: int | None = None,
                immediate: bool | None = None,
                subscribe: bytes | None = None,
                options: dict[int, Any] | None = None) -> Any:
    """A socket of ``kind`` (``zmq.PUSH``...) on ``ctx`` with the options
    given set before it binds or connects.

    ``hwm`` sets both high-water marks; ``sndhwm``/``rcvhwm`` override one
    side. Times are milliseconds, ``linger=0`` drops unsent messages at
    close. ``subscribe`` (SUB sockets) subscribes to that prefix.
    ``options`` sets any other option by its ``zmq`` constant. On an error
    the socket is closed and the ``zmq.ZMQError`` raised.
    """
    sock = ctx.socket(kind)
    try:
        if linger is not None:
            sock.setsockopt(zmq.LINGER, int(linger))
        if hwm is not None:
            sock.setsockopt(zmq.SNDHWM, int(hwm))
            sock.setsockopt(zmq.RCVHWM, int(hwm))
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, int(sndhwm))
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, int(rcvhwm))
        if rcvtimeo is not None:
            sock.setsockopt(zmq.RCVTIMEO, int(rcvtimeo))
        if sndtimeo is not None:
            sock.setsockopt(zmq.SNDTIMEO, int(sndtimeo))
        if maxmsgsize is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, int(maxmsgsize))
        if immediate is not None:
            sock.setsockopt(zmq.IMMEDIATE, 1 if immediate else 0)
        for option, value in (options or {}).items():
            sock.setsockopt(option, value)
        if subscribe is not None:
            sock.setsockopt(zmq.SUBSCRIBE, subscribe)
    except BaseException:
        sock.close(0)
        raise
    return sock


def recv(handler: concurrency.Handler, sock: Any) -> list:
    """The next whole message on ``sock`` (a socket of ``context(handler)``)
    as a list of bytes; raises ``zmq.Again`` at the socket's RCVTIMEO."""
    return handler.recv(sock)
