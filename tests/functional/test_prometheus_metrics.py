"""``GET /metrics`` of a receiver and of a service process, read by
Prometheus's own parser (``prometheus_client``).

A real receiver (``LocalHost`` with ``rpc_zmq_health_port``) and a real
service with ``rpc_zmq_metrics_port`` (green and native): the text must be
format 0.0.4 with its Content-Type, every line must parse, HELP and TYPE
come with every family, and every metric the README names must be there.
Also: counters lose nothing under concurrent increments.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from typing import Iterator

import pytest

from nova_rpc_zmq import metrics, rpc
from nova_rpc_zmq.testing import LocalHost, free_port
from tests.support import scaled, wait_for

parser = pytest.importorskip("prometheus_client.parser")

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _scrape(port: int) -> tuple[str, str]:
    """(Content-Type, body) of GET /metrics on ``port``, once it answers."""
    def get() -> tuple[str, str] | None:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                        timeout=scaled(5)) as resp:
                return resp.headers["Content-Type"], resp.read().decode()
        except OSError:
            return None
    return wait_for(get, 20, what="GET /metrics on port %d" % port)


def _families(text: str) -> dict:
    """Every family prometheus_client reads; fails on any line it cannot."""
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
    samples = [line for line in text.splitlines()
               if line and not line.startswith("#")]
    assert sum(len(f.samples) for f in fams.values()) == len(samples)
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or not line.startswith("#")
    for name in re.findall(r"^# TYPE (\S+) ", text, re.M):
        assert "# HELP %s " % name in text
    return fams


def _readme_metrics() -> set[str]:
    """Metric names the README's operator sections name."""
    with open(README) as f:
        return set(re.findall(r"\b((?:nova_rpc_zmq|process)_[a-z0-9_]+)", f.read()))


@pytest.fixture(scope="module")
def host() -> Iterator[LocalHost]:
    h = LocalHost(extra={"rpc_zmq_health_port": free_port()})
    try:
        h.start_receiver(scaled(30))
        yield h
    finally:
        h.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("green", [False, True], ids=["native", "eventlet"])
def test_both_endpoints_parse_and_name_every_readme_metric(
        host: LocalHost, green: bool) -> None:
    port = free_port()
    host.options["rpc_zmq_metrics_port"] = port
    host.write_conf()
    name = "m%s" % ("g" if green else "n")
    host.start_service(name, eventlet=green, timeout=scaled(30))
    del host.options["rpc_zmq_metrics_port"]
    host.write_conf()
    # one call through the receiver, so that the counters move
    rpc.init(host.settings(rpc_zmq_local_calls=False))
    try:
        assert rpc.call({}, "demo_%s" % name,
                        {"method": "echo", "args": {"value": 7}},
                        timeout=scaled(20)) == 7
    finally:
        rpc.cleanup()
    ctype, receiver_text = _scrape(host.options["rpc_zmq_health_port"])
    assert ctype == metrics.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    ctype, service_text = _scrape(port)
    assert ctype == metrics.CONTENT_TYPE
    receiver = _families(receiver_text)
    service = _families(service_text)
    values = metrics.parse(receiver_text)
    assert values["nova_rpc_zmq_receiver_received_total"] >= 1
    assert values['nova_rpc_zmq_receiver_dropped_total{reason="backlog_full"}'] == 0
    assert values["nova_rpc_zmq_build_info{python=\"%s\",version=\"%s\"}" % (
        __import__("platform").python_version(), __import__("nova_rpc_zmq").__version__)] == 1
    assert receiver["nova_rpc_zmq_receiver_dropped"].type == "counter"
    assert receiver["nova_rpc_zmq_receiver_backlog_messages"].type == "gauge"
    assert metrics.parse(service_text)["nova_rpc_zmq_driver_consumer_received_total"] >= 1
    start = metrics.parse(service_text)["process_start_time_seconds"]
    assert abs(start - __import__("time").time()) < 600
    # the parser drops "_total" from counter family names: compare samples
    present = {s.name for f in list(receiver.values()) + list(service.values())
               for s in f.samples}
    # the proxy's own families are checked on a proxy
    # (tests/oslo/test_pubsub_proxy.py)
    named = {n for n in _readme_metrics()
             if not n.startswith("nova_rpc_zmq_proxy_")}
    assert named, "the README names no metric"
    assert named <= present, sorted(named - present)


def test_counters_lose_nothing_under_concurrent_increments() -> None:
    """8 threads x 100,000 increments each, of one name and of batches."""
    counters = metrics.Counters("t")
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(100000):
            counters.incr("hits")
        for _ in range(1000):
            counters.incr("batched", 3)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.get("hits") == 800000
    assert counters.get("batched") == 24000
    assert counters.snapshot() == {"hits": 800000, "batched": 24000}
