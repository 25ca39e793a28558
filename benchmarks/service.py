"""The bench service: a real service process with methods made to measure.

    python -m benchmarks.service --config-file nova.conf --name s1 \
        --topic bench [--eventlet]

Consumes ``<topic>`` (shared), ``<topic>_<name>`` (this instance only) and
the fanout of ``<topic>``, like ``nova_rpc_zmq.cli.demo_service``; prints
``READY <name> <pid>`` once consuming; stops on SIGTERM.

Methods:
    echo(value)          returns ``value`` (the payload sweep sends its bytes)
    tally(run)           a cast or fanout: counts it under ``run`` with the
                         CLOCK_MONOTONIC time of the first and the last one
    tally_stats(run)     {"count", "first", "last"} of ``run``
    stream(n)            a generator of ``n`` values (multicall streaming)
    hold(until)          sleeps until CLOCK_MONOTONIC ``until`` (at most
                         HOLD_MAX s from now), so calls stay in flight
Time stamps use ``time.monotonic()``: on Linux one clock for every process
of the machine, so the caller can compare them with its own.
"""

from __future__ import annotations

import os
import sys

#: Longest a ``hold`` call may sleep, whatever it asks.
HOLD_MAX = 120.0


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM; returns the exit status."""
    from nova_rpc_zmq.cli.demo_service import serve, start

    args = start(argv, "benchmarks.service", "bench")
    import threading
    import time

    tallies: dict[str, list[float]] = {}
    lock = threading.Lock()

    class BenchAPI:
        RPC_API_VERSION = "1.0"

        def echo(self, context, value=None):
            return value

        def tally(self, context, run="", i=None):
            now = time.monotonic()
            with lock:
                entry = tallies.get(run)
                if entry is None:
                    tallies[run] = [1, now, now]
                else:
                    entry[0] += 1
                    entry[2] = now

        def tally_stats(self, context, run=""):
            with lock:
                entry = tallies.get(run)
            if entry is None:
                return {"count": 0, "first": None, "last": None}
            return {"count": int(entry[0]), "first": entry[1], "last": entry[2]}

        def stream(self, context, n=10):
            for i in range(int(n)):
                yield i

        def hold(self, context, until=0.0):
            left = min(float(until) - time.monotonic(), HOLD_MAX)
            if left > 0:
                time.sleep(left)
            return os.getpid()

    return serve(args, BenchAPI())


if __name__ == "__main__":
    sys.exit(main())
