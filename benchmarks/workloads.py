"""Our workloads, run inside a caller process (``benchmarks.client``).

Each takes the concurrency ``mode`` and keyword parameters from the plan and
returns figures (``benchmarks.measure.figure``).  Concurrency is written
with ``threading``: in an eventlet caller the process is monkey-patched, so
the same code runs green threads there and native threads otherwise.

Every loop is bounded by a ``Window`` (time and count); every wait for the
services has a deadline.  Counts of what was sent and what the services
received are figures too, so the suite can say whether anything was lost.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from nova_rpc_zmq import rpc

from benchmarks.measure import (MIB, OURS, CpuMeter, Window, concurrent_calls, figure,
                                latency_figures, percentile, rss_bytes)

CTX = {"user_id": "bench", "project_id": "bench"}
#: the small argument of calls and casts (about the size of a real one)
SMALL = {"instance_uuid": "3f0c8f3e-7d6f-4a51-9c7b-0d3b2a1c9e55",
         "host": "compute-017"}


def _msg(method: str, **args: Any) -> dict:
    return {"method": method, "args": args}


def _warm(topic: str, calls: int = 20) -> None:
    """Prove the reply path and fill the socket cache before timing."""
    for _ in range(calls):
        rpc.call(CTX, topic, _msg("echo", value=SMALL), timeout=30)


#: Suffix of the call workloads run through the receiver (``via_receiver``).
VIA_RECEIVER = "_via_receiver"


@contextlib.contextmanager
def _path(via_receiver: bool) -> Iterator[str]:
    """While in it, with ``via_receiver``, calls to this host's services
    go through its receiver, as calls from another host do (the driver's
    local path is set aside). Yields the suffix of the workload's name."""
    if not via_receiver:
        yield ""
        return
    from nova_rpc_zmq import impl_zmq
    driver = impl_zmq._driver
    if driver is None:
        raise RuntimeError("no impl_zmq driver yet: initialise rpc before a workload")
    saved, driver.local = driver.local, None
    try:
        yield VIA_RECEIVER
    finally:
        driver.local = saved


def call_latency(mode: str, topic: str, window: float, count: int,
                 warmup: int = 50, via_receiver: bool = False,
                 pids: dict[str, int] | None = None) -> list[dict]:
    """One caller, one call at a time: p50/p99 latency, calls/s and the
    CPU per call of the caller and of the processes in ``pids``."""
    _warm(topic, warmup)
    msg = _msg("echo", value=SMALL)
    samples: list[float] = []
    clock = time.perf_counter
    with _path(via_receiver) as suffix:
        _warm(topic, 5)
        cpu = CpuMeter(pids)
        win = Window(window, count)
        while win.take():
            t = clock()
            rpc.call(CTX, topic, msg, timeout=30)
            samples.append((clock() - t) * 1e6)
        name = "call_latency" + suffix
        return latency_figures(OURS, mode, name, samples, win.elapsed) + \
            cpu.figures(OURS, mode, name, len(samples))


def call_throughput(mode: str, topic: str, callers: int, window: float,
                    count: int, warmup: int = 20,
                    pids: dict[str, int] | None = None,
                    via_receiver: bool = False) -> list[dict]:
    """``callers`` concurrent callers (green or native threads): calls/s,
    the latency each call saw under that load, and the CPU per call of the
    caller and of the processes in ``pids`` (receiver, service)."""
    _warm(topic, warmup)
    msg = _msg("echo", value=SMALL)
    with _path(via_receiver) as suffix:
        _warm(topic, 5)
        cpu = CpuMeter(pids)
        samples, elapsed = concurrent_calls(
            callers, Window(window, count),
            lambda: rpc.call(CTX, topic, msg, timeout=30), window + 60)
        name = "call_throughput_%d%s" % (callers, suffix)
        return latency_figures(OURS, mode, name, samples, elapsed,
                               callers=callers) + \
            cpu.figures(OURS, mode, name, len(samples), callers=callers)


def _stats(topic: str, run: str) -> dict:
    return rpc.call(CTX, topic, _msg("tally_stats", run=run), timeout=60)


def _wait_tally(topics: list[str], run: str, expected: int,
                timeout: float) -> list[dict]:
    """Poll each service until it counted ``expected`` (or the deadline)."""
    deadline = time.monotonic() + timeout
    stats = [_stats(t, run) for t in topics]
    while any(s["count"] < expected for s in stats) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
        stats = [_stats(t, run) for t in topics]
    return stats


#: Casts (or fanouts) a sender keeps in flight at most: half the
#: receiver's per-topic backlog (``rpc_zmq_topic_backlog``, 10,000), which
#: otherwise overflows (``backlog_full``) whenever the service is slower
#: than the sender, as a two-host green service is. Casts have no flow
#: control of their own: a producer that must lose nothing paces itself so.
IN_FLIGHT = 5000
#: Sends between two looks at how many the services counted.
IN_FLIGHT_CHECK = 1000


def _send_loop(send: Callable[[], None], window: float, count: int,
               delivered: Callable[[], int] | None = None
               ) -> tuple[int, float, float]:
    """Send as fast as ``send`` allows within the window: (sent, t0, t1)
    on the CLOCK_MONOTONIC of the services' time stamps. With
    ``delivered`` (the fewest any service counted so far), keep at most
    ``IN_FLIGHT`` sent and not yet counted."""
    win = Window(window, count)
    sent = 0
    t0 = time.monotonic()
    while win.take():
        send()
        sent += 1
        if delivered is not None and sent % IN_FLIGHT_CHECK == 0:
            end = time.monotonic() + max(window, 1.0) * 4
            while sent - delivered() > IN_FLIGHT and time.monotonic() < end:
                time.sleep(0.01)
    return sent, t0, time.monotonic()


def cast_throughput(mode: str, topic: str, window: float, count: int,
                    drain_timeout: float = 60.0,
                    pids: dict[str, int] | None = None) -> list[dict]:
    """One sender casting to one service: casts/s counted where the service
    receives them, how many were lost, and the CPU per cast."""
    _warm(topic, 10)
    run = uuid.uuid4().hex
    msg = _msg("tally", run=run)
    cpu = CpuMeter(pids)
    sent, t0, t1 = _send_loop(lambda: rpc.cast(CTX, topic, msg), window,
                              count, lambda: _stats(topic, run)["count"])
    stats = _wait_tally([topic], run, sent, drain_timeout)[0]
    cpu_figs = cpu.figures(OURS, mode, "cast", sent)
    delivered = stats["count"]
    rate = delivered / (stats["last"] - t0) if delivered else 0.0
    return [
        figure(OURS, mode, "cast", "rate", rate, "1/s", sent=sent,
               delivered=delivered, send_rate=sent / max(t1 - t0, 1e-9)),
        figure(OURS, mode, "cast", "lost", sent - delivered, "msgs", "lower",
               sent=sent, delivered=delivered),
    ] + cpu_figs


def fanout(mode: str, topic: str, services: list[str], window: float,
           count: int, drain_timeout: float = 60.0,
           pids: dict[str, int] | None = None) -> list[dict]:
    """fanout_cast to every service of ``topic``: deliveries/s counted at
    the services, how many deliveries were lost, and the CPU per message
    sent of the caller and of ``pids``."""
    direct = ["%s_%s" % (topic, name) for name in services]
    for t in direct:
        _warm(t, 5)
    run = uuid.uuid4().hex
    msg = _msg("tally", run=run)
    cpu = CpuMeter(pids)
    sent, t0, t1 = _send_loop(
        lambda: rpc.fanout_cast(CTX, topic, msg), window, count,
        lambda: min(_stats(t, run)["count"] for t in direct))
    stats = _wait_tally(direct, run, sent, drain_timeout)
    cpu_figs = cpu.figures(OURS, mode, "fanout_%d" % len(direct), sent,
                           services=len(direct))
    delivered = sum(s["count"] for s in stats)
    last = max((s["last"] for s in stats if s["last"] is not None), default=t0)
    rate = delivered / (last - t0) if delivered else 0.0
    expected = sent * len(direct)
    name = "fanout_%d" % len(direct)
    return [
        figure(OURS, mode, name, "rate", rate, "1/s", sent=sent,
               delivered=delivered, services=len(direct)),
        figure(OURS, mode, name, "lost", expected - delivered, "msgs", "lower",
               sent=sent, expected=expected, delivered=delivered),
    ] + cpu_figs


def multicall_stream(mode: str, topic: str, values: int, window: float,
                     count: int) -> list[dict]:
    """multicall of a generator of ``values`` values: time to the first
    value and to the last, per multicall."""
    _warm(topic, 10)
    msg = _msg("stream", n=values)
    first: list[float] = []
    last: list[float] = []
    win = Window(window, count)
    clock = time.perf_counter
    while win.take():
        t = clock()
        got = 0
        for _value in rpc.multicall(CTX, topic, msg, timeout=30):
            if got == 0:
                first.append((clock() - t) * 1e6)
            got += 1
        last.append((clock() - t) * 1e6)
        if got != values:
            raise RuntimeError("multicall gave %d values, not %d"
                               % (got, values))
    name = "multicall_%d" % values
    n = len(first)
    return [
        figure(OURS, mode, name, "first_p50", percentile(first, 50), "us",
               "lower", count=n),
        figure(OURS, mode, name, "last_p50", percentile(last, 50), "us",
               "lower", count=n),
        figure(OURS, mode, name, "last_p99", percentile(last, 99), "us",
               "lower", count=n),
    ]


def payload(mode: str, topic: str, sizes: list[int], window: float,
            counts: list[int], pids: dict[str, int] | None = None
            ) -> list[dict]:
    """Calls echoing an argument of each size: latency, calls/s, MiB/s and
    the CPU per call of the caller and of ``pids``."""
    _warm(topic, 10)
    figs: list[dict] = []
    clock = time.perf_counter
    for size, count in zip(sizes, counts):
        value = "x" * size
        msg = _msg("echo", value=value)
        rpc.call(CTX, topic, msg, timeout=60)
        samples: list[float] = []
        cpu = CpuMeter(pids)
        win = Window(window, count)
        while win.take():
            t = clock()
            back = rpc.call(CTX, topic, msg, timeout=60)
            samples.append((clock() - t) * 1e6)
            if len(back) != size:
                raise RuntimeError("echo of %d bytes came back as %d"
                                   % (size, len(back)))
        name = "payload_%s" % size_label(size)
        figs += latency_figures(OURS, mode, name, samples, win.elapsed,
                                size=size)
        figs.append(figure(OURS, mode, name, "bandwidth",
                           2 * size * len(samples) / win.elapsed / MIB,
                           "MiB/s", size=size))
        figs += cpu.figures(OURS, mode, name, len(samples), size=size)
    return figs


def size_label(size: int) -> str:
    """100 -> "100B", 10240 -> "10KiB", 1048576 -> "1MiB"."""
    if size >= MIB and size % MIB == 0:
        return "%dMiB" % (size // MIB)
    if size >= 1024 and size % 1024 == 0:
        return "%dKiB" % (size // 1024)
    return "%dB" % size


def memory(mode: str, topic: str, in_flight: int, topics: int,
           receiver_pid: int, hold: float, fill_topic: str = "benchidle"
           ) -> list[dict]:
    """Receiver and caller RSS with ``topics`` topics open in the receiver
    and ``in_flight`` calls waiting for their replies.

    The service holds each call until a common moment, so every call sent
    before it is in flight at once; RSS is sampled all along (peak kept).
    """
    _warm(topic, 20)
    caller_idle = rss_bytes()
    receiver_idle = rss_bytes(receiver_pid)
    # a fanout to a new topic makes the receiver open (bind) its socket
    for i in range(topics):
        rpc.fanout_cast(CTX, "%s%d" % (fill_topic, i), _msg("tally", run="fill"))
    _warm(topic, 5)
    receiver_topics = rss_bytes(receiver_pid)
    until = time.monotonic() + hold
    msg = _msg("hold", until=until)
    state = {"started": 0, "done": 0, "failed": 0}
    first_errors: dict[str, str] = {}
    lock = threading.Lock()

    def caller() -> None:
        with lock:
            state["started"] += 1
        try:
            rpc.call(CTX, topic, msg, timeout=hold + 120)
        except Exception as exc:  # noqa: BLE001 - counted, first of each kind shown
            with lock:
                state["failed"] += 1
                first_errors.setdefault(type(exc).__name__, str(exc)[:200])
        with lock:
            state["done"] += 1

    peak = {"receiver": receiver_topics, "caller": rss_bytes(), "in_flight": 0}
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            peak["receiver"] = max(peak["receiver"], rss_bytes(receiver_pid))
            peak["caller"] = max(peak["caller"], rss_bytes())
            with lock:
                flying = state["started"] - state["done"]
            peak["in_flight"] = max(peak["in_flight"], flying)
            time.sleep(0.02)

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    threads = []
    for _ in range(in_flight):
        t = threading.Thread(target=caller, daemon=True)
        t.start()
        threads.append(t)
    sent_by = time.monotonic()
    deadline = until + 180
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    watcher.join(5)
    if state["done"] < in_flight or state["failed"]:
        raise RuntimeError("%d of %d held calls failed or never returned%s"
                           % (in_flight - state["done"] + state["failed"],
                              in_flight,
                              "".join("; %s: %s" % kv
                                      for kv in sorted(first_errors.items()))))
    extra = {"in_flight_target": in_flight, "topics": topics,
             "all_started_before_release": sent_by < until}
    return [
        figure(OURS, mode, "memory", "receiver_rss", peak["receiver"] / MIB,
               "MiB", "lower", idle=receiver_idle / MIB,
               with_topics=receiver_topics / MIB, **extra),
        figure(OURS, mode, "memory", "receiver_rss_idle", receiver_idle / MIB,
               "MiB", "lower"),
        figure(OURS, mode, "memory", "caller_rss", peak["caller"] / MIB, "MiB",
               "lower", idle=caller_idle / MIB, **extra),
        figure(OURS, mode, "memory", "caller_rss_idle", caller_idle / MIB,
               "MiB", "lower"),
        figure(OURS, mode, "memory", "in_flight", peak["in_flight"], "calls",
               "higher", **extra),
    ]


def soak(mode: str, topic: str, services: list[str], seconds: float,
         callers: int = 4, cast_rate: float = 500.0,
         fanout_rate: float = 50.0, sample_every: float = 5.0,
         drain_timeout: float = 60.0) -> list[dict]:
    """Steady mixed load for ``seconds``: ``callers`` callers calling as fast
    as they can, casts and fanouts at a fixed rate.  Figures: calls/s, what
    was lost, and this process's RSS samples (``extra["samples"]``)."""
    one = "%s_%s" % (topic, services[0])
    direct = ["%s_%s" % (topic, name) for name in services]
    for t in direct:
        _warm(t, 5)
    run = uuid.uuid4().hex
    end = time.monotonic() + seconds
    calls = [0] * callers
    failures: list[str] = []
    sent = {"cast": 0, "fanout": 0}
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def caller(i: int) -> None:
        msg = _msg("echo", value=SMALL)
        try:
            while time.monotonic() < end:
                rpc.call(CTX, one, msg, timeout=60)
                calls[i] += 1
        except Exception as exc:  # noqa: BLE001 - reported
            failures.append("%s: %s" % (type(exc).__name__, exc))

    def sender() -> None:
        # casts and fanouts paced in 10 ms ticks
        tick = 0.01
        cast_msg = _msg("tally", run=run)
        nxt = time.monotonic()
        owed = {"cast": 0.0, "fanout": 0.0}
        try:
            while time.monotonic() < end:
                owed["cast"] += cast_rate * tick
                owed["fanout"] += fanout_rate * tick
                while owed["cast"] >= 1:
                    rpc.cast(CTX, one, cast_msg)
                    sent["cast"] += 1
                    owed["cast"] -= 1
                while owed["fanout"] >= 1:
                    rpc.fanout_cast(CTX, topic, cast_msg)
                    sent["fanout"] += 1
                    owed["fanout"] -= 1
                nxt += tick
                time.sleep(max(0.0, nxt - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - reported
            failures.append("%s: %s" % (type(exc).__name__, exc))

    threads = [threading.Thread(target=caller, args=(i,), daemon=True)
               for i in range(callers)]
    threads.append(threading.Thread(target=sender, daemon=True))
    for th in threads:
        th.start()
    while time.monotonic() < end:
        samples.append((time.monotonic() - t0, rss_bytes() / MIB))
        time.sleep(min(sample_every, max(0.0, end - time.monotonic())))
    for th in threads:
        th.join(120)
    samples.append((time.monotonic() - t0, rss_bytes() / MIB))
    if failures:
        raise RuntimeError("%d soak threads failed, first: %s"
                           % (len(failures), failures[0]))
    # the one service gets every cast and one copy of every fanout
    expected = sent["cast"] + sent["fanout"]
    stats = _wait_tally(direct[:1], run, expected, drain_timeout)
    others = _wait_tally(direct[1:], run, sent["fanout"], drain_timeout)
    lost = (expected - stats[0]["count"]) + sum(
        sent["fanout"] - s["count"] for s in others)
    elapsed = time.monotonic() - t0
    return [
        figure(OURS, mode, "soak", "rate", sum(calls) / elapsed, "1/s",
               calls=sum(calls), seconds=elapsed),
        figure(OURS, mode, "soak", "lost", lost, "msgs", "lower",
               casts=sent["cast"], fanouts=sent["fanout"],
               services=len(direct)),
        figure(OURS, mode, "soak", "caller_rss", samples[-1][1], "MiB",
               "lower", samples=samples),
    ]


WORKLOADS: dict[str, Callable[..., list[dict]]] = {
    "call_latency": call_latency,
    "call_throughput": call_throughput,
    "cast": cast_throughput,
    "fanout": fanout,
    "multicall": multicall_stream,
    "payload": payload,
    "memory": memory,
    "soak": soak,
}
