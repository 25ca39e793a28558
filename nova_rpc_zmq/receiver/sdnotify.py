"""systemd's readiness protocol (``sd_notify``) without libsystemd.

Under ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` to an ``AF_UNIX``
datagram socket (a path, or an abstract name when it starts with ``@``)
and waits for a ``READY=1`` datagram before it counts the unit started;
``STOPPING=1`` says a stop began, ``RELOADING=1`` then ``READY=1`` frame a
reload. One datagram of ``KEY=VALUE`` lines per call, no reply.

Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
A failed send is logged and otherwise ignored: readiness reporting must
never stop the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
import time

LOG = logging.getLogger(__name__)


def notify(state: str, environ: "os._Environ[str] | dict[str, str] | None" = None
           ) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, several lines allowed) to
    ``$NOTIFY_SOCKET``; returns True when a datagram went out.

    Never raises; does not block (a datagram to a local socket).
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        # Linux abstract namespace: a leading NUL instead of the '@'
        target: str | bytes = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        LOG.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract "
                    "socket (@name); not telling systemd %s", address, state)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            sock.sendto(state.encode("utf-8"), target)
    except OSError as exc:
        LOG.warning("could not tell systemd %s over NOTIFY_SOCKET %s: %s",
                    state.replace("\n", " "), address, exc)
        return False
    return True


def ready(status: str = "") -> bool:
    """The daemon serves now (systemd's start job completes)."""
    return notify("READY=1" + ("\nSTATUS=" + status if status else ""))


def stopping(status: str = "") -> bool:
    """A stop began (systemd shows the unit as deactivating)."""
    return notify("STOPPING=1" + ("\nSTATUS=" + status if status else ""))


def reloading() -> bool:
    """A reload began; call ``ready()`` when it is done.

    ``MONOTONIC_USEC`` is what ``Type=notify-reload`` (systemd 253) wants
    with it; older versions ignore the extra line.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1\nMONOTONIC_USEC=%d" % usec)
