"""Giving freed heap memory back to the system.

A receiver holds messages for consumers that fall behind (in libzmq's
queues, then in its own backlog). When they drain, glibc keeps most of the
freed pages in its heaps, because blocks still in use sit between them:
without help the process would keep its peak RSS for good (a 24 MiB
backlog left the receiver 28 MiB larger after the consumer took it all).
``release`` asks glibc to give back every whole free page of every arena
(``malloc_trim(0)``), which costs microseconds when there is none; the
receiver's loop calls it every ``RELEASE_EVERY`` seconds. Where the C
library has no ``malloc_trim`` it does nothing.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

#: Seconds between two releases in the receiver's loop.
RELEASE_EVERY = 10.0

_TRIM: list[Callable[[int], int] | None] = []


def release() -> bool:
    """Give the heaps' whole free pages back to the system; True when
    some were."""
    if not _TRIM:
        _TRIM.append(_malloc_trim())
    trim = _TRIM[0]
    return bool(trim(0)) if trim is not None else False


def _malloc_trim() -> Any:
    try:
        # the process's own symbols: glibc's when it is the C library
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim
