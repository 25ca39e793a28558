"""Where an oslo.messaging call over this driver spends its time.

    python -m benchmarks.oslo_split [--calls 10000] [--pools 64,4]
                                    [--window 5] [--json FILE]

On one host (127.0.0.1), as the ``oslo-zmq`` rows of the bench, with an
oslo.messaging RPC server (threading executor) in a child process and an
``RPCClient`` in this one:

1. **One call at a time, split.** Both processes put time stamps around
   this driver's methods (wrappers installed at start; the driver's code
   is not changed) and the segments of each call are joined by call id.
   CLOCK_MONOTONIC is one clock for every process of a host. The
   segments, in the order a call takes them:

   - ``client oslo.messaging``: ``RPCClient.call`` outside the driver's
     ``send`` (target, serializer, the call context);
   - ``client encode+send``: ``send`` until the request is queued in
     libzmq;
   - ``to the server``: libzmq, TCP and the wake-up of the server's reader;
   - ``server decode``: until the message goes to oslo.messaging's
     callback;
   - ``server oslo.messaging``: the callback hands the message to the
     executor, a worker wakes and oslo.messaging dispatches it, until it
     calls the message's ``reply``;
   - ``server reply``: encoding and queueing the reply;
   - ``to the caller``: libzmq, TCP and the waiting caller's wake-up;
   - ``client decode+return``: from the reply's arrival until ``send``
     returns.

   Next to them, in the same run, raw pyzmq's round trip between the same
   addresses (a DEALER in this process, a ROUTER in a child that echoes
   the frames of the same call: ``benchmarks.rawzmq``). The stamps cost
   about a microsecond each, so the call is a little slower here than in
   the bench.

2. **16 callers, by executor size.** For each ``executor_thread_pool_size``
   of ``--pools`` (oslo.messaging's option; 64 is its default), a fresh
   server and 16 threads calling for ``--window`` seconds: calls/s, p50,
   CPU per call of the client and of the server, against raw pyzmq's 16
   in flight.

Nothing here is a target: it shows which part of a call is this driver's
and which is oslo.messaging's own (``benchmarks/README.md``, "Where an
oslo.messaging call's time goes").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from benchmarks.measure import CpuMeter, Window, concurrent_calls, median

TOPIC = "oslosplit"
SERVER = "s0"
SMALL = {"instance_uuid": "3f0c8f3e-7d6f-4a51-9c7b-0d3b2a1c9e55",
         "host": "compute-017"}
#: Seconds the server may take to print READY, and a call to be answered
#: while it comes up.
START_TIMEOUT = 60.0
REGISTRY_ENV = "NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR"
#: The segments of a call, in the order it takes them.
SEGMENTS = ("client oslo.messaging", "client encode+send", "to the server",
            "server decode", "server oslo.messaging", "server reply",
            "to the caller", "client decode+return")
#: Which side's work each segment is: ours (this driver's Python), oslo
#: (oslo.messaging's), transit (libzmq, TCP and wake-ups).
OWNER = {"client oslo.messaging": "oslo", "client encode+send": "driver",
         "to the server": "transit", "server decode": "driver",
         "server oslo.messaging": "oslo", "server reply": "driver",
         "to the caller": "transit", "client decode+return": "driver"}


# -- time stamps ----------------------------------------------------------

def _wrap(cls: Any, name: str, make: Callable[[Callable], Callable],
          undo: list | None = None) -> None:
    orig = cls.__dict__[name]
    setattr(cls, name, make(orig))
    if undo is not None:
        undo.append((cls, name, orig))


class ClientStamps:
    """``calls``: call id -> [send entry, request queued, reply read, send
    exit], filled as calls end; ``last``: the id of the last call that
    ended stamped (None before). ``remove()`` takes the wrappers away."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self.last: str | None = None
        self.undo: list = []

    def remove(self) -> None:
        while self.undo:
            cls, name, orig = self.undo.pop()
            setattr(cls, name, orig)


def install_client_stamps() -> ClientStamps:
    """Stamp this process's calls (see ``ClientStamps``)."""
    from nova_rpc_zmq.oslo_driver import driver, replies
    clock = time.monotonic
    local = threading.local()
    stamps = ClientStamps()
    arrived: dict[str, float] = {}

    def send(orig: Callable) -> Callable:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            local.msg_id = None
            start = clock()
            result = orig(self, *args, **kwargs)
            msg_id = local.msg_id
            if msg_id is not None and msg_id in arrived:
                stamps.calls[msg_id] = [start, local.queued,
                                        arrived.pop(msg_id), clock()]
                stamps.last = msg_id
            return result
        return wrapper

    def deliver(orig: Callable) -> Callable:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = orig(self, *args, **kwargs)
            local.queued = clock()
            return result
        return wrapper

    def expect(orig: Callable) -> Callable:
        def wrapper(self: Any, msg_id: str) -> Any:
            local.msg_id = msg_id
            return orig(self, msg_id)
        return wrapper

    def parse(orig: Callable) -> Callable:
        def wrapper(self: Any, parts: list) -> Any:
            now = clock()
            got = orig(self, parts)
            if got is not None:
                arrived[got[0].msg_id] = now
            return got
        return wrapper

    for cls, name, make in ((driver.ZmqDriver, "send", send),
                            (driver.ZmqDriver, "_deliver", deliver),
                            (replies.ReplyWaiter, "expect", expect),
                            (replies.ReplyWaiter, "_parse", parse)):
        _wrap(cls, name, make, stamps.undo)
    return stamps


def install_server_stamps() -> dict[str, list[float]]:
    """Stamp this process's requests; returns ``{call id: [read, handed
    to oslo.messaging, reply called, reply queued]}``."""
    from nova_rpc_zmq.oslo_driver import listener
    clock = time.monotonic
    local = threading.local()
    calls: dict[str, list[float]] = {}

    def on_frames(orig: Callable) -> Callable:
        def wrapper(self: Any, parts: list) -> None:
            local.read = clock()
            orig(self, parts)
        return wrapper

    def start_direct(orig: Callable) -> Callable:
        def wrapper(self: Any, callback: Any) -> None:
            def stamped(messages: list) -> Any:
                calls[messages[0].msg_id] = [getattr(local, "read", 0.0),
                                             clock()]
                return callback(messages)
            orig(self, stamped)
        return wrapper

    def reply(orig: Callable) -> Callable:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            entry = calls.get(self.msg_id)
            if entry is not None:
                entry.append(clock())
            orig(self, *args, **kwargs)
            if entry is not None:
                entry.append(clock())
        return wrapper

    _wrap(listener.QueueListener, "_on_frames", on_frames)
    _wrap(listener.QueueListener, "start_direct", start_direct)
    _wrap(listener.RpcMessage, "reply", reply)
    return calls


def split(client: dict[str, list[float]], server: dict[str, list[float]],
          totals: dict[str, float]) -> dict[str, list[float]]:
    """µs per segment for every call both sides stamped (``totals``: call
    id -> the ``RPCClient.call`` wall time in seconds)."""
    out: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for msg_id, (start, queued, arrived, end) in client.items():
        stamps = server.get(msg_id)
        total = totals.get(msg_id)
        if stamps is None or len(stamps) < 4 or total is None \
                or not stamps[0]:
            continue
        read, handed, replying, replied = stamps[:4]
        values = (total - (end - start), queued - start, read - queued,
                  handed - read, replying - handed, replied - replying,
                  arrived - replied, end - arrived)
        for name, value in zip(SEGMENTS, values):
            out[name].append(value * 1e6)
    return out


# -- processes ------------------------------------------------------------

def _start(args: list[str], env: dict[str, str], log: str) -> Any:
    """``python -m <args>`` as a ``Proc`` once it printed READY."""
    from nova_rpc_zmq.testing import Proc
    proc = Proc(args[0], [sys.executable, "-m"] + args, log, env=env)
    try:
        proc.wait_for_line("READY", START_TIMEOUT)
    except BaseException:
        proc.kill()
        raise
    return proc


def _client() -> tuple[Any, Any]:
    import oslo_messaging

    from benchmarks.rabbit import _transport
    transport = _transport("zmq://127.0.0.1")
    client = oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=TOPIC, version="1.0"),
        timeout=10).prepare(server=SERVER)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            client.prepare(timeout=2).call({}, "echo", value=SMALL)
            return transport, client
        except oslo_messaging.MessagingTimeout:
            if time.monotonic() > deadline:
                transport.cleanup()
                raise RuntimeError("the server did not answer within %.0fs"
                                   % START_TIMEOUT)


def _raw(tmp: str, env: dict[str, str]) -> Any:
    """A raw pyzmq peer on 127.0.0.1 and our client of it."""
    from benchmarks.rawzmq import RawClient
    from nova_rpc_zmq.testing import free_port
    eps = ["tcp://127.0.0.1:%d" % free_port() for _ in range(3)]
    peer = _start(["benchmarks.rawzmq", "peer", "--flavor", "plain",
                   "--echo", eps[0], "--sink", eps[1], "--control", eps[2]],
                  env, os.path.join(tmp, "rawzmq.log"))
    return peer, RawClient("plain", *eps)


def _value(figures: list[dict], metric: str) -> float:
    for fig in figures:
        if fig["metric"] == metric:
            return float(fig["value"])
    raise KeyError(metric)


def run(calls: int, pools: list[int], window: float) -> dict:
    """Both measures; returns the figures (see ``report``)."""
    tmp = tempfile.mkdtemp(prefix="oslo-split-")
    from nova_rpc_zmq.testing import child_env
    registry = os.path.join(tmp, "registry")
    os.makedirs(registry, mode=0o700)
    os.environ[REGISTRY_ENV] = registry
    env = child_env()
    out: dict[str, Any] = {"calls": calls, "window": window}
    stamps_file = os.path.join(tmp, "server-stamps.json")
    client_stamps = install_client_stamps()
    server = _start(["benchmarks.oslo_split", "server", "--stamps",
                     stamps_file], env, os.path.join(tmp, "server.log"))
    try:
        transport, client = _client()
        try:
            for _ in range(500):
                client.call({}, "echo", value=SMALL)
            client_stamps.calls.clear()
            totals: dict[str, float] = {}
            clock = time.monotonic
            walls = []
            for _ in range(calls):
                client_stamps.last = None
                start = clock()
                client.call({}, "echo", value=SMALL)
                wall = clock() - start
                walls.append(wall * 1e6)
                if client_stamps.last is not None:
                    totals[client_stamps.last] = wall
        finally:
            transport.cleanup()
    finally:
        client_stamps.remove()
        server.stop(timeout=30)
    with open(stamps_file) as f:
        server_stamps = json.load(f)
    segments = split(client_stamps.calls, server_stamps, totals)
    out["call_p50_us"] = median(walls)
    out["joined"] = len(segments[SEGMENTS[0]])
    out["segments_p50_us"] = {name: statistics.median(values) if values
                              else None for name, values in segments.items()}
    peer, raw = _raw(tmp, env)
    try:
        out["raw_rt_p50_us"] = _value(raw.round_trip(window, 10 ** 6), "p50")
        out["raw_16_per_s"] = _value(raw.in_flight(16, window, 10 ** 7),
                                     "rate")
    finally:
        raw.close()
        peer.stop(timeout=30)
    out["pools"] = [_sixteen(pool, window, tmp, env) for pool in pools]
    return out


def _sixteen(pool: int, window: float, tmp: str, env: dict[str, str]) -> dict:
    conf = os.path.join(tmp, "pool-%d.conf" % pool)
    with open(conf, "w") as f:
        f.write("[DEFAULT]\nexecutor_thread_pool_size = %d\n" % pool)
    server = _start(["benchmarks.rabbit", "server", "--url",
                     "zmq://127.0.0.1", "--topic", TOPIC, "--name", SERVER,
                     "--config-file", conf], env,
                    os.path.join(tmp, "server-pool-%d.log" % pool))
    try:
        transport, client = _client()
        try:
            concurrent_calls(16, Window(0.5, 10 ** 6), lambda: client.call(
                {}, "echo", value=SMALL), 60)
            meter = CpuMeter({"server": server.pid})
            samples, elapsed = concurrent_calls(
                16, Window(window, 10 ** 7),
                lambda: client.call({}, "echo", value=SMALL), window + 60)
            cpu = meter.per_op(len(samples))
        finally:
            transport.cleanup()
    finally:
        server.stop(timeout=30)
    return {"executor_thread_pool_size": pool,
            "calls_per_s": len(samples) / elapsed,
            "p50_us": median(samples), "cpu_client_us": cpu["cpu_caller"],
            "cpu_server_us": cpu["cpu_server"]}


def report(out: dict) -> str:
    """The figures as text."""
    lines = ["one call at a time: p50 %.1f us (%d calls, %d joined); raw "
             "pyzmq round trip p50 %.1f us (call = %.2fx raw)"
             % (out["call_p50_us"], out["calls"], out["joined"],
                out["raw_rt_p50_us"],
                out["call_p50_us"] / out["raw_rt_p50_us"])]
    by_owner: dict[str, float] = {}
    for name in SEGMENTS:
        value = out["segments_p50_us"][name]
        if value is None:
            continue
        by_owner[OWNER[name]] = by_owner.get(OWNER[name], 0.0) + value
        lines.append("  %-24s %7.1f us  (%s)" % (name, value, OWNER[name]))
    lines.append("  medians by owner: " + ", ".join(
        "%s %.1f us" % item for item in sorted(by_owner.items())))
    lines.append("16 callers (raw pyzmq 16 in flight: %.0f/s):"
                 % out["raw_16_per_s"])
    for row in out["pools"]:
        lines.append("  executor_thread_pool_size %3d: %7.0f calls/s = "
                     "%.2fx raw, p50 %.0f us, CPU per call client %.1f us, "
                     "server %.1f us"
                     % (row["executor_thread_pool_size"], row["calls_per_s"],
                        row["calls_per_s"] / out["raw_16_per_s"],
                        row["p50_us"], row["cpu_client_us"],
                        row["cpu_server_us"]))
    return "\n".join(lines)


def server_main(stamps_file: str) -> int:
    """The bench's oslo.messaging server, stamped; writes the stamps to
    ``stamps_file`` when SIGTERM ends it."""
    from benchmarks.rabbit import server
    stamps = install_server_stamps()
    rc = server("zmq://127.0.0.1", TOPIC, SERVER)
    with open(stamps_file, "w") as f:
        json.dump(stamps, f)
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.oslo_split")
    sub = parser.add_subparsers(dest="role")
    s = sub.add_parser("server")
    s.add_argument("--stamps", required=True)
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--pools", default="64,4",
                        help="executor_thread_pool_size values for the "
                        "16-caller run, comma separated (default 64,4)")
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.role == "server":
        return server_main(args.stamps)
    try:
        pools = [int(p) for p in args.pools.split(",") if p.strip()]
    except ValueError:
        parser.error("--pools: comma-separated integers, got %r" % args.pools)
    if any(p < 1 for p in pools) or args.calls < 1 or args.window <= 0:
        parser.error("--calls and --pools must be at least 1, --window "
                     "above 0")
    out = run(args.calls, pools, args.window)
    print(report(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
