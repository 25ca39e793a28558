"""The benchmark suite of nova-rpc-zmq (``nova-rpc-zmq bench``).

Everything runs on loopback with real processes, as in production: a
receiver, bench services (``benchmarks.service``) and caller processes
(``benchmarks.client``) for our transport; echo and sink peers for the raw
pyzmq baselines (``benchmarks.rawzmq``); optionally a private RabbitMQ with
oslo.messaging (``benchmarks.rabbit``).  ``benchmarks.suite`` runs them,
``benchmarks.targets`` judges the figures, ``benchmarks.report`` prints the
table and writes the JSON and the PNG chart; ``benchmarks.soak`` is the
long-running growth check.

Modules:
    measure    percentiles, records of figures, RSS of processes
    service    the bench service process (counts, echoes, streams, holds)
    hosts      BenchHost: a receiver plus bench services; client processes
    client     the caller process: runs a plan of workloads, writes JSON
    workloads  our workloads, run inside a caller process
    rawzmq     raw pyzmq baselines (peer process and client side)
    rabbit     oslo.messaging over a private RabbitMQ (optional peer)
    ringscale  routing cost of RingMatchMaker for small and large rings
    suite      the whole run: repeats, medians, ratios
    targets    the goals of the issue, each MET / NOT MET
    report     table, JSON, PNG
    soak       ``--soak``: steady load, sampled memory, growth verdict
"""
