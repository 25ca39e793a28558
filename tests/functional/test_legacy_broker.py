"""The Nova-era broker (``rpc_zmq_matchmaker = broker``,
``rpc_zmq_broker_ip``, ``nova-rpc-zmq-proxy --legacy-broker``): bare
topics and fanout go through it, directed topics and replies straight to
their host. Three hosts on 127.0.0.21-23 (two serving ``demo``, one the
caller, each with its receiver) and the broker on 127.0.0.20, all from
their command lines and nova.conf files."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq import rpc
from nova_rpc_zmq.testing import LocalHost, Proc, child_env, free_port, scaled, wait_for

BROKER_IP = "127.0.0.20"
SERVERS = ["127.0.0.21", "127.0.0.22"]
CALLER = "127.0.0.23"
METRIC = "nova_rpc_zmq_proxy_%s_total"


def _free_pair(address: str) -> int:
    """A port P with P and P + 2 free on ``address`` (bounded tries)."""
    for _ in range(50):
        port = free_port(address)
        if port + 2 > 65535:
            continue
        probe = socket.socket()
        try:
            probe.bind((address, port + 2))
        except OSError:
            continue
        finally:
            probe.close()
        return port
    raise RuntimeError("no pair of free ports on %s" % address)


class BrokerCluster:
    def __init__(self, base: Path) -> None:
        self.ring = base / "ring.json"
        # the caller is in the ring too (as a service of its own): the
        # services answer only hosts they know (reply_policy.py)
        self.ring.write_text(json.dumps({"demo": SERVERS,
                                         "scheduler": [CALLER]}))
        port = free_port()
        self.start_port = _free_pair(BROKER_IP)
        shared = {"rpc_zmq_broker_ip": BROKER_IP,
                  "rpc_zmq_start_port": self.start_port}
        self.hosts = [LocalHost(host=ip, address=ip, port=port,
                                matchmaker="broker", ringfile=str(self.ring),
                                extra=shared)
                      for ip in SERVERS + [CALLER]]
        # the broker's own nova.conf: the ring decides for bare topics
        self.broker_host = LocalHost(host=BROKER_IP, address=BROKER_IP,
                                     port=port, matchmaker="ring",
                                     ringfile=str(self.ring),
                                     extra={"rpc_zmq_start_port":
                                            self.start_port},
)
        self.health = free_port(BROKER_IP)
        self.broker: Proc | None = None

    def start(self) -> "BrokerCluster":
        self.start_broker()
        for host in self.hosts:
            host.start_receiver(scaled(20))
        for host, name in zip(self.hosts, ["s1", "s2"]):
            host.start_service(name, topic="demo", timeout=scaled(30))
        rpc.init(self.hosts[2].settings())
        return self

    def start_broker(self, *extra: str) -> Proc:
        script = os.path.join(os.path.dirname(sys.executable),
                              "nova-rpc-zmq-proxy")
        argv = ([script] if os.path.exists(script)
                else [sys.executable, "-m", "nova_rpc_zmq.cli.proxy"])
        self.broker = Proc("broker", argv + [
            "--legacy-broker", "--config-file", self.broker_host.conf_path,
            "--health-port", str(self.health), *extra],
            os.path.join(self.broker_host.dir, "broker.log"), env=child_env())
        self.broker.wait_for_line("legacy broker", scaled(20))
        return self.broker

    def metrics(self) -> dict[str, float]:
        url = "http://%s:%d/metrics" % (BROKER_IP, self.health)
        with urllib.request.urlopen(url, timeout=10) as page:
            text = page.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def close(self) -> None:
        rpc.cleanup()
        if self.broker is not None:
            self.broker.stop()
        for host in self.hosts + [self.broker_host]:
            host.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[BrokerCluster]:
    c = BrokerCluster(tmp_path)
    try:
        yield c.start()
    finally:
        c.close()


def whoami() -> dict[str, Any]:
    return {"method": "whoami", "args": {}}


def test_bare_calls_go_through_the_broker_round_robin(cluster: BrokerCluster
                                                      ) -> None:
    before = cluster.metrics()[METRIC % "forwarded"]
    names = sorted(rpc.call({}, "demo", whoami(), timeout=scaled(20))["name"]
                   for _ in range(4))
    assert names == ["s1", "s1", "s2", "s2"]
    assert cluster.metrics()[METRIC % "forwarded"] == before + 4
    # a remote failure comes back as from any service
    with pytest.raises(Exception, match="bad input"):
        rpc.call({}, "demo", {"method": "fail", "args": {"message": "bad input"}},
                 timeout=scaled(20))


def test_directed_calls_skip_the_broker(cluster: BrokerCluster) -> None:
    rpc.call({}, "demo", whoami(), timeout=scaled(20))  # the path is up
    before = cluster.metrics()
    for ip, name in zip(SERVERS, ["s1", "s2"]):
        assert rpc.call({}, "demo.%s" % ip, whoami(),
                        timeout=scaled(20))["name"] == name
    after = cluster.metrics()
    assert after[METRIC % "received"] == before[METRIC % "received"]


def _fanouts(value: str) -> list[int]:
    counts = []
    for ip in SERVERS:
        stats = rpc.call({}, "demo.%s" % ip, {"method": "stats", "args": {}},
                         timeout=scaled(20))
        counts.append(stats["values"].count(value))
    return counts


def test_fanout_is_published_once_to_every_receiver(cluster: BrokerCluster
                                                     ) -> None:
    # the receivers' subscriptions reach the broker's PUB asynchronously:
    # warm up until both hosts got one
    deadline = time.monotonic() + scaled(20)
    while min(_fanouts("warm")) == 0 and time.monotonic() < deadline:
        rpc.fanout_cast({}, "demo", {"method": "announce",
                                     "args": {"value": "warm"}})
        time.sleep(0.2)
    assert min(_fanouts("warm")) >= 1
    published = cluster.metrics()[METRIC % "published"]
    for n in range(5):
        rpc.fanout_cast({}, "demo", {"method": "announce",
                                     "args": {"value": "all%d" % n}})
    wait_for(lambda: all(_fanouts("all%d" % n) == [1, 1] for n in range(5)),
             scaled(20), what="each fanout once on each host")
    assert cluster.metrics()[METRIC % "published"] == published + 5


def test_a_malformed_message_is_counted_and_the_broker_goes_on(
        cluster: BrokerCluster) -> None:
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect("tcp://%s:%d" % (BROKER_IP, cluster.start_port))
        sock.send_multipart([b"x", b"demo", b"not a style", b"{"])
        sock.send(b"one frame")
        sock.close()
    finally:
        ctx.term()
    wait_for(lambda: cluster.metrics().get(
        'nova_rpc_zmq_proxy_dropped_total{reason="bad_message"}', 0) >= 2,
        scaled(10), what="two drops counted")
    assert rpc.call({}, "demo", whoami(), timeout=scaled(20))["name"] in \
        ("s1", "s2")


def test_broker_needs_its_address_and_its_ports(tmp_path: Path) -> None:
    host = LocalHost(host=CALLER, address=CALLER, matchmaker="broker",
                     )
    try:
        proc = host.spawn("receiver", [sys.executable, "-m",
                                       "nova_rpc_zmq.cli.receiver",
                                       "--config-file", host.conf_path],
                          "receiver.log")
        assert proc.popen.wait(scaled(30)) == 2
        assert "rpc_zmq_broker_ip" in proc.output()
    finally:
        host.stop()
