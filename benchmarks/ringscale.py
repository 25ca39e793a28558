"""Scale of the ring: routing cost per message for a small and a large ring.

``RingMatchMaker.queues()`` on a temporary ring file of N hosts (name
resolution off, as the question is the routing tables, not DNS).  The ring
holds ``compute`` and ``network`` on every host and ``scheduler`` and
``conductor`` on three, like a real deployment.  Timed per call:

* ``bare``: ``queues("compute")`` - round robin over N hosts, one pair;
* ``directed``: ``queues("compute.<host>")`` - straight to one host;
* ``fanout_per_host``: ``queues("fanout~compute")`` divided by N - the
  cost of each delivery of a fanout (the call itself returns N pairs).

Runs in the suite's own process: no sockets are involved.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from benchmarks.measure import OURS, figure, median

MODE = "-"


def write_ring(path: str, hosts: int) -> list[str]:
    """A ring file of ``hosts`` hosts at ``path``; returns the host names."""
    names = ["node%05d" % i for i in range(hosts)]
    ring = {"compute": names, "network": names,
            "scheduler": names[:3], "conductor": names[:3]}
    with open(path, "w") as f:
        json.dump(ring, f, indent=1)
    return names


def _per_call_ns(fn: object, arg: str, calls: int, batches: int) -> float:
    """Median over ``batches`` of the mean ns per call of ``fn(arg)``."""
    call = fn  # local name: the loop below is the thing being timed
    results = []
    for _ in range(batches):
        t = time.perf_counter_ns()
        for _ in range(calls):
            call(arg)  # type: ignore[operator]
        results.append((time.perf_counter_ns() - t) / calls)
    return median(results)


def ring_scale(sizes: list[int], calls: int, batches: int = 5) -> list[dict]:
    """Figures ``ring_<N>`` (bare, directed, fanout_per_host ns) per size."""
    from nova_rpc_zmq.matchmaker.ring import RingMatchMaker
    figs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-ring-") as tmp:
        for size in sizes:
            path = os.path.join(tmp, "ring-%d.json" % size)
            names = write_ring(path, size)
            mm = RingMatchMaker(path, resolve=False)
            queues = mm.queues
            for _ in range(1000):       # warm caches and cursors
                queues("compute")
            directed = "compute." + names[len(names) // 2]
            bare_ns = _per_call_ns(queues, "compute", calls, batches)
            directed_ns = _per_call_ns(queues, directed, calls, batches)
            fan_calls = max(1, calls // size)
            fan_ns = _per_call_ns(queues, "fanout~compute", fan_calls,
                                  batches) / size
            pairs = len(queues("fanout~compute"))
            if pairs != size:
                raise RuntimeError("fanout of a %d-host ring gave %d pairs"
                                   % (size, pairs))
            name = "ring_%d" % size
            figs += [
                figure(OURS, MODE, name, "bare", bare_ns, "ns", "lower",
                       hosts=size, calls=calls),
                figure(OURS, MODE, name, "directed", directed_ns, "ns",
                       "lower", hosts=size, calls=calls),
                figure(OURS, MODE, name, "fanout_per_host", fan_ns, "ns",
                       "lower", hosts=size, calls=fan_calls),
            ]
    return figs
