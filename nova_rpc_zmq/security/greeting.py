"""Ask a ZeroMQ endpoint which security mechanism it speaks.

A CURVE sender that connects to a receiver without CURVE cannot always
tell from its own monitor events: the two ZMTP greetings cross, and when
the receiver reads ours first it hangs up, so the sender sees only
HANDSHAKE_FAILED_NO_DETAIL (EPIPE), the same event as a wrong server key.
Which side wins is a race whose odds depend on the machine; on a loaded
one the receiver can win every retry.

``probe_mechanism`` settles it.  It opens a plain TCP (or IPC) connection
and reads the peer's ZMTP 3 greeting (RFC 23, 64 bytes)::

    signature  ff, 8 padding bytes, 7f    10 bytes
    version    major, minor                2 bytes
    mechanism  name, NUL-padded           20 bytes
    as-server  0 or 1                      1 byte
    filler     zeros                      31 bytes

libzmq sends the signature at once and the rest only after it has read
ours and our major version, so we send those 11 bytes and nothing more,
then hang up: the peer counts a handshake aborted (no warning there).
Non-blocking sockets and ``handler.sleep`` keep a green hub running; the
wait is bounded by ``timeout``.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from typing import Any

_SIGNATURE = b"\xff" + b"\x00" * 7 + b"\x01\x7f"  # as libzmq pads
_HELLO = _SIGNATURE + b"\x03"
_GREETING_SIZE = 64
_MECHANISM = slice(12, 32)
_STEP = 0.005


def _address(endpoint: str) -> tuple[int, Any] | None:
    """``(family, address)`` for a ``tcp://`` or ``ipc://`` endpoint."""
    if endpoint.startswith("ipc://"):
        return socket.AF_UNIX, endpoint[len("ipc://"):]
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    if not port.isdigit() or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


def probe_mechanism(endpoint: str, sleep: Any = time.sleep,
                    timeout: float = 1.0) -> str | None:
    """The mechanism (``"NULL"``, ``"PLAIN"``, ``"CURVE"``, ...) that the
    ZeroMQ socket at ``endpoint`` greets with, or None when it cannot be
    learnt within ``timeout`` seconds (refused, silent, not ZMTP 3).

    ``sleep`` is the wait between polls: ``handler.sleep`` in a green
    thread."""
    found = _address(endpoint)
    if found is None:
        return None
    family, address = found
    deadline = time.monotonic() + timeout
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            return None
        if not _wait(sock, writable=True, deadline=deadline, sleep=sleep):
            return None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return None
        sock.sendall(_HELLO)
        data = b""
        while len(data) < _GREETING_SIZE:
            if not _wait(sock, writable=False, deadline=deadline,
                         sleep=sleep):
                return None
            chunk = sock.recv(_GREETING_SIZE - len(data))
            if not chunk:
                return None
            data += chunk
            if data[0] != 0xff or (len(data) > 9 and data[9] != 0x7f):
                return None  # not ZeroMQ
        if data[10] < 3:
            return None  # ZMTP 1 or 2 carry no mechanism
        name = data[_MECHANISM].rstrip(b"\x00")
        return name.decode("ascii", "replace") or None
    except OSError:
        return None
    finally:
        sock.close()


def _wait(sock: socket.socket, writable: bool, deadline: float,
          sleep: Any) -> bool:
    """True once ``sock`` is readable (or writable), False at ``deadline``."""
    while True:
        ready = select.select([] if writable else [sock],
                              [sock] if writable else [], [], 0)
        if ready[0] or ready[1]:
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(_STEP)
