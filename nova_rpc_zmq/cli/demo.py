"""``nova-rpc-zmq demo``: the whole transport on localhost, in a minute.

Starts a receiver and two sample services (one green, one threaded) with
embedded defaults (a temporary IPC directory, a free port, the localhost
matchmaker), then runs a call, a multicall, casts, a fanout, a remote
error and a timeout, and prints what happened with timings.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the all-in-one demo on localhost")
    p.add_argument("--calls", type=int, default=200,
                   help="calls to time for the latency line (default 200)")
    p.set_defaults(run=run)


def _timed(label: str, fn: Callable[[], Any], out: list[str]) -> Any:
    t0 = time.perf_counter()
    value = fn()
    ms = (time.perf_counter() - t0) * 1000
    out.append("  %-44s %9.2f ms   %s" % (label, ms, _short(value)))
    print(out[-1], flush=True)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run(args: argparse.Namespace) -> int:
    from nova_rpc_zmq import rpc
    from nova_rpc_zmq.testing import LocalHost
    from nova_rpc_zmq.errors import Timeout

    host = LocalHost(host="localhost")
    lines: list[str] = []
    print("nova-rpc-zmq demo: all-in-one on localhost")
    print("  ipc dir %s, receiver on tcp://127.0.0.1:%d" % (host.ipc_dir, host.port))
    try:
        t0 = time.perf_counter()
        host.start_receiver()
        host.start_service("green", eventlet=True)
        host.start_service("threads", eventlet=False)
        print("  receiver and 2 services up in %.2f s"
              % (time.perf_counter() - t0))
        rpc.init(host.settings())
        ctx = {"user_id": "demo", "project_id": "demo"}
        msg = lambda m, **a: {"method": m, "args": a}  # noqa: E731

        print("\nrequests:")
        _timed("call echo (first call of this process)",
               lambda: rpc.call(ctx, "demo", msg("echo", value="hello")), lines)
        who = {_timed("call whoami (round robin, #%d)" % i,
                      lambda: rpc.call(ctx, "demo", msg("whoami"))["name"], lines)
               for i in (1, 2)}
        _timed("multicall count n=5 (generator, streamed)",
               lambda: list(rpc.multicall(ctx, "demo", msg("count", n=5))), lines)
        _timed("multicall stream n=3 (context.reply)",
               lambda: list(rpc.multicall(ctx, "demo", msg("stream", n=3))), lines)

        def remote_error() -> str:
            try:
                rpc.call(ctx, "demo", msg("fail", message="bad input"))
            except ValueError as exc:
                return "ValueError raised here: %s" % str(exc).splitlines()[0]
            return "no error?"
        _timed("call fail (remote ValueError)", remote_error, lines)

        def timeout() -> str:
            try:
                rpc.call(ctx, "demo", msg("slow", seconds=2), timeout=0.5)
            except Timeout:
                return "Timeout after 0.5 s"
            return "no timeout?"
        _timed("call slow with timeout=0.5", timeout, lines)

        def casts() -> str:
            for i in range(100):
                rpc.cast(ctx, "demo_green", msg("record", value=i))
            deadline = time.monotonic() + 10
            got = 0
            while time.monotonic() < deadline:
                got = rpc.call(ctx, "demo_green", msg("stats"))["record"]
                if got >= 100:
                    break
            return "%d of 100 delivered" % got
        _timed("100 casts to demo_green, until delivered", casts, lines)

        def fanout() -> dict[str, int]:
            rpc.fanout_cast(ctx, "demo", msg("announce", value="to all"))
            deadline = time.monotonic() + 10
            counts: dict[str, int] = {}
            while time.monotonic() < deadline:
                counts = {n: rpc.call(ctx, "demo_" + n, msg("stats"))["fanout"]
                          for n in ("green", "threads")}
                if all(counts.values()):
                    break
            return counts
        _timed("fanout_cast announce, until both got it", fanout, lines)

        n = max(1, args.calls)
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            rpc.call(ctx, "demo", msg("echo", value=1))
            lat.append((time.perf_counter() - t) * 1e6)
        lat.sort()
        print("\n%d calls: p50 %.0f µs, p99 %.0f µs, %.0f calls/s with one caller"
              % (n, lat[n // 2], lat[min(n - 1, int(n * 0.99))],
                 n / (sum(lat) / 1e6)))
        # a service whose local socket is still connecting when a call
        # comes is skipped for that call (the other takes it): on a busy
        # machine the two calls above may reach one; a few more show both
        end = time.monotonic() + 5.0
        for _ in range(50):
            if len(who) > 1 or time.monotonic() > end:
                break
            who.add(rpc.call(ctx, "demo", msg("whoami"))["name"])
            time.sleep(0.05)
        print("round robin reached: %s" % ", ".join(sorted(who)))
        print("\ndemo finished: every step above ran over real sockets "
              "and processes.")
        return 0
    finally:
        rpc.cleanup()
        host.stop()
