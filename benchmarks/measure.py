"""Small measuring tools shared by every workload.

A workload's result is a list of *figures*: plain dicts that survive JSON
unchanged, so a caller process can hand them to the suite through a file.

    {"system": "ours", "mode": "eventlet", "workload": "call_latency",
     "metric": "p50", "unit": "us", "value": 512.3, "better": "lower",
     "extra": {...}}
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable, Sequence

#: the systems measured; "ours" is nova-rpc-zmq
OURS = "ours"
PYZMQ = "pyzmq"
RABBIT = "rabbit"
#: this project's oslo.messaging driver (``zmq://``), through
#: oslo.messaging's API
OSLO_ZMQ = "oslo-zmq"
#: oslo.messaging 8.1's own zmq driver, in its own venv
OM8ZMQ = "om8zmq"

MIB = 1024 * 1024

#: the shapes of a figure (``fig["shape"]``): caller and service on one
#: host, or on two hosts (127.0.0.1 and 127.0.0.2 on loopback, each its
#: own receiver and IPC dir): casts cross both receivers, calls cross
#: them until the service named its direct port (``impl_zmq/remote.py``)
SAME_HOST = "same-host"
TWO_HOST = "two-host"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` (nearest rank).

    Raises ValueError on an empty sequence.
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = int(round(q / 100.0 * (len(ordered) - 1)))
    return float(ordered[max(0, min(len(ordered) - 1, rank))])


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (mean of the middle two for an even count)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def figure(system: str, mode: str, workload: str, metric: str, value: float,
           unit: str, better: str = "higher", **extra: Any) -> dict:
    """One measured number, with what it is and which way is better."""
    return {"system": system, "mode": mode, "workload": workload,
            "metric": metric, "unit": unit, "value": float(value),
            "better": better, "extra": extra}


def shape(fig: dict) -> str:
    """The shape of ``fig``: SAME_HOST unless it says otherwise."""
    return str(fig.get("shape") or SAME_HOST)


def key(fig: dict) -> tuple[str, str, str, str, str]:
    """What identifies a figure across repeats: system, mode, workload,
    metric and shape."""
    return (fig["system"], fig["mode"], fig["workload"], fig["metric"],
            shape(fig))


def latency_figures(system: str, mode: str, workload: str,
                    samples_us: Sequence[float], elapsed: float,
                    **extra: Any) -> list[dict]:
    """p50, p99 (µs) and the rate of one caller from per-call durations."""
    n = len(samples_us)
    rate = n / elapsed if elapsed > 0 else 0.0
    return [
        figure(system, mode, workload, "p50", percentile(samples_us, 50), "us",
               "lower", count=n, **extra),
        figure(system, mode, workload, "p99", percentile(samples_us, 99), "us",
               "lower", count=n, **extra),
        figure(system, mode, workload, "rate", rate, "1/s", "higher",
               count=n, **extra),
    ]


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of process ``pid`` (this one by default), from
    /proc; 0 when the process is gone."""
    path = "/proc/%s/status" % (pid if pid is not None else "self")
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid`` (0 when unreadable)."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def threads_of(pid: int) -> int:
    """Threads of ``pid`` (0 when unreadable)."""
    try:
        return len(os.listdir("/proc/%d/task" % pid))
    except OSError:
        return 0


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_seconds(pid: int | str) -> float:
    """utime + stime of /proc/<pid>/stat: every thread, the exited ones
    too, in clock ticks (10 ms); 0.0 when the process is gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is the state (field 3); utime and stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / float(_TICK)


def _schedstat_seconds(pid: int) -> float | None:
    """Time on a CPU of the live threads of ``pid`` (the first field of
    /proc/<pid>/task/<tid>/schedstat, in ns); None when unreadable."""
    total = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            continue    # the thread ended meanwhile
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used so far by ``pid`` (all threads; this process by
    default); 0.0 when the process is gone.

    A short window holds few 10 ms ticks, so the finer clocks are used:
    this process's ``getrusage`` (µs, exited threads included); another
    process's per-thread scheduler time (ns; the threads of the services
    and receivers the suite measures live as long as they do), or its
    ticks when the kernel does not give it.
    """
    if pid is None:
        import resource
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    precise = _schedstat_seconds(pid)
    return _stat_seconds(pid) if precise is None else precise


class CpuMeter:
    """CPU used per operation by this process and by other processes.

    ``CpuMeter({"receiver": pid, ...})`` then ``per_op(n)`` after ``n``
    operations: {"cpu_caller": µs, "cpu_receiver": µs, ..., "cpu_total": µs}.
    Processes named ``receiver*`` (one per host a message crosses) are
    summed as ``cpu_receivers`` too, so rows of either shape have it.
    CPU time, unlike wall time, is not inflated by other programs running
    on the machine, so it shows where the cost of a message lies.
    """

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.pids = dict(pids or {})
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.start["caller"] = cpu_seconds()

    def per_op(self, ops: int) -> dict[str, float]:
        """µs of CPU per operation for each process, and their sum."""
        end = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        end["caller"] = cpu_seconds()
        # a thread that ended in the window takes its time with it: never
        # below zero
        out = {"cpu_" + name: max(0.0, end[name] - self.start[name]) * 1e6
               / max(ops, 1) for name in end}
        out["cpu_total"] = sum(out.values())
        receivers = [v for k, v in out.items() if k.startswith("cpu_receiver")]
        if receivers:
            out["cpu_receivers"] = sum(receivers)
        return out

    def figures(self, system: str, mode: str, workload: str, ops: int,
                **extra: object) -> list[dict]:
        """``per_op`` as figures (µs of CPU per operation, lower is better)."""
        return [figure(system, mode, workload, metric, value, "us", "lower",
                       ops=ops, **extra)
                for metric, value in self.per_op(ops).items()]


class Window:
    """A measuring window bounded in time and in count.

    ``take()`` is true until ``seconds`` have passed or ``count`` items were
    taken; ``elapsed`` is the time from start to the first ``take()`` that
    said no (or to now).  Safe from several threads or green threads.
    """

    def __init__(self, seconds: float, count: int) -> None:
        self.seconds = seconds
        self.count = count
        self.taken = 0
        self.start = time.perf_counter()
        self.end: float | None = None
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Claim one item; False once the window is closed."""
        with self._lock:
            if self.end is not None:
                return False
            if self.taken >= self.count or \
                    time.perf_counter() - self.start >= self.seconds:
                self._close()
                return False
            self.taken += 1
            return True

    def _close(self) -> None:
        if self.end is None:
            self.end = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return (self.end or time.perf_counter()) - self.start


def concurrent_calls(callers: int, window: "Window", call: Any,
                     join_timeout: float) -> tuple[list[float], float]:
    """Run ``call()`` from ``callers`` threads (green ones in a patched
    process) while ``window`` allows; returns every call's latency in µs
    and the elapsed seconds. Raises RuntimeError naming the first failure."""
    per: list[list[float]] = [[] for _ in range(callers)]
    failures: list[str] = []
    clock = time.perf_counter

    def caller(samples: list[float]) -> None:
        try:
            while window.take():
                t = clock()
                call()
                samples.append((clock() - t) * 1e6)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append("%s: %s" % (type(exc).__name__, exc))

    threads = [threading.Thread(target=caller, args=(s,), daemon=True)
               for s in per]
    start = clock()
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    elapsed = clock() - start
    if failures:
        raise RuntimeError("%d callers failed, first: %s"
                           % (len(failures), failures[0]))
    return [s for lst in per for s in lst], elapsed
