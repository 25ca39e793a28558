"""``nova-rpc-zmq bench --soak``: steady load, memory sampled, growth judged.

The soak runs on the bench's headline shape, two hosts (``shape`` "two-host",
``benchmarks.hosts.HostsBench``): the callers on host A (127.0.0.1, its own
receiver), the three bench services of each mode on hosts B, C and D
(127.0.0.2-4, a receiver each), so calls take the direct path between our
nodes and fanouts cross every receiver.  ``shape`` "same-host" runs it all on
one bench host instead.  One caller process per mode runs the ``soak``
workload for ``seconds``: callers calling as fast as they can, casts and
fanouts at a fixed rate.  This process samples the RSS and open file
descriptors of every receiver and every service; the callers sample their
own RSS.

Growth of a process: the samples of the first fifth are warm-up and left
out; the median of the first third of the rest is compared with the median
of the last third.  "No growth" means at most ``max(GROWTH_MIB, GROWTH_PCT
of the start)`` more RSS and at most ``FD_SLACK`` more descriptors, and
nothing lost.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any, Callable

from benchmarks.hosts import BenchHost, ChildFailed, HostsBench, run_python
from benchmarks.measure import MIB, OURS, median, open_fds, rss_bytes
from benchmarks.suite import MODES, SERVICES

TWO_HOST = "two-host"
SAME_HOST = "same-host"
SHAPES = (TWO_HOST, SAME_HOST)

GROWTH_MIB = 2.0
GROWTH_PCT = 0.05
FD_SLACK = 2


def growth(samples: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(start, end, end - start) of a series of (time, value) samples, by
    the rule of the module docstring; zeros when there are too few."""
    values = [v for _, v in samples]
    rest = values[len(values) // 5:]
    if len(rest) < 3:
        return 0.0, 0.0, 0.0
    third = max(1, len(rest) // 3)
    start = median(rest[:third])
    end = median(rest[-third:])
    return start, end, end - start


def _verdict(name: str, mode: str, samples: list[tuple[float, float]],
             fds: list[tuple[float, float]] | None = None) -> dict:
    start, end, grown = growth(samples)
    allowed = max(GROWTH_MIB, GROWTH_PCT * start)
    ok = grown <= allowed
    detail = "%.1f -> %.1f MiB (+%.1f, allowed +%.1f), %d samples" % (
        start, end, grown, allowed, len(samples))
    if fds:
        f0, f1, fgrown = growth(fds)
        ok = ok and fgrown <= FD_SLACK
        detail += "; fds %.0f -> %.0f" % (f0, f1)
    return {"target": "no growth in soak: %s" % name, "mode": mode,
            "value": end, "unit": "MiB",
            "threshold": "+<= max(%.0f MiB, %.0f%%)" % (GROWTH_MIB,
                                                        GROWTH_PCT * 100),
            "ratio": end / start if start else None,
            "status": "MET" if ok else "NOT MET", "detail": detail}


def run_soak(seconds: float, modes: tuple[str, ...] = MODES,
             sample_every: float = 5.0,
             log: Callable[[str], None] = print,
             shape: str = TWO_HOST) -> dict:
    """Run the soak; returns a result document for ``benchmarks.report``
    (``soak`` holds the samples, ``targets`` the verdicts)."""
    if shape not in SHAPES:
        raise ValueError("soak shape %r: use one of %s" % (shape, SHAPES))
    base = tempfile.mkdtemp(prefix="nrz-soak-")
    hosts: HostsBench | None = None
    host: BenchHost | None = None
    samples: dict[str, list[tuple[float, float]]] = {}
    fds: dict[str, list[tuple[float, float]]] = {}
    results: dict[str, Any] = {}
    errors: list[dict] = []
    started = time.time()
    t0 = time.monotonic()
    watched: dict[str, Any] = {}
    try:
        if shape == TWO_HOST:
            hosts = HostsBench(base, {SERVICES[m][0]: SERVICES[m][1]
                                      for m in modes})
            hosts.start({SERVICES[m][0]: m == "eventlet" for m in modes})
            conf_path = hosts.callers.conf_path
            for letter, bh in zip("ABCDEFGH", hosts.hosts):
                watched["receiver %s" % letter] = bh.receiver
                watched.update({"service %s" % n: p
                                for n, p in bh.services.items()})
        else:
            host = BenchHost(base_dir=base)
            host.start_receiver()
            for mode in modes:
                topic, names = SERVICES[mode]
                host.start_bench_services(topic, names,
                                          eventlet=(mode == "eventlet"))
            conf_path = host.conf_path
            watched["receiver"] = host.receiver
            watched.update({"service %s" % n: p
                            for n, p in host.services.items()})
        last = [0.0]
        lock = threading.Lock()

        def tick() -> None:
            with lock:
                now = time.monotonic()
                if now - last[0] < sample_every:
                    return
                last[0] = now
                for name, proc in watched.items():
                    if proc is None:
                        continue
                    samples.setdefault(name, []).append(
                        (now - t0, rss_bytes(proc.pid) / MIB))
                    fds.setdefault(name, []).append((now - t0,
                                                     open_fds(proc.pid)))

        def soak_caller(mode: str) -> None:
            topic, names = SERVICES[mode]
            plan = {"mode": mode, "config_file": conf_path, "shape": shape,
                    "workloads": [dict(name="soak", topic=topic,
                                       services=names, seconds=seconds,
                                       sample_every=sample_every,
                                       limit=seconds + 180)]}
            try:
                results[mode] = run_python("benchmarks.client", plan, base,
                                           "soak-%s" % mode, seconds + 300,
                                           tick=tick)
            except ChildFailed as exc:
                errors.append({"workload": "soak", "mode": mode,
                               "error": str(exc)[:4000]})

        log("soak (%s): %d s with %s callers, casts and fanouts ..."
            % (shape, seconds, " and ".join(modes)))
        threads = [threading.Thread(target=soak_caller, args=(m,), daemon=True)
                   for m in modes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 400)
    finally:
        if hosts is not None:
            hosts.stop()
        if host is not None:
            host.stop()
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    figures: list[dict] = []
    targets: list[dict] = []
    for mode, result in results.items():
        figures += result.get("figures", [])
        errors += result.get("errors", [])
    for name, series in samples.items():
        targets.append(_verdict(name, "-", series, fds.get(name)))
    for fig in figures:
        if fig["metric"] == "caller_rss":
            targets.append(_verdict("caller", fig["mode"],
                                    [tuple(s) for s in fig["extra"]["samples"]]))
        if fig["metric"] == "lost":
            targets.append({"target": "nothing lost in soak", "mode": fig["mode"],
                            "value": fig["value"], "unit": "msgs",
                            "threshold": "== 0", "ratio": None,
                            "status": "MET" if fig["value"] == 0 else "NOT MET",
                            "detail": "%d casts, %d fanouts sent" % (
                                fig["extra"]["casts"], fig["extra"]["fanouts"])})
    for mode in modes:
        if mode not in results:
            targets.append({"target": "soak ran", "mode": mode, "value": None,
                            "unit": "", "threshold": "", "ratio": None,
                            "status": "MISSING", "detail": "missing"})
    medians = []
    for fig in figures:
        agg = dict(fig, values=[fig["value"]], min=fig["value"],
                   max=fig["value"], ratio=None, ratio_green=None)
        agg["extra"] = {k: v for k, v in fig["extra"].items() if k != "samples"}
        medians.append(agg)
    return {"suite": "nova-rpc-zmq bench --soak",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                     time.localtime(started)),
            "duration_s": round(time.monotonic() - t0, 1),
            "soak_seconds": seconds, "soak_shape": shape, "repeat": 1,
            "modes": list(modes),
            "peers": {}, "runs": [{"repeat": 1, "figures": figures,
                                   "errors": errors}],
            "soak": {"samples": samples, "fds": fds,
                     "callers": {f["mode"]: f["extra"]["samples"]
                                 for f in figures
                                 if f["metric"] == "caller_rss"}},
            "medians": medians, "targets": targets, "errors": errors,
            "pid": os.getpid(), "system": OURS}
