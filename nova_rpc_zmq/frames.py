"""Multipart send and receive at the cost of the libzmq calls.

pyzmq's ``send_multipart`` and ``recv_multipart`` check every part's type,
combine enum flags and go through two Python layers per part; on the hot
paths (the receiver's loop, consumers, replies) that cost more than the
routing itself. These call pyzmq's compiled socket methods directly with
integer flags. They take any pyzmq socket (plain, or one of our lean green
ones: the compiled methods never block a green hub when called with
``NOBLOCK``; a blocking call here blocks the thread, so green code passes
``NOBLOCK`` and waits in the hub itself).

Parts are ``bytes`` (or ``Frame`` / buffers) and come back as ``bytes``.
A message is sent and delivered whole: when the first part of a
non-blocking send raises ``zmq.Again``, nothing was queued.
"""

from __future__ import annotations

from typing import Any, Sequence

import zmq
from zmq.backend import Socket as _Compiled

NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
RCVMORE = int(zmq.RCVMORE)

_send = _Compiled.send
_recv = _Compiled.recv
_get = _Compiled.get


def send(sock: Any, parts: Sequence[Any], flags: int = 0) -> None:
    """Send ``parts`` as one message (``flags``: 0 or NOBLOCK)."""
    last = len(parts) - 1
    more = flags | SNDMORE
    for i in range(last):
        _send(sock, parts[i], more)
    _send(sock, parts[last], flags)


def recv(sock: Any, flags: int = 0) -> list[bytes]:
    """Receive one whole message as a list of bytes (``flags``: 0 or
    NOBLOCK; raises ``zmq.Again`` when NOBLOCK finds nothing)."""
    parts = [_recv(sock, flags)]
    while _get(sock, RCVMORE):
        parts.append(_recv(sock, flags))
    return parts


def recv_first(sock: Any, flags: int = 0) -> Any:
    """The first part of the next message as a ``zmq.Frame`` (which knows
    the sender's address: ``frame.get("Peer-Address")``); then
    ``recv_rest``. Raises ``zmq.Again`` when NOBLOCK finds nothing."""
    return _recv(sock, flags, False)


def recv_rest(sock: Any, parts: list, max_parts: int) -> bool:
    """Append the rest of the message to ``parts``, keeping at most
    ``max_parts`` in all; returns True when parts were discarded."""
    while _get(sock, RCVMORE):
        if len(parts) >= max_parts:
            while _get(sock, RCVMORE):
                _recv(sock, NOBLOCK)
            return True
        parts.append(_recv(sock, NOBLOCK))
    return False
