"""Small shared test tools: timeout scaling, waiting with a deadline, ports."""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable

#: One environment factor scales every timeout in the tests (slow machines).
TIMEOUT_SCALE = float(os.environ.get("NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """``seconds`` multiplied by NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0,
             interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a true value or the (scaled)
    deadline passes; returns the value or raises AssertionError."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (scaled(timeout), what))
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def hang_up(*socks: socket.socket) -> None:
    """Shut down and close each TCP socket, so its peer sees the end at
    once; sockets already gone are ignored."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
