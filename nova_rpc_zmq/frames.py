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

import struct
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


#: ``recv_rest`` results: the whole message is in ``parts``; parts beyond
#: ``max_parts`` were discarded; the bytes passed ``max_bytes`` and the rest
#: of the message was discarded unread.
PARTS_OK = 0
PARTS_TOO_MANY = 1
PARTS_TOO_LARGE = 2


def recv_rest(sock: Any, parts: list, max_parts: int,
              max_bytes: int | None = None) -> int:
    """Append the rest of the message to ``parts``; returns a ``PARTS_*``.

    At most ``max_parts`` parts are kept. With ``max_bytes``, the size of
    every part (those already in ``parts`` too) is added up as they arrive:
    once the total passes it, the remaining parts are taken off the socket
    as ``zmq.Frame`` objects and released at once, never copied into
    Python (ZeroMQ's MAXMSGSIZE bounds one part only, so 64 parts of
    16 MiB would otherwise all be kept).
    """
    total = 0
    if max_bytes is not None:
        for part in parts:
            total += len(part)
    while _get(sock, RCVMORE):
        if len(parts) >= max_parts:
            _discard(sock)
            return PARTS_TOO_MANY
        part = _recv(sock, NOBLOCK)
        if max_bytes is not None:
            total += len(part)
            if total > max_bytes:
                del part
                _discard(sock)
                return PARTS_TOO_LARGE
        parts.append(part)
    return PARTS_OK


def _discard(sock: Any) -> None:
    """Take the remaining parts of the current message and drop them."""
    while _get(sock, RCVMORE):
        _recv(sock, NOBLOCK, False)


# -- one-part messages ----------------------------------------------------
#
# Every libzmq call releases the GIL, and with many threads waiting for it
# each release can hand it over: a message of n parts costs n hand-offs at
# each end. Between two of our own processes (the direct path) a small
# message travels as one part instead: ``PACKED_MARK``, the number of
# parts (one byte), each part's length (4 bytes, big-endian), then the
# parts. A message of our wire always has three parts or more, so one
# part on its own is never mistaken for one.

#: First bytes of a packed message.
PACKED_MARK = b"\x00nrz1"
#: Messages larger than this are sent as parts (packing copies them).
PACK_MAX = 65536
_MARK_LEN = len(PACKED_MARK)
_LENGTHS = {n: struct.Struct(">%dI" % n) for n in range(1, 9)}


def pack(parts: Sequence[bytes]) -> list[bytes]:
    """``parts`` as a one-part message, or unchanged when they are too
    many or too large to pack (the reader takes both)."""
    lengths = _LENGTHS.get(len(parts))
    if lengths is None:
        return list(parts)
    sizes = [len(part) for part in parts]
    if sum(sizes) > PACK_MAX:
        return list(parts)
    return [b"".join((PACKED_MARK, bytes((len(parts),)), lengths.pack(*sizes),
                      *parts))]


def unpack(parts: list) -> list:
    """The parts of a message read off a socket: a packed message's parts,
    or ``parts`` itself when it is not one. A packed message whose lengths
    do not add up comes back as it is, one part, which the wire decoder
    refuses (too few frames)."""
    if len(parts) != 1:
        return parts
    data = parts[0]
    if not data.startswith(PACKED_MARK) or len(data) <= _MARK_LEN:
        return parts
    lengths = _LENGTHS.get(data[_MARK_LEN])
    start = _MARK_LEN + 1
    if lengths is None or len(data) < start + lengths.size:
        return parts
    sizes = lengths.unpack_from(data, start)
    pos = start + lengths.size
    if pos + sum(sizes) != len(data):
        return parts
    out = []
    for size in sizes:
        out.append(data[pos:pos + size])
        pos += size
    return out
