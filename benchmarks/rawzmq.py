"""Raw pyzmq baselines: what the sockets alone do on this machine.

    python -m benchmarks.rawzmq peer --flavor plain|green --echo EP \
        --sink EP --control EP
    python -m benchmarks.rawzmq client --plan plan.json --out result.json

The peer is a separate process, as our services are: a ROUTER that echoes
every message (round trips from a DEALER), a PULL that counts what it gets
(one-way from a PUSH) with the CLOCK_MONOTONIC time of the first and last,
and a REP for control (``reset`` / ``stats``).  The ``green`` flavor runs
both sides monkey-patched with ``eventlet.green.zmq`` and green threads.

The messages are the frames of the same call in the wire's form (made with
``nova_rpc_zmq.wire``: four parts, 374 bytes for the small call), as the
receivers' route carries it. Between two of our nodes the direct path now
sends one part instead (267 bytes, ``wire.encode_direct_call``); raw
pyzmq moves one part faster than four (benchmarks/README.md, "Two hosts:
the call and the reply alone on the direct path"), so against one-part
messages the raw baseline would be higher than the one the targets use.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

FLAVORS = ("plain", "green")


def call_frames(size: int | None = None) -> list[bytes]:
    """The frames of an ``echo`` call as our caller sends them; the
    argument is the small dict of the workloads, or ``size`` bytes."""
    from nova_rpc_zmq import wire

    from benchmarks.workloads import CTX, SMALL
    value: Any = SMALL if size is None else "x" * size
    body = wire.call_request("0123456789abcdef0000000000000001",
                             "zmq_replies.localhost", CTX,
                             {"method": "echo", "args": {"value": value}})
    return wire.encode(b"stream.0123456789abcdef", "bench_s1.localhost", CTX,
                       body)


def _zmq(flavor: str) -> Any:
    if flavor == "green":
        import eventlet
        eventlet.monkey_patch()
        from eventlet.green import zmq
        return zmq
    import zmq
    return zmq


# -- the peer -------------------------------------------------------------

def peer(flavor: str, echo: str, sink: str, control: str) -> int:
    """Serve echo, sink and control until SIGTERM or ``stop`` on control."""
    zmq = _zmq(flavor)
    import signal
    import threading
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    pull = ctx.socket(zmq.PULL)
    rep = ctx.socket(zmq.REP)
    for sock, ep in ((router, echo), (pull, sink), (rep, control)):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 200)
        sock.bind(ep)
    tally: dict[str, Any] = {"count": 0, "first": None, "last": None}
    stop = threading.Event()

    def echo_loop() -> None:
        while not stop.is_set():
            try:
                router.send_multipart(router.recv_multipart())
            except zmq.Again:
                continue

    def sink_loop() -> None:
        clock = time.monotonic
        while not stop.is_set():
            try:
                pull.recv_multipart()
            except zmq.Again:
                continue
            now = clock()
            if tally["count"] == 0:
                tally["first"] = now
            tally["count"] += 1
            tally["last"] = now

    def control_loop() -> None:
        while not stop.is_set():
            try:
                cmd = rep.recv()
            except zmq.Again:
                continue
            if cmd == b"reset":
                tally.update(count=0, first=None, last=None)
            elif cmd == b"stop":
                stop.set()
            rep.send(json.dumps(tally).encode())

    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    threads = [threading.Thread(target=fn, daemon=True)
               for fn in (echo_loop, sink_loop, control_loop)]
    for t in threads:
        t.start()
    sys.stdout.write("READY rawzmq %s\n" % flavor)
    sys.stdout.flush()
    while not stop.is_set():
        stop.wait(0.2)
    for t in threads:
        t.join(2)
    for sock in (router, pull, rep):
        sock.close(0)
    ctx.term()
    return 0


# -- the client -----------------------------------------------------------

class RawClient:
    """The client side of the baselines, for one flavor (one process)."""

    def __init__(self, flavor: str, echo: str, sink: str, control: str) -> None:
        self.flavor = flavor
        self.zmq = _zmq(flavor)
        self.ctx = self.zmq.Context()
        self.echo = echo
        self.sink = sink
        self.control = control

    def _socket(self, kind: int, endpoint: str) -> Any:
        sock = self.ctx.socket(kind)
        sock.setsockopt(self.zmq.LINGER, 1000)
        sock.setsockopt(self.zmq.RCVTIMEO, 30000)
        sock.setsockopt(self.zmq.SNDTIMEO, 30000)
        sock.connect(endpoint)
        return sock

    def _control(self, cmd: bytes) -> dict:
        sock = self._socket(self.zmq.REQ, self.control)
        try:
            sock.send(cmd)
            return json.loads(sock.recv())
        finally:
            sock.close(0)

    def round_trip(self, window: float, count: int, size: int | None = None,
                   workload: str = "rt_1", warmup: int = 200) -> list[dict]:
        """One message in flight: p50/p99 µs and round trips/s."""
        from benchmarks.measure import PYZMQ, Window, latency_figures
        frames = call_frames(size)
        sock = self._socket(self.zmq.DEALER, self.echo)
        try:
            for _ in range(warmup if size is None else 5):
                sock.send_multipart(frames)
                sock.recv_multipart()
            samples: list[float] = []
            win = Window(window, count)
            clock = time.perf_counter
            while win.take():
                t = clock()
                sock.send_multipart(frames)
                sock.recv_multipart()
                samples.append((clock() - t) * 1e6)
        finally:
            sock.close(0)
        if size is None:
            return latency_figures(PYZMQ, self.flavor, workload, samples,
                                   win.elapsed)
        from benchmarks.measure import MIB, figure
        return latency_figures(PYZMQ, self.flavor, workload, samples,
                               win.elapsed, size=size) + [
            figure(PYZMQ, self.flavor, workload, "bandwidth",
                   2 * size * len(samples) / win.elapsed / MIB, "MiB/s",
                   size=size)]

    def in_flight(self, depth: int, window: float, count: int,
                  pids: dict[str, int] | None = None) -> list[dict]:
        """``depth`` messages kept in flight on one DEALER: round trips/s,
        and the CPU per round trip of this process and of ``pids``."""
        from benchmarks.measure import PYZMQ, CpuMeter, Window, figure
        frames = call_frames()
        sock = self._socket(self.zmq.DEALER, self.echo)
        try:
            for _ in range(100):
                sock.send_multipart(frames)
                sock.recv_multipart()
            cpu = CpuMeter(pids)
            win = Window(window, count)
            outstanding = 0
            while outstanding < depth and win.take():
                sock.send_multipart(frames)
                outstanding += 1
            done = 0
            while outstanding:
                sock.recv_multipart()
                outstanding -= 1
                done += 1
                if win.take():
                    sock.send_multipart(frames)
                    outstanding += 1
            elapsed = win.elapsed
        finally:
            sock.close(0)
        return [figure(PYZMQ, self.flavor, "rt_%d" % depth, "rate",
                       done / elapsed, "1/s", count=done, depth=depth)] + \
            cpu.figures(PYZMQ, self.flavor, "rt_%d" % depth, done)

    def one_way(self, window: float, count: int, drain_timeout: float = 30.0,
                pids: dict[str, int] | None = None) -> list[dict]:
        """PUSH to the peer's PULL: messages/s counted at the peer, and the
        CPU per message of this process and of ``pids``."""
        from benchmarks.measure import PYZMQ, CpuMeter, Window, figure
        frames = call_frames()
        self._control(b"reset")
        sock = self._socket(self.zmq.PUSH, self.sink)
        try:
            cpu = CpuMeter(pids)
            win = Window(window, count)
            sent = 0
            t0 = time.monotonic()
            while win.take():
                sock.send_multipart(frames)
                sent += 1
            deadline = time.monotonic() + drain_timeout
            stats = self._control(b"stats")
            while stats["count"] < sent and time.monotonic() < deadline:
                time.sleep(0.02)
                stats = self._control(b"stats")
        finally:
            sock.close(0)
        got = stats["count"]
        rate = got / (stats["last"] - t0) if got else 0.0
        return [figure(PYZMQ, self.flavor, "push", "rate", rate, "1/s",
                       sent=sent, delivered=got),
                figure(PYZMQ, self.flavor, "push", "lost", sent - got, "msgs",
                       "lower", sent=sent, delivered=got)] + \
            cpu.figures(PYZMQ, self.flavor, "push", sent)

    def close(self) -> None:
        self.ctx.term()


def client(plan_path: str, out_path: str) -> int:
    """Run the plan's workloads; results written as ``benchmarks.client``."""
    from benchmarks.client import run_plan
    with open(plan_path) as f:
        plan = json.load(f)
    raw = RawClient(plan["flavor"], plan["echo"], plan["sink"], plan["control"])
    try:
        run_plan(plan["workloads"], out_path, plan["flavor"],
                 lambda name, **params: getattr(raw, name)(**params),
                 shape=plan.get("shape"))
    finally:
        raw.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``peer`` or ``client``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="benchmarks.rawzmq")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("peer")
    p.add_argument("--flavor", choices=FLAVORS, default="plain")
    p.add_argument("--echo", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--control", required=True)
    c = sub.add_parser("client")
    c.add_argument("--plan", required=True)
    c.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.role == "peer":
        return peer(args.flavor, args.echo, args.sink, args.control)
    return client(args.plan, args.out)


if __name__ == "__main__":
    sys.exit(main())
